import { readFileSync } from "node:fs";
import type { ClientTlsFiles, PemFile, ServerTlsFiles } from "../env/settings.js";
import { ConfigError } from "../env/variables.js";

/*
 * TLS material, read from the files env/settings.ts names. Servers: TLS_CERT_FILE and TLS_KEY_FILE (PEM) turn TLS on for the
 * whole port (native gRPC over h2, gRPC-web and Connect over h2 or HTTP/1.1, chosen by ALPN);
 * TLS_CLIENT_CA_FILE also requires every client to present a certificate that CA signed (mTLS).
 * Mesh clients (Proxy → Predictor, batch → Predictor, Predictor → registry, the CLI, the
 * console's server): TLS_CA_FILE is the CA they verify servers against (set: they dial TLS),
 * TLS_CLIENT_CERT_FILE and TLS_CLIENT_KEY_FILE the certificate they present when asked.
 */

/** What a TLS server presents, and whom it accepts. */
export interface ServerTls {
  readonly cert: Buffer;
  readonly key: Buffer;
  /** Set: clients must present a certificate signed by this CA (mutual TLS). */
  readonly clientCa?: Buffer;
}

/** What a mesh client trusts, and the certificate it presents when the server asks. */
export interface ClientTls {
  readonly ca: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
}

/** Reads the server's certificate, key and client CA (settings from env/settings.ts); undefined: plaintext. */
export function loadServerTls(files: ServerTlsFiles | undefined): ServerTls | undefined {
  if (files === undefined) return undefined;
  return Object.freeze({ cert: readPem(files.cert), key: readPem(files.key), clientCa: files.clientCa && readPem(files.clientCa) });
}

/** Reads what a mesh client trusts and presents; undefined: plaintext. */
export function loadClientTls(files: ClientTlsFiles | undefined): ClientTls | undefined {
  if (files === undefined) return undefined;
  return Object.freeze({ ca: readPem(files.ca), cert: files.cert && readPem(files.cert), key: files.key && readPem(files.key) });
}

function readPem(file: PemFile): Buffer {
  try {
    const pem = readFileSync(file.path);
    if (!pem.includes("-----BEGIN ")) throw new Error("not a PEM file");
    return pem;
  } catch (err) {
    throw new ConfigError(file.variable, `cannot read ${file.path}: ${(err as Error).message}`);
  }
}
