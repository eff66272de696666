import { createHash, randomUUID } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";

/** The SQL dialects mlmesh's Prisma services run on. */
export type Dialect = "sqlite" | "postgresql";

/** What the runner needs of a Prisma client (either generated client has it). */
export interface RawSqlClient {
  $executeRawUnsafe(sql: string, ...values: unknown[]): Promise<number>;
  $transaction<T>(run: (tx: RawSqlClient & { $queryRawUnsafe<R>(sql: string, ...values: unknown[]): Promise<R> }) => Promise<T>): Promise<T>;
}

/** Which dialect a DATABASE_URL names; undefined when it names neither. */
export function dialectOf(url: string): Dialect | undefined {
  if (/^postgres(ql)?:\/\//.test(url)) return "postgresql";
  if (url.startsWith("file:")) return "sqlite";
  return undefined;
}

/** Arbitrary constant: the PostgreSQL advisory lock that serialises concurrent migrators. */
const migrationLockId = 725_070_317;

/**
 * Applies the SQL migrations of <migrationsDir>/<dialect>/ that the database has not seen,
 * in name order, each in one transaction, recording them in Prisma's `_prisma_migrations`
 * table (same columns and checksums, so `prisma migrate deploy` agrees wherever Prisma's
 * engine is available). Several services starting at once are serialised by a lock.
 * Returns the names applied now.
 */
export async function migrate(db: RawSqlClient, dialect: Dialect, migrationsDir: string): Promise<string[]> {
  const folder = join(migrationsDir, dialect);
  const names = (await readdir(folder, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name).sort();
  await db.$executeRawUnsafe(
    `CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
      "id" VARCHAR(36) PRIMARY KEY NOT NULL,
      "checksum" VARCHAR(64) NOT NULL,
      "finished_at" ${dialect === "postgresql" ? "TIMESTAMPTZ" : "DATETIME"},
      "migration_name" VARCHAR(255) NOT NULL,
      "logs" TEXT,
      "rolled_back_at" ${dialect === "postgresql" ? "TIMESTAMPTZ" : "DATETIME"},
      "started_at" ${dialect === "postgresql" ? "TIMESTAMPTZ" : "DATETIME"} NOT NULL DEFAULT CURRENT_TIMESTAMP,
      "applied_steps_count" INTEGER NOT NULL DEFAULT 0
    )`,
  );
  // Parameter n: PostgreSQL numbers them; SQLite (better-sqlite3) takes `?` in order.
  const p = (n: number) => (dialect === "postgresql" ? `$${n}` : "?");
  const applied: string[] = [];
  for (const name of names) {
    const sql = await readFile(join(folder, name, "migration.sql"), "utf8");
    const checksum = createHash("sha256").update(sql).digest("hex");
    const done = await db.$transaction(async (tx) => {
      if (dialect === "postgresql") await tx.$executeRawUnsafe(`SELECT pg_advisory_xact_lock(${migrationLockId})`);
      const rows = await tx.$queryRawUnsafe<{ checksum: string }[]>(
        `SELECT "checksum" FROM "_prisma_migrations" WHERE "migration_name" = ${p(1)} AND "finished_at" IS NOT NULL AND "rolled_back_at" IS NULL`,
        name,
      );
      if (rows.length > 0) {
        if (rows[0].checksum !== checksum) throw new Error(`migration ${name} was changed after it was applied`);
        return false;
      }
      const statements = splitStatements(sql);
      for (const statement of statements) await tx.$executeRawUnsafe(statement);
      await tx.$executeRawUnsafe(
        `INSERT INTO "_prisma_migrations" ("id", "checksum", "finished_at", "migration_name", "applied_steps_count") VALUES (${p(1)}, ${p(2)}, CURRENT_TIMESTAMP, ${p(3)}, ${p(4)})`,
        randomUUID(),
        checksum,
        name,
        statements.length,
      );
      return true;
    });
    if (done) applied.push(name);
  }
  return applied;
}

/** The statements of a migration file: `;`-terminated, `--` comments dropped. */
function splitStatements(sql: string): string[] {
  return sql
    .split("\n")
    .filter((line) => !line.trimStart().startsWith("--"))
    .join("\n")
    .split(/;\s*(?:\n|$)/)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}
