// The SQLite connection every Prisma service uses (services/runtime/storage/sqlite-adapter.ts),
// on real database files through a real Prisma client, against the failures behind issue 9.
// Another connection to the same file is opened with better-sqlite3 directly: it sees only
// what was committed.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { PrismaClient } from "../services/batch/prisma/generated/sqlite/client.js";
import { SqliteAdapterFactory } from "../services/runtime/storage/sqlite-adapter.js";

let dir: string;
let path: string;
let other: Database.Database;
const clients: PrismaClient[] = [];

function client(busyTimeoutMs = 2000): PrismaClient {
  const db = new PrismaClient({ adapter: new SqliteAdapterFactory(path, { busyTimeoutMs }), transactionOptions: { maxWait: busyTimeoutMs + 1000, timeout: 10_000 } });
  clients.push(db);
  return db;
}

const committed = () => other.prepare("SELECT x FROM t ORDER BY rowid").all().map((r) => (r as { x: string }).x);

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "mlmesh-sqlite-"));
  path = join(dir, "test.db");
  other = new Database(path);
  other.pragma("journal_mode = WAL");
  other.exec("CREATE TABLE t (x TEXT); CREATE TABLE counter (n INTEGER); INSERT INTO counter VALUES (0)");
});
afterEach(async () => {
  for (const db of clients.splice(0)) await db.$disconnect();
  other.close();
  await rm(dir, { recursive: true, force: true });
});

describe("the SQLite adapter", () => {
  it("commits every write after one failed on a busy database (libSQL left them in a transaction nobody committed)", async () => {
    const db = client(200);
    other.exec("BEGIN IMMEDIATE");
    await expect(db.$executeRawUnsafe("INSERT INTO t VALUES ('refused')")).rejects.toThrow(/SQLITE_BUSY|Operation has timed out/);
    other.exec("ROLLBACK");
    for (const x of ["a", "b", "c"]) await db.$executeRawUnsafe("INSERT INTO t VALUES (?)", x);
    expect(committed()).toEqual(["a", "b", "c"]);
    await db.$disconnect();
    expect(committed()).toEqual(["a", "b", "c"]);
  });

  it("keeps a write made while another caller's transaction is open when that transaction rolls back", async () => {
    const db = client();
    await db.$executeRawUnsafe("SELECT 1"); // connected
    const failing = db
      .$transaction(async (tx) => {
        await tx.$executeRawUnsafe("INSERT INTO t VALUES ('in the transaction')");
        await new Promise((resolve) => setTimeout(resolve, 300));
        throw new Error("the transaction fails");
      })
      .catch((err: Error) => err.message);
    await new Promise((resolve) => setTimeout(resolve, 100));
    // Prisma's own better-sqlite3 adapter runs this INSERT inside the open transaction, so the
    // rollback below would take it away after it was acknowledged.
    await db.$executeRawUnsafe("INSERT INTO t VALUES ('acknowledged outside')");
    expect(await failing).toBe("the transaction fails");
    expect(committed()).toEqual(["acknowledged outside"]);
  });

  it("runs concurrent read-then-write transactions from two connections without losing one or failing", async () => {
    const [a, b] = [client(), client()];
    const increment = (db: PrismaClient) =>
      db.$transaction(async (tx) => {
        const [{ n }] = await tx.$queryRawUnsafe<{ n: number }[]>("SELECT n FROM counter");
        await new Promise((resolve) => setTimeout(resolve, 1));
        await tx.$executeRawUnsafe("UPDATE counter SET n = ?", Number(n) + 1);
      });
    await Promise.all(Array.from({ length: 20 }, () => [increment(a), increment(b)]).flat());
    expect(other.prepare("SELECT n FROM counter").get()).toEqual({ n: 40 });
  });

  it("waits for a busy database without blocking the event loop, and goes on once it is free", async () => {
    const db = client(5000);
    await db.$executeRawUnsafe("SELECT 1");
    other.exec("BEGIN IMMEDIATE");
    const write = db.$executeRawUnsafe("INSERT INTO t VALUES ('waited')");
    const ticks: number[] = [];
    const timer = setInterval(() => ticks.push(Date.now()), 10);
    await new Promise((resolve) => setTimeout(resolve, 300));
    clearInterval(timer);
    expect(ticks.length).toBeGreaterThan(10); // timers kept firing while the write waited
    other.exec("COMMIT");
    await write;
    expect(committed()).toEqual(["waited"]);
  });
});
