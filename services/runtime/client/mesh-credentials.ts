import { readFileSync } from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import type { MeshClientSettings } from "../env/settings.js";
import { ConfigError } from "../env/variables.js";
import { loadClientTls, type ClientTls } from "../security/tls.js";

/**
 * What a service presents when it calls another mesh service: TLS settings (tls.ts) and its
 * own bearer token, read from MESH_TOKEN_FILE (a file holding the token: never an environment
 * variable's value, which `ps` and crash dumps show). Unset: plaintext, no credential.
 */
export interface MeshCredentials {
  readonly tls?: ClientTls;
  /** The value of the authorization header: "Bearer <token>". */
  readonly authorization?: string;
}

/** Reads the mesh token and TLS files the settings name (env/settings.ts loadMeshClientSettings). */
export function loadMeshCredentials(settings: MeshClientSettings): MeshCredentials {
  const { tokenFile } = settings;
  let authorization: string | undefined;
  if (tokenFile !== "") {
    let token: string;
    try {
      token = readFileSync(tokenFile, "utf8").trim();
    } catch (err) {
      throw new ConfigError("MESH_TOKEN_FILE", `cannot read ${tokenFile}: ${(err as Error).message}`);
    }
    if (!/^\S+$/.test(token)) throw new ConfigError("MESH_TOKEN_FILE", `${tokenFile} must hold one token`);
    authorization = `Bearer ${token}`;
  }
  return Object.freeze({ tls: loadClientTls(settings.tls), authorization });
}

/** The URL scheme mesh clients dial with these credentials. */
export function meshScheme(credentials: MeshCredentials | undefined): "http" | "https" {
  return credentials?.tls ? "https" : "http";
}

/**
 * GET of a mesh service's plain HTTP path (its /metrics) with these credentials: TLS verified
 * against their CA, their token sent. Resolves to the body of a 200 answer, else undefined.
 */
export function meshHttpGet(url: string, credentials: MeshCredentials, timeoutMs: number): Promise<string | undefined> {
  const target = new URL(url);
  const secure = target.protocol === "https:";
  const get = secure ? https.get : http.get;
  return new Promise((resolve) => {
    const request = get(
      target,
      {
        timeout: timeoutMs,
        headers: credentials.authorization === undefined ? {} : { authorization: credentials.authorization },
        ...(secure && credentials.tls ? { ca: credentials.tls.ca, cert: credentials.tls.cert, key: credentials.tls.key } : {}),
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () => resolve(response.statusCode === 200 ? Buffer.concat(chunks).toString("utf8") : undefined));
        response.on("error", () => resolve(undefined));
      },
    );
    request.on("timeout", () => request.destroy());
    request.on("error", () => resolve(undefined));
  });
}
