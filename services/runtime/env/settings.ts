/**
 * The settings every service shares, parsed from the environment in one place and handed to
 * the loaders that act on them (security/tls.ts reads the PEM files, security/credentials.ts
 * the token file, client/mesh-credentials.ts the mesh token, observability/tracing.ts starts
 * the exporter). Services parse their own variables in their config.ts with the same parsers
 * (variables.ts). README.md's configuration table lists every variable.
 */

import { envDurationMs, envEnum, envInt, envOrigins, envPort, envString, ConfigError, type CorsOrigins, type Env } from "./variables.js";
import { servicePorts, type ServiceName } from "./service-ports.js";

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
   * What serves native gRPC over HTTP/2: node-http2 (default: serve/grpc-h2.ts, the fastest
   * measured and the only one passing every conformance case), grpc-js, or connect-node
   * (kept to measure the choice: docs/benchmarks.md).
   */
  readonly grpcStack: GrpcStack;
  /** Web page origins allowed to call the service from a browser (CORS). */
  readonly corsOrigins: CorsOrigins;
  /** TLS for the whole port (loaded by security/tls.ts); undefined: plaintext. */
  readonly tls: ServerTlsFiles | undefined;
  /** Per-client limits on expensive calls (security/limits.ts). */
  readonly limits: LimitSettings;
  /** HTTP/1.1: how long a client may take to send a request's headers, and the whole request. */
  readonly httpHeadersTimeoutMs: number;
  readonly httpRequestTimeoutMs: number;
}

export const grpcStacks = ["grpc-js", "node-http2", "connect-node"] as const;
export type GrpcStack = (typeof grpcStacks)[number];

/** Reads the shared server settings for one service. */
export function loadServerConfig(env: Env, service: ServiceName): ServerConfig {
  const { variable, port } = servicePorts[service];
  return Object.freeze({
    host: envString(env, "HOST", "127.0.0.1"),
    port: envPort(env, variable, port),
    logLevel: envEnum(env, "LOG_LEVEL", "info", logLevels),
    shutdownGraceMs: envDurationMs(env, "SHUTDOWN_GRACE", 4000, 0, 600_000),
    maxMessageBytes: envInt(env, "MAX_MESSAGE_BYTES", 4 * 1024 * 1024, 1024, 256 * 1024 * 1024),
    grpcStack: envEnum(env, "GRPC_STACK", "node-http2", grpcStacks),
    corsOrigins: envOrigins(env, "CORS_ORIGINS"),
    tls: loadServerTlsFiles(env),
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

/** Per-client limits on expensive calls (enforced by security/limits.ts). */
export interface LimitSettings {
  readonly concurrency: number;
  readonly ratePerSecond: number;
  readonly burst: number;
  readonly largeRequestBytes: number;
}

function loadLimitSettings(env: Env): LimitSettings {
  const ratePerSecond = envInt(env, "LIMIT_RATE", 50, 1, 1_000_000);
  return Object.freeze({
    concurrency: envInt(env, "LIMIT_CONCURRENCY", 16, 1, 100_000),
    ratePerSecond,
    burst: envInt(env, "LIMIT_BURST", 2 * ratePerSecond, 1, 10_000_000),
    largeRequestBytes: envInt(env, "LIMIT_LARGE_REQUEST_BYTES", 262_144, 1, 1 << 30),
  });
}

/** A PEM file named by a variable (the name goes with it, for error messages). */
export interface PemFile {
  readonly variable: string;
  readonly path: string;
}

/**
 * TLS_CERT_FILE and TLS_KEY_FILE (PEM) turn TLS on for the whole port; TLS_CLIENT_CA_FILE also
 * requires every client to present a certificate that CA signed (mTLS).
 */
export interface ServerTlsFiles {
  readonly cert: PemFile;
  readonly key: PemFile;
  readonly clientCa?: PemFile;
}

/**
 * What mesh clients trust (TLS_CA_FILE: set, they dial TLS) and the certificate they present
 * when asked (TLS_CLIENT_CERT_FILE, TLS_CLIENT_KEY_FILE).
 */
export interface ClientTlsFiles {
  readonly ca: PemFile;
  readonly cert?: PemFile;
  readonly key?: PemFile;
}

function pemFile(env: Env, variable: string): PemFile | undefined {
  const path = envString(env, variable, "");
  return path === "" ? undefined : { variable, path };
}

function loadServerTlsFiles(env: Env): ServerTlsFiles | undefined {
  const cert = pemFile(env, "TLS_CERT_FILE");
  const key = pemFile(env, "TLS_KEY_FILE");
  const clientCa = pemFile(env, "TLS_CLIENT_CA_FILE");
  if ((cert === undefined) !== (key === undefined)) {
    throw new ConfigError(cert === undefined ? "TLS_CERT_FILE" : "TLS_KEY_FILE", "TLS needs both TLS_CERT_FILE and TLS_KEY_FILE");
  }
  if (cert === undefined || key === undefined) {
    if (clientCa !== undefined) throw new ConfigError("TLS_CLIENT_CA_FILE", "client certificates need TLS: set TLS_CERT_FILE and TLS_KEY_FILE");
    return undefined;
  }
  return Object.freeze({ cert, key, clientCa });
}

function loadClientTlsFiles(env: Env): ClientTlsFiles | undefined {
  const ca = pemFile(env, "TLS_CA_FILE");
  const cert = pemFile(env, "TLS_CLIENT_CERT_FILE");
  const key = pemFile(env, "TLS_CLIENT_KEY_FILE");
  if ((cert === undefined) !== (key === undefined)) {
    throw new ConfigError(cert === undefined ? "TLS_CLIENT_CERT_FILE" : "TLS_CLIENT_KEY_FILE", "a client certificate needs both TLS_CLIENT_CERT_FILE and TLS_CLIENT_KEY_FILE");
  }
  if (ca === undefined) {
    if (cert !== undefined) throw new ConfigError("TLS_CA_FILE", "a client certificate is only sent over TLS: set TLS_CA_FILE");
    return undefined;
  }
  return Object.freeze({ ca, cert, key });
}

/** How this process calls other mesh services: TLS, and its own token (MESH_TOKEN_FILE). */
export interface MeshClientSettings {
  readonly tls: ClientTlsFiles | undefined;
  /** A file holding the bearer token ("" for none): never the token itself, which `ps` shows. */
  readonly tokenFile: string;
}

export function loadMeshClientSettings(env: Env): MeshClientSettings {
  return Object.freeze({ tls: loadClientTlsFiles(env), tokenFile: envString(env, "MESH_TOKEN_FILE", "") });
}

/** Who may call: static tokens (AUTH_TOKENS_FILE) and/or JWTs (AUTH_JWKS); neither: authentication off. */
export interface AuthSettings {
  readonly tokensFile: string;
  /** A JWK set: a file, or an http(s) URL. */
  readonly jwks: string;
  readonly jwtIssuer: string | undefined;
  readonly jwtAudience: string | undefined;
  readonly jwtRoleClaim: string;
}

function loadAuthSettings(env: Env): AuthSettings {
  return Object.freeze({
    tokensFile: envString(env, "AUTH_TOKENS_FILE", ""),
    jwks: envString(env, "AUTH_JWKS", ""),
    jwtIssuer: envString(env, "AUTH_JWT_ISSUER", "") || undefined,
    jwtAudience: envString(env, "AUTH_JWT_AUDIENCE", "") || undefined,
    jwtRoleClaim: envString(env, "AUTH_JWT_ROLE_CLAIM", "roles"),
  });
}

/** Where spans go: OTEL_EXPORTER_OTLP_ENDPOINT (unset: ids only, nothing exported). */
export interface TracingSettings {
  readonly otlpEndpoint: string | undefined;
  /** OTEL_BSP_SCHEDULE_DELAY: how long spans wait to be exported in a batch. */
  readonly scheduleDelayMs: number;
}

export function loadTracingSettings(env: Env): TracingSettings {
  return Object.freeze({
    otlpEndpoint: envString(env, "OTEL_EXPORTER_OTLP_ENDPOINT", "") || undefined,
    scheduleDelayMs: envInt(env, "OTEL_BSP_SCHEDULE_DELAY", 5000, 0, 600_000),
  });
}

/**
 * The prediction log (runtime/prediction-log/): where records go (MONITOR_ADDRESS; empty: no
 * log) and how many are kept on the way.
 */
export interface PredictionLogSettings {
  /** MONITOR_ADDRESS: the monitor's host:port; undefined: predictions are not recorded. */
  readonly monitorAddress: string | undefined;
  /** PREDICTION_LOG_SAMPLE: the share of predictions recorded, per model ("*" or unnamed: the default). */
  readonly defaultSampleRate: number;
  readonly sampleRates: ReadonlyMap<string, number>;
  /** PREDICTION_LOG_QUEUE_BYTES: records queued or in flight at most; more are dropped (counted). */
  readonly queueBytes: number;
  /** PREDICTION_LOG_MAX_PAYLOAD_BYTES: larger inputs and outputs are recorded as their shapes only. */
  readonly maxPayloadBytes: number;
  /** PREDICTION_LOG_FLUSH_INTERVAL: how often the queue is sent. */
  readonly flushIntervalMs: number;
}

export function loadPredictionLogSettings(env: Env): PredictionLogSettings {
  const monitorAddress = envString(env, "MONITOR_ADDRESS", "");
  if (monitorAddress !== "" && !/^[^\s:]+:\d+$/.test(monitorAddress)) throw new ConfigError("MONITOR_ADDRESS", `must be host:port, got "${monitorAddress}"`);
  const rates = new Map<string, number>();
  let defaultSampleRate = 1;
  for (const entry of envString(env, "PREDICTION_LOG_SAMPLE", "1").split(",").map((e) => e.trim()).filter((e) => e !== "")) {
    const match = /^(?:([A-Za-z0-9*][A-Za-z0-9._-]*)=)?([0-9.]+)$/.exec(entry);
    const rate = match ? Number(match[2]) : NaN;
    if (!match || !(rate >= 0 && rate <= 1)) {
      throw new ConfigError("PREDICTION_LOG_SAMPLE", `"${entry}" is not a rate from 0 to 1, or model=rate (for example "1" or "iris_svc=1,*=0.1")`);
    }
    if (match[1] === undefined || match[1] === "*") defaultSampleRate = rate;
    else rates.set(match[1], rate);
  }
  return Object.freeze({
    monitorAddress: monitorAddress === "" ? undefined : monitorAddress,
    defaultSampleRate,
    sampleRates: rates,
    queueBytes: envInt(env, "PREDICTION_LOG_QUEUE_BYTES", 64 * 1024 * 1024, 64 * 1024, 16 * 1024 * 1024 * 1024),
    maxPayloadBytes: envInt(env, "PREDICTION_LOG_MAX_PAYLOAD_BYTES", 64 * 1024, 0, 64 * 1024 * 1024),
    flushIntervalMs: envDurationMs(env, "PREDICTION_LOG_FLUSH_INTERVAL", 200, 10, 60_000),
  });
}

/** Everything a service process shares with the others, parsed once at boot. */
export interface SharedSettings {
  readonly server: ServerConfig;
  readonly meshClient: MeshClientSettings;
  readonly auth: AuthSettings;
  readonly tracing: TracingSettings;
  /** METRICS=off turns the RPC metrics off (benchmarks measure their cost). */
  readonly metricsEnabled: boolean;
}

/** Parses the shared settings of one service; a bad variable throws a ConfigError naming it. */
export function loadSharedSettings(env: Env, service: ServiceName): SharedSettings {
  return Object.freeze({
    server: loadServerConfig(env, service),
    meshClient: loadMeshClientSettings(env),
    auth: loadAuthSettings(env),
    tracing: loadTracingSettings(env),
    metricsEnabled: envEnum(env, "METRICS", "on", ["on", "off"]) === "on",
  });
}
