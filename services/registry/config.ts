import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ConfigError, envDurationMs, envInt, envString, type Env } from "../runtime/env/variables.js";
import { envSqliteBusyTimeoutMs } from "../runtime/env/settings.js";
import { dialectOf } from "../runtime/storage/migrations.js";
import type { S3StoreSettings } from "./s3-artifact-store.js";
import type { WebhookSettings } from "./webhooks.js";

/** Settings of the ModelRegistry, beyond the shared server settings. */
export interface RegistryConfig {
  /** DATABASE_URL: `file:<path>` (SQLite) or `postgresql://...`. */
  readonly databaseUrl: string;
  /** SQLite: how long a write waits for another writer (SQLITE_BUSY_TIMEOUT). */
  readonly sqliteBusyTimeoutMs: number;
  /** ARTIFACT_DIR: where uploaded model files are kept, by SHA-256. */
  readonly artifactDir: string;
  /** ARTIFACT_S3_*: an S3-compatible bucket in place of ARTIFACT_DIR (shared by replicas); undefined: the folder. */
  readonly artifactS3: Omit<S3StoreSettings, "stagingDir"> | undefined;
  /** REGISTRY_BLOB_GC_*: when blobs no version names are removed (blob-collector.ts). */
  readonly blobCollection: { readonly graceMs: number; readonly intervalMs: number };
  /** ARTIFACT_MAX_BYTES: the largest upload (all its files together). */
  readonly artifactMaxBytes: number;
  /** MONITOR_ADDRESS: where canary rollouts read their gates' figures; undefined: no rollouts. */
  readonly monitorAddress: string | undefined;
  /** REGISTRY_ROLLOUT_TICK: how often the rollout controller looks for checks that are due. */
  readonly rolloutTickMs: number;
  /** REGISTRY_WEBHOOK_*: how webhooks are sent (webhooks.ts). */
  readonly webhooks: WebhookSettings;
}

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

export function loadRegistryConfig(env: Env): RegistryConfig {
  const databaseUrl = envString(env, "DATABASE_URL", `file:${resolve(repoRoot, "data/registry.db")}`);
  if (dialectOf(databaseUrl) === undefined) {
    throw new ConfigError("DATABASE_URL", "must be file:<path> (SQLite) or postgresql://... (PostgreSQL)");
  }
  return Object.freeze({
    databaseUrl,
    sqliteBusyTimeoutMs: envSqliteBusyTimeoutMs(env),
    artifactDir: resolve(envString(env, "ARTIFACT_DIR", resolve(repoRoot, "data/artifacts"))),
    artifactS3: loadS3Settings(env),
    blobCollection: {
      graceMs: envDurationMs(env, "REGISTRY_BLOB_GC_GRACE", 3_600_000, 1000, 30 * 24 * 3_600_000),
      intervalMs: envDurationMs(env, "REGISTRY_BLOB_GC_INTERVAL", 3_600_000, 1000, 7 * 24 * 3_600_000),
    },
    artifactMaxBytes: envInt(env, "ARTIFACT_MAX_BYTES", 256 * 1024 * 1024, 1024, 8 * 1024 * 1024 * 1024),
    monitorAddress: envString(env, "MONITOR_ADDRESS", "") || undefined,
    rolloutTickMs: envDurationMs(env, "REGISTRY_ROLLOUT_TICK", 1000, 100, 60_000),
    webhooks: {
      tickMs: envDurationMs(env, "REGISTRY_WEBHOOK_TICK", 1000, 50, 60_000),
      maxAttempts: envInt(env, "REGISTRY_WEBHOOK_MAX_ATTEMPTS", 12, 1, 100),
      retryBaseMs: envDurationMs(env, "REGISTRY_WEBHOOK_RETRY_BASE", 1000, 10, 3_600_000),
      timeoutMs: envDurationMs(env, "REGISTRY_WEBHOOK_TIMEOUT", 10_000, 100, 300_000),
    },
  });
}

/** ARTIFACT_S3_BUCKET turns the S3-compatible store on; the other ARTIFACT_S3_* say where it is. */
function loadS3Settings(env: Env): Omit<S3StoreSettings, "stagingDir"> | undefined {
  const bucket = envString(env, "ARTIFACT_S3_BUCKET", "");
  if (bucket === "") return undefined;
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) throw new ConfigError("ARTIFACT_S3_BUCKET", `"${bucket}" is not an S3 bucket name`);
  const endpoint = envString(env, "ARTIFACT_S3_ENDPOINT", "") || undefined;
  if (endpoint !== undefined && !/^https?:\/\/[^\s/]+(\/.*)?$/.test(endpoint)) throw new ConfigError("ARTIFACT_S3_ENDPOINT", "must be an http:// or https:// URL");
  const prefix = envString(env, "ARTIFACT_S3_PREFIX", "artifacts/");
  if (prefix !== "" && !/^[A-Za-z0-9._/-]*\/$/.test(prefix)) throw new ConfigError("ARTIFACT_S3_PREFIX", "must end with / (or be empty)");
  const pathStyle = envString(env, "ARTIFACT_S3_FORCE_PATH_STYLE", endpoint === undefined ? "false" : "true");
  if (pathStyle !== "true" && pathStyle !== "false") throw new ConfigError("ARTIFACT_S3_FORCE_PATH_STYLE", "must be true or false");
  return { bucket, endpoint, prefix, region: envString(env, "ARTIFACT_S3_REGION", "us-east-1"), forcePathStyle: pathStyle === "true" };
}
