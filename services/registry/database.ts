import { fileURLToPath } from "node:url";
import { openDatabase } from "../runtime/storage/database.js";
import type { Dialect } from "../runtime/storage/migrations.js";
import { PrismaClient as PostgresClient } from "./prisma/generated/postgresql/client.js";
import { PrismaClient as SqliteClient } from "./prisma/generated/sqlite/client.js";

/** The two generated clients have the same API; code is written against this one. */
export type RegistryDatabase = PostgresClient;
export type { Dialect };

/** SQL migrations per dialect, applied at start (runtime/storage/migrations.ts). */
const migrationsDir = fileURLToPath(new URL("prisma/migrations", import.meta.url));

/** Opens the registry database a DATABASE_URL names and applies pending migrations. */
export function openRegistryDatabase(url: string, sqliteBusyTimeoutMs: number): Promise<{ db: RegistryDatabase; dialect: Dialect; applied: string[] }> {
  return openDatabase({ postgresql: PostgresClient, sqlite: SqliteClient }, { name: "registry", url, sqliteBusyTimeoutMs, migrationsDir });
}
