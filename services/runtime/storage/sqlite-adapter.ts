import { setTimeout as sleep } from "node:timers/promises";
import { PrismaBetterSqlite3 } from "@prisma/adapter-better-sqlite3";
import {
  DriverAdapterError,
  isDriverAdapterError,
  type IsolationLevel,
  type SqlDriverAdapter,
  type SqlDriverAdapterFactory,
  type SqlQuery,
  type SqlResultSet,
  type Transaction,
} from "@prisma/driver-adapter-utils";
import type { Database } from "better-sqlite3";

/*
 * Why this file exists (issue 9: acknowledged batch items were lost on SQLite).
 *
 * The registry and the batch service used Prisma's libSQL adapter. Under write contention a
 * statement failed with SQLITE_BUSY, and libSQL's driver left that statement un-reset on the
 * connection. SQLite commits an autocommit ("implicit") transaction only when the last active
 * writing statement on the connection finishes; the failed INSERT never finished, so every
 * later INSERT on that connection returned success into one growing open transaction that
 * nothing would ever commit — invisible to other connections, holding the write lock (so the
 * job's worker thread timed out: "Operation has timed out", worker exit code 1), and rolled
 * back when the connection closed. The busy timeout set by `PRAGMA busy_timeout` made it
 * likelier: libSQL's client hands its connection to the first transaction (the migrations)
 * and opens a fresh one without the pragma, so every later statement failed on the first
 * conflict instead of waiting.
 *
 * The fix is at the connection:
 *  - better-sqlite3 resets a statement whether it succeeds or fails (checked: a write after a
 *    failed one commits), and Prisma's adapter for it maps types as the libSQL one did;
 *  - that adapter runs statements that are outside a transaction on the transaction's own
 *    connection, so a RegisterItems INSERT issued while the job's results were being stored
 *    would have joined (and rolled back with) that transaction. Here every statement and
 *    every transaction takes the connection in turn (one mutex per connection);
 *  - transactions begin IMMEDIATE: they take the write lock at BEGIN, so no statement inside
 *    can fail later because another writer committed first;
 *  - a busy database is waited for without blocking the event loop: SQLite's busy handler
 *    would sleep inside the statement (the whole process stalls, health checks included), so
 *    BEGIN and autocommit statements are retried with short sleeps until the busy timeout,
 *    then fail with SQLITE_BUSY (callers answer UNAVAILABLE). A failed statement changed
 *    nothing, so retrying it is safe;
 *  - after every transaction and every failed statement the connection must be back in
 *    autocommit mode; if not, it is rolled back, so nothing can report success later
 *    without committing.
 */

/** How an mlmesh SQLite connection behaves. */
export interface SqliteOptions {
  /** How long a writer waits for another connection's write lock before SQLITE_BUSY. */
  readonly busyTimeoutMs: number;
}

/** Prisma driver adapter factory for SQLite files (better-sqlite3), safe under concurrency. */
export class SqliteAdapterFactory implements SqlDriverAdapterFactory {
  readonly provider = "sqlite";
  readonly adapterName: string;
  readonly #inner: PrismaBetterSqlite3;

  constructor(
    path: string,
    private readonly options: SqliteOptions,
  ) {
    // Busy waits happen in this file, asynchronously (see above): SQLite's own handler is off.
    this.#inner = new PrismaBetterSqlite3({ url: path, timeout: 0 });
    this.adapterName = this.#inner.adapterName;
  }

  async connect(): Promise<SqlDriverAdapter> {
    const inner = await this.#inner.connect();
    const db = (inner as unknown as { client?: Database }).client;
    if (db === undefined || typeof db.exec !== "function") {
      throw new Error("@prisma/adapter-better-sqlite3 no longer exposes its connection as `client`: update sqlite-adapter.ts");
    }
    const adapter = new SqliteConnection(inner, db, this.options.busyTimeoutMs);
    await adapter.configure();
    return adapter;
  }
}

/** Runs one job at a time on a connection, in the order asked. */
class ConnectionMutex {
  #tail: Promise<void> = Promise.resolve();

  /** Resolves once the connection is ours, to the function that gives it back. */
  acquire(): Promise<() => void> {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const acquired = this.#tail.then(() => release);
    this.#tail = this.#tail.then(() => held);
    return acquired;
  }
}

class SqliteConnection implements SqlDriverAdapter {
  readonly provider = "sqlite";
  readonly adapterName: string;
  readonly #mutex = new ConnectionMutex();

  constructor(
    private readonly inner: SqlDriverAdapter,
    private readonly db: Database,
    private readonly busyTimeoutMs: number,
  ) {
    this.adapterName = inner.adapterName;
  }

  /**
   * Per-connection settings: WAL (readers never block the writer; set once per file, kept),
   * synchronous FULL (a commit is on disk before it is acknowledged, even across a power
   * loss), foreign keys enforced (a model under an unknown project writes nothing).
   */
  async configure(): Promise<void> {
    await this.#whenNotBusy(async () => {
      this.db.pragma("journal_mode = WAL");
      this.db.pragma("synchronous = FULL");
      this.db.pragma("foreign_keys = ON");
    });
  }

  queryRaw(query: SqlQuery): Promise<SqlResultSet> {
    return this.#whenNotBusy(() => this.inner.queryRaw(query));
  }

  executeRaw(query: SqlQuery): Promise<number> {
    return this.#whenNotBusy(() => this.inner.executeRaw(query));
  }

  executeScript(script: string): Promise<void> {
    return this.#whenNotBusy(() => this.inner.executeScript(script));
  }

  async startTransaction(isolationLevel?: IsolationLevel): Promise<Transaction> {
    if (isolationLevel !== undefined && isolationLevel !== "SERIALIZABLE") {
      throw new DriverAdapterError({ kind: "InvalidIsolationLevel", level: isolationLevel });
    }
    const deadline = Date.now() + this.busyTimeoutMs;
    for (let attempt = 0; ; attempt++) {
      const release = await this.#mutex.acquire();
      try {
        this.db.exec("BEGIN IMMEDIATE");
        return new SqliteTransaction(this.inner, this.db, release);
      } catch (err) {
        release();
        if (!isBusy(err) || Date.now() >= deadline) throw toAdapterError(err);
      }
      await sleep(backoffMs(attempt));
    }
  }

  getConnectionInfo() {
    return this.inner.getConnectionInfo?.() ?? { supportsRelationJoins: false };
  }

  async dispose(): Promise<void> {
    // Waits for the statement or transaction under way; closing rolls back nothing committed.
    const release = await this.#mutex.acquire();
    try {
      await this.inner.dispose();
    } finally {
      release();
    }
  }

  /**
   * Runs `work` (statements outside any transaction) with the connection to itself, retrying
   * while the database is busy, until the busy timeout.
   */
  async #whenNotBusy<T>(work: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.busyTimeoutMs;
    for (let attempt = 0; ; attempt++) {
      const release = await this.#mutex.acquire();
      try {
        const result = await work();
        ensureAutocommit(this.db);
        return result;
      } catch (err) {
        ensureAutocommit(this.db);
        if (!isBusy(err) || Date.now() >= deadline) throw toAdapterError(err);
      } finally {
        release();
      }
      await sleep(backoffMs(attempt));
    }
  }
}

/** A transaction holding its connection (and SQLite's write lock) from BEGIN IMMEDIATE to the end. */
class SqliteTransaction implements Transaction {
  readonly provider = "sqlite";
  readonly adapterName: string;
  /** Prisma calls commit()/rollback() instead of sending COMMIT/ROLLBACK itself. */
  readonly options = { usePhantomQuery: true };
  #release: (() => void) | undefined;

  constructor(
    private readonly inner: SqlDriverAdapter,
    private readonly db: Database,
    release: () => void,
  ) {
    this.adapterName = inner.adapterName;
    this.#release = release;
  }

  // The inner adapter's statements run on the same connection, which this transaction holds.
  queryRaw(query: SqlQuery): Promise<SqlResultSet> {
    this.#ensureOpen();
    return this.inner.queryRaw(query);
  }

  executeRaw(query: SqlQuery): Promise<number> {
    this.#ensureOpen();
    return this.inner.executeRaw(query);
  }

  async commit(): Promise<void> {
    this.#ensureOpen();
    try {
      this.db.exec("COMMIT");
    } catch (err) {
      throw toAdapterError(err);
    } finally {
      this.#end();
    }
  }

  async rollback(): Promise<void> {
    if (this.#release === undefined) return;
    this.#end();
  }

  async createSavepoint(name: string): Promise<void> {
    await this.executeRaw({ sql: `SAVEPOINT ${name}`, args: [], argTypes: [] });
  }

  async rollbackToSavepoint(name: string): Promise<void> {
    await this.executeRaw({ sql: `ROLLBACK TO ${name}`, args: [], argTypes: [] });
  }

  async releaseSavepoint(name: string): Promise<void> {
    await this.executeRaw({ sql: `RELEASE SAVEPOINT ${name}`, args: [], argTypes: [] });
  }

  #ensureOpen(): void {
    if (this.#release === undefined) {
      throw new DriverAdapterError({ kind: "TransactionAlreadyClosed", cause: "the SQLite transaction has ended" });
    }
  }

  /** Rolls back whatever a failed COMMIT or a rollback left open, and frees the connection. */
  #end(): void {
    const release = this.#release;
    this.#release = undefined;
    try {
      if (this.db.inTransaction) this.db.exec("ROLLBACK");
    } finally {
      release?.();
    }
  }
}

/**
 * The guarantee behind every acknowledged write: outside a transaction the connection is in
 * autocommit mode. A statement that left it inside one (a raw BEGIN, or a driver bug like the
 * one described above) is rolled back here and reported, instead of swallowing later writes.
 */
function ensureAutocommit(db: Database): void {
  if (!db.inTransaction) return;
  db.exec("ROLLBACK");
  throw new DriverAdapterError({
    kind: "sqlite",
    extendedCode: 1,
    message: "a statement left the SQLite connection inside a transaction; it was rolled back",
  });
}

function isBusy(err: unknown): boolean {
  if (isDriverAdapterError(err)) return err.cause.kind === "SocketTimeout" || String(err.cause.originalCode).startsWith("SQLITE_BUSY");
  return String((err as { code?: unknown }).code).startsWith("SQLITE_BUSY");
}

/** A driver error in the form Prisma maps to its error codes (busy: P1008 "Operation has timed out"). */
function toAdapterError(err: unknown): unknown {
  if (isDriverAdapterError(err)) return err;
  const e = err as { code?: unknown; message?: unknown };
  if (typeof e.code !== "string" || typeof e.message !== "string") return err;
  if (e.code.startsWith("SQLITE_BUSY")) return new DriverAdapterError({ kind: "SocketTimeout", originalCode: e.code, originalMessage: e.message });
  return new DriverAdapterError({ kind: "sqlite", extendedCode: 1, message: e.message, originalCode: e.code, originalMessage: e.message });
}

/** 1, 2, 4, 8 then 10-20 ms: quick to take a lock that frees soon, cheap while it does not. */
function backoffMs(attempt: number): number {
  return attempt < 4 ? 2 ** attempt : 10 + Math.random() * 10;
}
