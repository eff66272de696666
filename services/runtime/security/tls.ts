import { readFileSync } from "node:fs";
import { ConfigError, type Env } from "../config.js";

/*
 * TLS from the environment. Servers: TLS_CERT_FILE and TLS_KEY_FILE (PEM) turn TLS on for the
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

/** The server's TLS settings; undefined for plaintext (the default). */
export function loadServerTls(env: Env): ServerTls | undefined {
  const cert = readPem(env, "TLS_CERT_FILE");
  const key = readPem(env, "TLS_KEY_FILE");
  const clientCa = readPem(env, "TLS_CLIENT_CA_FILE");
  if ((cert === undefined) !== (key === undefined)) {
    throw new ConfigError(cert === undefined ? "TLS_CERT_FILE" : "TLS_KEY_FILE", "TLS needs both TLS_CERT_FILE and TLS_KEY_FILE");
  }
  if (cert === undefined || key === undefined) {
    if (clientCa !== undefined) throw new ConfigError("TLS_CLIENT_CA_FILE", "client certificates need TLS: set TLS_CERT_FILE and TLS_KEY_FILE");
    return undefined;
  }
  return Object.freeze({ cert, key, clientCa });
}

/** The mesh clients' TLS settings; undefined for plaintext (the default). */
export function loadClientTls(env: Env): ClientTls | undefined {
  const ca = readPem(env, "TLS_CA_FILE");
  const cert = readPem(env, "TLS_CLIENT_CERT_FILE");
  const key = readPem(env, "TLS_CLIENT_KEY_FILE");
  if ((cert === undefined) !== (key === undefined)) {
    throw new ConfigError(cert === undefined ? "TLS_CLIENT_CERT_FILE" : "TLS_CLIENT_KEY_FILE", "a client certificate needs both TLS_CLIENT_CERT_FILE and TLS_CLIENT_KEY_FILE");
  }
  if (ca === undefined) {
    if (cert !== undefined) throw new ConfigError("TLS_CA_FILE", "a client certificate is only sent over TLS: set TLS_CA_FILE");
    return undefined;
  }
  return Object.freeze({ ca, cert, key });
}

function readPem(env: Env, name: string): Buffer | undefined {
  const path = env[name];
  if (path === undefined || path === "") return undefined;
  try {
    const pem = readFileSync(path);
    if (!pem.includes("-----BEGIN ")) throw new Error("not a PEM file");
    return pem;
  } catch (err) {
    throw new ConfigError(name, `cannot read ${path}: ${(err as Error).message}`);
  }
}
