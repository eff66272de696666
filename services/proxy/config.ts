import { ConfigError, envDurationMs, envInt, envString, type Env } from "../runtime/env/variables.js";
import { servicePorts } from "../runtime/env/service-ports.js";

/** One predictor the proxy fans out to. */
export interface Backend {
  /** Name in responses, e.g. "setosa". */
  readonly name: string;
  /** host:port of a Predictor. */
  readonly address: string;
  /** One-vs-rest model whose probabilities are [P(target), P(rest)]: "name" or "name@alias". */
  readonly model: string;
  /** Model version; 0 for the highest (or the alias's). */
  readonly version: number;
}

/** Settings of the Proxy, beyond the shared server settings. */
export interface ProxyConfig {
  readonly backends: readonly Backend[];
  /** Per-backend timeout when the caller sets no deadline (a caller's deadline always applies). */
  readonly backendTimeoutMs: number;
  /** Timeout of each backend's health check in CheckBackends. */
  readonly healthTimeoutMs: number;
  /** Consecutive failures that open a backend's circuit. */
  readonly breakerFailures: number;
  /** How long an open circuit skips its backend before one probe call is let through. */
  readonly breakerCooldownMs: number;
  /** Calls in flight per backend Predictor before further requests wait and share the next call (coalescer.ts). */
  readonly backendConcurrency: number;
}

const species = ["setosa", "versicolor", "virginica"];

/**
 * PROXY_BACKENDS lists backends as `name=host:port/model[@alias|@version]`, comma-separated,
 * e.g. `setosa=10.0.0.5:50052/iris_svc_setosa@production`. Unset: setosa, versicolor and
 * virginica, each model's "production" version, served by the Predictor at PREDICTOR_ADDRESS
 * (default: this machine's PREDICTOR_PORT).
 */
export function loadProxyConfig(env: Env): ProxyConfig {
  const predictorPort = envInt(env, servicePorts.predictor.variable, servicePorts.predictor.port, 1, 65535);
  const predictorAddress = envString(env, "PREDICTOR_ADDRESS", `127.0.0.1:${predictorPort}`);
  const raw = env.PROXY_BACKENDS;
  const backends =
    raw === undefined || raw.trim() === ""
      ? species.map((name) => ({ name, address: predictorAddress, model: `iris_svc_${name}@production`, version: 0 }))
      : raw.split(",").map((entry) => parseBackend(entry.trim()));
  const names = new Set(backends.map((b) => b.name));
  if (names.size !== backends.length) throw new ConfigError("PROXY_BACKENDS", "backend names must be unique");
  return Object.freeze({
    backends,
    backendTimeoutMs: envDurationMs(env, "PROXY_BACKEND_TIMEOUT", 1000, 1, 600_000),
    healthTimeoutMs: envDurationMs(env, "PROXY_HEALTH_TIMEOUT", 500, 1, 60_000),
    breakerFailures: envInt(env, "PROXY_BREAKER_FAILURES", 3, 1, 1000),
    breakerCooldownMs: envDurationMs(env, "PROXY_BREAKER_COOLDOWN", 5000, 1, 3_600_000),
    backendConcurrency: envInt(env, "PROXY_BACKEND_CONCURRENCY", 2, 1, 1000),
  });
}

function parseBackend(entry: string): Backend {
  const match = /^([A-Za-z0-9][A-Za-z0-9_-]*)=([^/\s]+:\d{1,5})\/([A-Za-z0-9][A-Za-z0-9._-]*)(?:@(\d+|[a-z][a-z0-9_-]*))?$/.exec(entry);
  if (!match) {
    throw new ConfigError("PROXY_BACKENDS", `"${entry}" is not name=host:port/model[@alias|@version]`);
  }
  const [, name, address, model, at] = match;
  if (at !== undefined && /^\d+$/.test(at)) return { name, address, model, version: Number(at) };
  return { name, address, model: at === undefined ? model : `${model}@${at}`, version: 0 };
}
