import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { PrismaLibSql } from "@prisma/adapter-libsql";
import { PrismaPg } from "@prisma/adapter-pg";
import { configureSqlite, dialectOf, migrate, type Dialect, type RawSqlClient } from "../runtime/prisma-migrate.js";
import { PrismaClient as PostgresClient } from "./prisma/generated/postgresql/client.js";
import { PrismaClient as SqliteClient } from "./prisma/generated/sqlite/client.js";

/** The two generated clients have the same API; code is written against this one. */
export type BatchDatabase = PostgresClient;

const migrationsDir = fileURLToPath(new URL("prisma/migrations", import.meta.url));

/** Opens and migrates the batch database a URL names (file: SQLite, postgresql:// PostgreSQL). */
export async function openBatchDatabase(url: string): Promise<{ db: BatchDatabase; dialect: Dialect; applied: string[] }> {
  const dialect = dialectOf(url);
  let db: BatchDatabase;
  if (dialect === "postgresql") {
    db = new PostgresClient({ adapter: new PrismaPg({ connectionString: url, connectionTimeoutMillis: 3000, max: 10 }) });
  } else if (dialect === "sqlite") {
    mkdirSync(dirname(url.slice("file:".length)), { recursive: true });
    db = new SqliteClient({ adapter: new PrismaLibSql({ url }) }) as unknown as BatchDatabase;
    await configureSqlite(db);
  } else {
    throw new Error("unsupported database URL (want file:... or postgresql://...)");
  }
  // Prisma's overloaded $transaction does not match a structural type; the runner uses its callback form.
  const applied = await migrate(db as unknown as RawSqlClient, dialect, migrationsDir);
  return { db, dialect, applied };
}
