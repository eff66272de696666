/**
 * Environment parsing shared by every service: each variable is read once at boot and
 * validated; a bad value throws a ConfigError that names the variable, and the process exits
 * with that message instead of starting half-configured.
 */

import { loadLimitSettings, type LimitSettings } from "./security/limits.js";
import { loadServerTls, type ServerTls } from "./security/tls.js";

export type Env = Readonly<Record<string, string | undefined>>;

/** Which browser origins may call a service (CORS): none (the default), a list, or any. */
export type CorsOrigins = readonly string[] | "*";

/** A missing or malformed environment variable; its message names the variable. */
export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    problem: string,
  ) {
    super(`${variable}: ${problem}`);
    this.name = "ConfigError";
  }
}

/** A non-empty string, or the default when unset or empty. */
export function envString(env: Env, name: string, fallback: string): string {
  const raw = env[name];
  return raw === undefined || raw === "" ? fallback : raw;
}

/** An integer within [min, max], or the default when unset or empty. */
export function envInt(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!/^-?\d+$/.test(raw.trim())) throw new ConfigError(name, `must be an integer, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) {
    throw new ConfigError(name, `must be between ${min} and ${max}, got ${value}`);
  }
  return value;
}

/** A TCP port (1..65535), or 0 for "any free port" when allowZero. */
export function envPort(env: Env, name: string, fallback: number): number {
  return envInt(env, name, fallback, 0, 65535);
}

const durationUnits: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * A duration such as "500ms", "2s", "1m" or a bare number of milliseconds, returned in
 * milliseconds and required to lie within [minMs, maxMs].
 */
export function envDurationMs(env: Env, name: string, fallbackMs: number, minMs: number, maxMs: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallbackMs;
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(raw.trim());
  if (!match) throw new ConfigError(name, `must be a duration like 500ms, 2s or 1m, got "${raw}"`);
  const ms = Number(match[1]) * durationUnits[match[2] ?? "ms"];
  if (ms < minMs || ms > maxMs) {
    throw new ConfigError(name, `must be between ${minMs}ms and ${maxMs}ms, got ${ms}ms`);
  }
  return ms;
}

/** One of a fixed set of values, or the default when unset or empty. */
export function envEnum<T extends string>(env: Env, name: string, fallback: T, allowed: readonly T[]): T {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new ConfigError(name, `must be one of ${allowed.join(", ")}, got "${raw}"`);
  }
  return raw as T;
}

/**
 * Browser origins allowed to call a service cross-origin (CORS): "*", or a comma-separated
 * list of origins such as "http://127.0.0.1:50050"; empty or unset: none.
 */
export function envOrigins(env: Env, name: string): CorsOrigins {
  const raw = (env[name] ?? "").trim();
  if (raw === "*") return "*";
  const origins = raw.split(",").map((o) => o.trim()).filter((o) => o !== "");
  for (const origin of origins) {
    let parsed: URL | undefined;
    try {
      parsed = new URL(origin);
    } catch {
      parsed = undefined;
    }
    if (parsed === undefined || parsed.origin !== origin) {
      throw new ConfigError(name, `"${origin}" is not an origin like http://127.0.0.1:50050 (scheme, host and port only)`);
    }
  }
  return Object.freeze(origins);
}

export const logLevels = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;
export type LogLevel = (typeof logLevels)[number];

/** Settings every server shares. */
export interface ServerConfig {
  /** Interface to bind; loopback unless HOST says otherwise. */
  readonly host: string;
  /** TCP port for native gRPC, gRPC-web and Connect (0: any free port). */
  readonly port: number;
  readonly logLevel: LogLevel;
  /** How long in-flight calls may run after SIGTERM before connections are cut. */
  readonly shutdownGraceMs: number;
  /** Largest request message, in bytes (RESOURCE_EXHAUSTED above it). */
  readonly maxMessageBytes: number;
  /**
   * What serves native gRPC over HTTP/2: grpc-js (default, measured faster) or connect-node
   * (the alternative, kept to measure the choice: docs/benchmarks.md).
   */
  readonly grpcStack: GrpcStack;
  /** Web page origins allowed to call the service from a browser (CORS). */
  readonly corsOrigins: CorsOrigins;
  /** TLS for the whole port (security/tls.ts); undefined: plaintext. */
  readonly tls: ServerTls | undefined;
  /** Per-client limits on expensive calls (security/limits.ts). */
  readonly limits: LimitSettings;
  /** HTTP/1.1: how long a client may take to send a request's headers, and the whole request. */
  readonly httpHeadersTimeoutMs: number;
  readonly httpRequestTimeoutMs: number;
}

export const grpcStacks = ["grpc-js", "connect-node"] as const;
export type GrpcStack = (typeof grpcStacks)[number];

/**
 * The default port of each service, and the variable that overrides it (console: the web
 * console's page; echo: diagnostics).
 */
export const servicePorts = {
  registry: { variable: "REGISTRY_PORT", port: 50051 },
  predictor: { variable: "PREDICTOR_PORT", port: 50052 },
  batch: { variable: "BATCH_PORT", port: 50053 },
  proxy: { variable: "PROXY_PORT", port: 50054 },
  console: { variable: "CONSOLE_PORT", port: 50050 },
  "batch-worker": { variable: "BATCH_WORKER_PORT", port: 0 },
  echo: { variable: "ECHO_PORT", port: 50059 },
} as const;

export type ServiceName = keyof typeof servicePorts;

/** Reads the shared server settings for one service. */
export function loadServerConfig(env: Env, service: ServiceName): ServerConfig {
  const { variable, port } = servicePorts[service];
  return Object.freeze({
    host: envString(env, "HOST", "127.0.0.1"),
    port: envPort(env, variable, port),
    logLevel: envEnum(env, "LOG_LEVEL", "info", logLevels),
    shutdownGraceMs: envDurationMs(env, "SHUTDOWN_GRACE", 4000, 0, 600_000),
    maxMessageBytes: envInt(env, "MAX_MESSAGE_BYTES", 4 * 1024 * 1024, 1024, 256 * 1024 * 1024),
    grpcStack: envEnum(env, "GRPC_STACK", "grpc-js", grpcStacks),
    corsOrigins: envOrigins(env, "CORS_ORIGINS"),
    tls: loadServerTls(env),
    limits: loadLimitSettings(env),
    httpHeadersTimeoutMs: envDurationMs(env, "HTTP_HEADERS_TIMEOUT", 10_000, 100, 600_000),
    httpRequestTimeoutMs: envDurationMs(env, "HTTP_REQUEST_TIMEOUT", 60_000, 100, 3_600_000),
  });
}

/**
 * SQLITE_BUSY_TIMEOUT: how long a SQLite write waits for another connection's write lock
 * (another process or the batch job's thread) before the call fails with UNAVAILABLE.
 */
export function envSqliteBusyTimeoutMs(env: Env): number {
  return envDurationMs(env, "SQLITE_BUSY_TIMEOUT", 5000, 0, 600_000);
}
