import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ConfigError, envDurationMs, envInt, envString, type Env } from "../runtime/env/variables.js";
import { envSqliteBusyTimeoutMs } from "../runtime/env/settings.js";
import { dialectOf } from "../runtime/storage/migrations.js";
import type { WebhookSettings } from "./webhooks.js";

/** Settings of the ModelRegistry, beyond the shared server settings. */
export interface RegistryConfig {
  /** DATABASE_URL: `file:<path>` (SQLite) or `postgresql://...`. */
  readonly databaseUrl: string;
  /** SQLite: how long a write waits for another writer (SQLITE_BUSY_TIMEOUT). */
  readonly sqliteBusyTimeoutMs: number;
  /** ARTIFACT_DIR: where uploaded model files are kept, by SHA-256. */
  readonly artifactDir: string;
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
