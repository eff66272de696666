import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { envSqliteBusyTimeoutMs } from "../runtime/env/settings.js";
import { ConfigError, envDurationMs, envInt, envNumber, envString, type Env } from "../runtime/env/variables.js";
import { dialectOf } from "../runtime/storage/migrations.js";

/** The values above which a window raises an alert (monitor.proto Thresholds). */
export interface Thresholds {
  readonly psi: number;
  readonly ks: number;
  readonly meanShift: number;
  readonly labelShift: number;
  readonly outlierRate: number;
  readonly minRows: number;
}

/** Settings of the monitor, beyond the shared server settings. */
export interface MonitorConfig {
  /** MONITOR_DATABASE_URL: `file:<path>` (SQLite, the default) or `postgresql://...`. */
  readonly databaseUrl: string;
  readonly sqliteBusyTimeoutMs: number;
  /** MONITOR_WINDOW: the length of a drift window. */
  readonly windowMs: number;
  /** MONITOR_WINDOW_GRACE: how long after its end a window waits for late records before it closes. */
  readonly graceMs: number;
  /** MONITOR_RETENTION: records (and windows) older than this are deleted (PostgreSQL: whole day partitions). */
  readonly retentionMs: number;
  /** Rows kept per window and version for the KS statistic and PSI (a uniform sample). */
  readonly sampleRows: number;
  /** MONITOR_TRAFFIC_RETENTION: how long per-second call and shadow figures (GetTrafficStats) stay in memory. */
  readonly trafficRetentionMs: number;
  /** MONITOR_*_THRESHOLD: the defaults; a model's registry tags (monitor.psi, ...) override them. */
  readonly thresholds: Thresholds;
  /** REGISTRY_ADDRESS: where reference profiles and per-model thresholds come from; undefined: none. */
  readonly registryAddress: string | undefined;
  /** MONITOR_REFERENCE_REFRESH: how often a model's tags and profile are read again. */
  readonly referenceRefreshMs: number;
}

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

export function loadMonitorConfig(env: Env): MonitorConfig {
  const databaseUrl = envString(env, "MONITOR_DATABASE_URL", `file:${resolve(repoRoot, "data/monitor.db")}`);
  if (dialectOf(databaseUrl) === undefined) throw new ConfigError("MONITOR_DATABASE_URL", "must be file:<path> (SQLite) or postgresql://... (PostgreSQL)");
  const registryAddress = envString(env, "REGISTRY_ADDRESS", "");
  if (registryAddress !== "" && !/^[^\s:]+:\d+$/.test(registryAddress)) throw new ConfigError("REGISTRY_ADDRESS", `must be host:port, got "${registryAddress}"`);
  return Object.freeze({
    databaseUrl,
    sqliteBusyTimeoutMs: envSqliteBusyTimeoutMs(env),
    windowMs: envDurationMs(env, "MONITOR_WINDOW", 60_000, 500, 86_400_000),
    graceMs: envDurationMs(env, "MONITOR_WINDOW_GRACE", 10_000, 0, 3_600_000),
    retentionMs: envDurationMs(env, "MONITOR_RETENTION", 7 * 86_400_000, 3_600_000, 3650 * 86_400_000),
    sampleRows: envInt(env, "MONITOR_SAMPLE_ROWS", 10_000, 100, 1_000_000),
    trafficRetentionMs: envDurationMs(env, "MONITOR_TRAFFIC_RETENTION", 3_600_000, 60_000, 86_400_000),
    thresholds: Object.freeze({
      psi: envNumber(env, "MONITOR_PSI_THRESHOLD", 0.25, 0, 100),
      ks: envNumber(env, "MONITOR_KS_THRESHOLD", 0.25, 0, 1),
      meanShift: envNumber(env, "MONITOR_MEAN_SHIFT_THRESHOLD", 1, 0, 1000),
      labelShift: envNumber(env, "MONITOR_LABEL_SHIFT_THRESHOLD", 0.2, 0, 1),
      outlierRate: envNumber(env, "MONITOR_OUTLIER_RATE_THRESHOLD", 0.1, 0, 1),
      minRows: envInt(env, "MONITOR_MIN_ROWS", 200, 1, 1_000_000_000),
    }),
    registryAddress: registryAddress === "" ? undefined : registryAddress,
    referenceRefreshMs: envDurationMs(env, "MONITOR_REFERENCE_REFRESH", 30_000, 100, 86_400_000),
  });
}

/** A model's thresholds: the defaults, overridden by its registry tags "monitor.<name>" (ignored when not a number). */
export function thresholdsFromTags(defaults: Thresholds, tags: Readonly<Record<string, string>>): Thresholds {
  const read = (tag: string, fallback: number) => {
    const raw = tags[`monitor.${tag}`];
    const value = raw === undefined ? NaN : Number(raw);
    return Number.isFinite(value) && value >= 0 ? value : fallback;
  };
  return {
    psi: read("psi", defaults.psi),
    ks: read("ks", defaults.ks),
    meanShift: read("mean_shift", defaults.meanShift),
    labelShift: read("label_shift", defaults.labelShift),
    outlierRate: read("outlier_rate", defaults.outlierRate),
    minRows: Math.round(read("min_rows", defaults.minRows)),
  };
}
