import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import pg from "pg";

/** A fresh, empty database for one suite, and how to drop it. */
export interface TestDatabase {
  readonly url: string;
  drop(): Promise<void>;
}

/**
 * A new SQLite file in a temp folder, or a new PostgreSQL database on the server `npm test`
 * started (TEST_POSTGRES_URL). Fails, never skips, when PostgreSQL is not there.
 */
export async function freshDatabase(dialect: "sqlite" | "postgresql"): Promise<TestDatabase> {
  if (dialect === "sqlite") {
    const dir = await mkdtemp(join(tmpdir(), "mlmesh-db-"));
    return { url: `file:${join(dir, "test.db")}`, drop: () => rm(dir, { recursive: true, force: true }) };
  }
  const admin = process.env.TEST_POSTGRES_URL;
  if (!admin) throw new Error("TEST_POSTGRES_URL is not set: run the tests with `npm test`, which starts PostgreSQL");
  // pg resolves anything that is not a URL against "postgres://base", so say it here instead.
  if (!/^postgres(ql)?:\/\/\S+$/.test(admin)) throw new Error(`TEST_POSTGRES_URL is not one PostgreSQL URL: ${JSON.stringify(admin)}`);
  const name = `mlmesh_test_${randomBytes(6).toString("hex")}`;
  const sql = async (statement: string) => {
    const client = new pg.Client({ connectionString: admin });
    await client.connect();
    try {
      await client.query(statement);
    } finally {
      await client.end();
    }
  };
  await sql(`CREATE DATABASE ${name}`);
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return { url: url.toString(), drop: () => sql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}

/**
 * Runs one SQL query on a test database directly — not through any service — and returns its
 * rows: what is really stored. SQLite files are opened read-only.
 */
export async function queryDatabase<Row = Record<string, unknown>>(url: string, sql: string): Promise<Row[]> {
  if (url.startsWith("file:")) {
    const db = new Database(url.slice("file:".length), { readonly: true });
    try {
      return db.prepare(sql).all() as Row[];
    } finally {
      db.close();
    }
  }
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(sql)).rows as Row[];
  } finally {
    await client.end();
  }
}
