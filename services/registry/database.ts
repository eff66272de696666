import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { PrismaLibSql } from "@prisma/adapter-libsql";
import { PrismaPg } from "@prisma/adapter-pg";
import { PrismaClient as PostgresClient } from "./prisma/generated/postgresql/client.js";
import { PrismaClient as SqliteClient } from "./prisma/generated/sqlite/client.js";
import { dialectOf, type Dialect } from "../runtime/prisma-migrate.js";

/** The two generated clients have the same API; code is written against this one. */
export type RegistryDatabase = PostgresClient;
export type { Dialect };

/** SQL migrations per dialect, applied at start (runtime/prisma-migrate.ts). */
export const migrationsDir = fileURLToPath(new URL("prisma/migrations", import.meta.url));

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

/** The default database: a SQLite file under data/ of this checkout. */
export const defaultDatabaseUrl = `file:${resolve(repoRoot, "data/registry.db")}`;

/**
 * Opens the database a DATABASE_URL names through a Prisma driver adapter: libSQL for a
 * `file:` URL (its folder is created), node-postgres for `postgresql://`. Does not connect yet.
 */
export function openDatabase(url: string): { db: RegistryDatabase; dialect: Dialect } {
  const dialect = dialectOf(url);
  if (dialect === "postgresql") {
    return { db: new PostgresClient({ adapter: new PrismaPg({ connectionString: url, connectionTimeoutMillis: 3000 }) }), dialect };
  }
  if (dialect === "sqlite") {
    mkdirSync(dirname(url.slice("file:".length)), { recursive: true });
    const db = new SqliteClient({ adapter: new PrismaLibSql({ url }) });
    return { db: db as unknown as RegistryDatabase, dialect };
  }
  throw new Error(`unsupported database URL (want file:... or postgresql://...)`);
}
