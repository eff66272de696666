import { setTimeout as sleep } from "node:timers/promises";
import Database from "better-sqlite3";

/*
 * A second SQLite connection for bulk inserts, beside a service's Prisma client: prepared
 * statements in one transaction insert about 2.5x as many rows per second here as one
 * statement fed through Prisma's driver adapter (the monitor's records: 100,000 against 40,000
 * rows/s; docs/benchmarks.md). Same settings as the adapter's connection (WAL, synchronous
 * FULL) and the same rule for a busy database: the work is retried with short sleeps, off the
 * event loop's back, until the busy timeout, then fails with SQLITE_BUSY (UNAVAILABLE to callers).
 */
export class SqliteBulkWriter {
  readonly #db: Database.Database;

  constructor(
    path: string,
    private readonly busyTimeoutMs: number,
    /**
     * Inserts into a unique index of random keys (request ids) touch pages all over it: a
     * larger page cache, and checkpoints of the WAL every 10,000 pages instead of 1,000 (fewer,
     * larger write-backs of the same pages), made the monitor's inserts 1.7x faster here.
     */
    options: { cacheMiB: number; checkpointPages: number } = { cacheMiB: 2, checkpointPages: 1000 },
  ) {
    this.#db = new Database(path, { timeout: 0 });
    this.#db.pragma("journal_mode = WAL");
    this.#db.pragma("synchronous = FULL");
    this.#db.pragma(`cache_size = -${Math.round(options.cacheMiB * 1024)}`);
    this.#db.pragma(`wal_autocheckpoint = ${options.checkpointPages}`);
  }

  /** A prepared statement on this connection. */
  prepare(sql: string): Database.Statement {
    return this.#db.prepare(sql);
  }

  /** Runs `work` in one IMMEDIATE transaction (all or nothing), retrying while the database is busy. */
  async transaction<T>(work: () => T): Promise<T> {
    const run = this.#db.transaction(work);
    const until = Date.now() + this.busyTimeoutMs;
    for (let wait = 1; ; wait = Math.min(wait * 2, 50)) {
      try {
        return run.immediate();
      } catch (err) {
        const code = (err as { code?: string }).code;
        if ((code !== "SQLITE_BUSY" && code !== "SQLITE_LOCKED") || Date.now() >= until) throw err;
        await sleep(wait);
      }
    }
  }

  close(): void {
    this.#db.close();
  }
}
