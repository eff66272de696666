/**
 * Environment variables: the one place that reads process.env (readProcessEnvironment), and
 * the typed parsers every settings loader uses. Each variable is read once at boot and
 * validated; a bad value throws a ConfigError that names the variable, and the process exits
 * with that message instead of starting half-configured.
 */

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

/** A decimal number within [min, max], or the default when unset or empty. */
export function envNumber(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw.trim());
  if (!/^-?\d+(\.\d+)?$/.test(raw.trim()) || value < min || value > max) {
    throw new ConfigError(name, `must be a number between ${min} and ${max}, got "${raw}"`);
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

/**
 * The process's environment, copied and frozen. Entry points (bin/mlmesh.js's CLI, bench
 * scripts, the batch job's worker thread) call this once and hand the copy down; no other
 * module reads process.env.
 */
export function readProcessEnvironment(): Env {
  return Object.freeze({ ...process.env });
}
