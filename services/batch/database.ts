import { fileURLToPath } from "node:url";
import { openDatabase } from "../runtime/storage/database.js";
import type { Dialect } from "../runtime/storage/migrations.js";
import { PrismaClient as PostgresClient } from "./prisma/generated/postgresql/client.js";
import { PrismaClient as SqliteClient } from "./prisma/generated/sqlite/client.js";

/** The two generated clients have the same API; code is written against this one. */
export type BatchDatabase = PostgresClient;

const migrationsDir = fileURLToPath(new URL("prisma/migrations", import.meta.url));

/**
 * Opens the batch database a URL names (file: SQLite, postgresql:// PostgreSQL). With
 * `migrate`, applies pending migrations first: the service and `batch-worker` processes do at
 * start; a scheduled run's thread only connects.
 */
export function openBatchDatabase(
  url: string,
  options: { sqliteBusyTimeoutMs: number; migrate: boolean },
): Promise<{ db: BatchDatabase; dialect: Dialect; applied: string[] }> {
  return openDatabase(
    { postgresql: PostgresClient, sqlite: SqliteClient },
    { name: "batch", url, sqliteBusyTimeoutMs: options.sqliteBusyTimeoutMs, migrationsDir: options.migrate ? migrationsDir : undefined },
  );
}
