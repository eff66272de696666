import { fileURLToPath } from "node:url";
import { resolve } from "node:path";
import { ConfigError, envDurationMs, envEnum, envInt, envString, type Env } from "../runtime/env/variables.js";
import { servicePorts } from "../runtime/env/service-ports.js";
import { envSqliteBusyTimeoutMs } from "../runtime/env/settings.js";
import { dialectOf } from "../runtime/storage/migrations.js";

/** Settings of the BatchJob service and its workers. */
export interface BatchConfig {
  /** Database: BATCH_DATABASE_URL, else DATABASE_URL, else a SQLite file under data/. */
  readonly databaseUrl: string;
  /** SQLite: how long a write waits for another writer (SQLITE_BUSY_TIMEOUT). */
  readonly sqliteBusyTimeoutMs: number;
  /** The Predictor the job calls. */
  readonly predictorAddress: string;
  /** Model ("name" or "name@alias") and version (0: the highest, or the alias's) the job predicts with. */
  readonly model: string;
  readonly modelVersion: number;
  /** Time between scheduled runs. */
  readonly intervalMs: number;
  /** Items claimed at a time by one run. */
  readonly claimSize: number;
  /** Rows per Predict request. */
  readonly rowsPerRequest: number;
  /** Predict requests in flight at once. */
  readonly parallelism: number;
  /** How long a claim lasts; a worker that dies leaves its items to others after it. */
  readonly leaseMs: number;
  /** Whether the batch service runs the scheduled job itself (else only separate workers do). */
  readonly runJobInService: boolean;
}

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

export function loadBatchConfig(env: Env): BatchConfig {
  const databaseUrl = envString(env, "BATCH_DATABASE_URL", envString(env, "DATABASE_URL", `file:${resolve(repoRoot, "data/batch.db")}`));
  if (dialectOf(databaseUrl) === undefined) {
    throw new ConfigError(env.BATCH_DATABASE_URL ? "BATCH_DATABASE_URL" : "DATABASE_URL", "must be file:<path> or postgresql://...");
  }
  const model = envString(env, "BATCH_MODEL", "iris_svc@production");
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*(@[a-z][a-z0-9_-]*)?$/.test(model)) throw new ConfigError("BATCH_MODEL", `"${model}" is not a model name or name@alias`);
  const modelVersion = envInt(env, "BATCH_MODEL_VERSION", 0, 0, 1_000_000);
  if (model.includes("@") && modelVersion !== 0) throw new ConfigError("BATCH_MODEL_VERSION", "must be 0 when BATCH_MODEL names an alias");
  const predictorPort = envInt(env, servicePorts.predictor.variable, servicePorts.predictor.port, 1, 65535);
  return Object.freeze({
    databaseUrl,
    sqliteBusyTimeoutMs: envSqliteBusyTimeoutMs(env),
    predictorAddress: envString(env, "PREDICTOR_ADDRESS", `127.0.0.1:${predictorPort}`),
    model,
    modelVersion,
    intervalMs: envDurationMs(env, "BATCH_INTERVAL", 60_000, 100, 86_400_000),
    claimSize: envInt(env, "BATCH_CLAIM_SIZE", 5000, 1, 100_000),
    rowsPerRequest: envInt(env, "BATCH_ROWS_PER_REQUEST", 1000, 1, 10_000),
    parallelism: envInt(env, "BATCH_PARALLELISM", 4, 1, 64),
    leaseMs: envDurationMs(env, "BATCH_LEASE", 60_000, 100, 86_400_000),
    runJobInService: envEnum(env, "BATCH_RUN_JOB_IN_SERVICE", "true", ["true", "false"]) === "true",
  });
}
