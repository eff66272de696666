import { fileURLToPath } from "node:url";
import { openDatabase } from "../runtime/storage/database.js";
import { SqliteBulkWriter } from "../runtime/storage/sqlite-bulk-writer.js";
import { databaseUnavailableError } from "../runtime/storage/errors.js";
import type { Dialect } from "../runtime/storage/migrations.js";
import type { WindowReport } from "./drift.js";
import { PrismaClient as PostgresClient } from "./prisma/generated/postgresql/client.js";
import { PrismaClient as SqliteClient } from "./prisma/generated/sqlite/client.js";
import type { IngestedRecord } from "./record-wire.js";

/*
 * The monitor's storage, in raw SQL over Prisma (SQLite or PostgreSQL): prediction records as
 * they came (their bytes) with the columns queries filter on, closed windows' reports, and
 * alerts. Records go in as one transaction per ingested message (SQLite: a prepared statement
 * per row on a connection of its own, runtime/storage/sqlite-bulk-writer.ts; PostgreSQL: one
 * statement), inserting only request ids not stored yet and returning those it inserted (the windows count each record once, however often
 * it is resent). On PostgreSQL records are partitioned by day (time_ms); each day's partition is
 * created ahead of time and dropped whole once older than the retention. SQLite deletes them.
 */

export type MonitorDatabase = PostgresClient;

const migrationsDir = fileURLToPath(new URL("prisma/migrations", import.meta.url));
const dayMs = 86_400_000;
/** SQLite group commit: a transaction once this many records wait, or this long after the first. */
const groupCommitRecords = 5000;
const groupCommitMs = 10;

/** A stored alert (monitor.proto Alert, as columns). */
export interface AlertRow {
  readonly id: string;
  readonly model: string;
  readonly version: number;
  readonly kind: number;
  readonly feature: string;
  readonly statistic: string;
  readonly state: number;
  readonly value: number;
  readonly threshold: number;
  readonly windowStartMs: number;
  readonly firedAtMs: number;
  readonly resolvedAtMs: number | undefined;
  readonly summary: string;
}

/** Filters of ListPredictions. */
export interface RecordQuery {
  readonly model: string;
  readonly version: number;
  readonly startMs: number;
  readonly endMs: number;
  readonly outliersOnly: boolean;
  readonly source: number;
}

/** A page position: the last record of the previous page (newest first). */
export interface RecordCursor {
  readonly timeMs: number;
  readonly requestId: string;
}

export class RecordStore {
  /**
   * SQLite: records are inserted through prepared statements on a connection of their own, and
   * read by request id there too (a few tens of microseconds, against about a millisecond for a
   * raw query through Prisma's driver adapter).
   */
  readonly #bulk:
    | {
        writer: SqliteBulkWriter;
        insert: import("better-sqlite3").Statement;
        exists: import("better-sqlite3").Statement;
        byRequestId: import("better-sqlite3").Statement;
        children: import("better-sqlite3").Statement;
      }
    | undefined;
  /** SQLite: inserts waiting for the next transaction (group commit). */
  #pending: { records: readonly IngestedRecord[]; resolve: (ids: Set<string>) => void; reject: (err: unknown) => void }[] = [];
  #pendingRecords = 0;
  #commitTimer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly db: MonitorDatabase,
    readonly dialect: Dialect,
    sqlite: { path: string; busyTimeoutMs: number } | undefined,
  ) {
    if (sqlite !== undefined) {
      const writer = new SqliteBulkWriter(sqlite.path, sqlite.busyTimeoutMs, { cacheMiB: 128, checkpointPages: 10_000 });
      const insert = writer.prepare(
        `INSERT INTO "prediction_records" ("id_hash", "request_id", "time_ms", "model", "version", "source", "status", "outlier_rows", "parent_request_id", "record")
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      );
      const exists = writer.prepare(`SELECT 1 FROM "prediction_records" WHERE "id_hash" = ? AND "request_id" = ?`).pluck();
      const byRequestId = writer.prepare(
        `SELECT "record", "parent_request_id" AS parent FROM "prediction_records" WHERE "id_hash" = ? AND "request_id" = ? ORDER BY "time_ms" DESC LIMIT 1`,
      );
      const children = writer.prepare(`SELECT "record" FROM "prediction_records" WHERE "parent_request_id" = ? ORDER BY "time_ms" LIMIT ?`).pluck();
      this.#bulk = { writer, insert, exists, byRequestId, children };
    }
  }

  /** Opens (and migrates) the database a URL names. */
  static async open(url: string, sqliteBusyTimeoutMs: number): Promise<{ store: RecordStore; applied: string[] }> {
    const { db, dialect, applied } = await openDatabase({ postgresql: PostgresClient, sqlite: SqliteClient }, { name: "monitor", url, sqliteBusyTimeoutMs, migrationsDir });
    const sqlite = dialect === "sqlite" ? { path: url.slice("file:".length), busyTimeoutMs: sqliteBusyTimeoutMs } : undefined;
    return { store: new RecordStore(db, dialect, sqlite), applied };
  }

  /** $1, $2 ... on PostgreSQL; `?` (bound in order) on SQLite. */
  #p(n: number): string {
    return this.dialect === "postgresql" ? `$${n}` : "?";
  }

  /**
   * Stores the records whose request id is new, in one statement; returns the request ids it
   * inserted (a resent record is not among them).
   */
  async insert(records: readonly IngestedRecord[]): Promise<Set<string>> {
    if (this.#bulk !== undefined) {
      // Group commit: messages arriving within a few milliseconds share one transaction. Rows
      // of random request ids dirty a page of the unique index each; a commit writes those pages
      // to the WAL and syncs it, so one commit per 5,000 rows costs less per row than one per
      // message (60,000 against 46,000 rows/s here, docs/benchmarks.md).
      return new Promise((resolve, reject) => {
        this.#pending.push({ records, resolve, reject });
        this.#pendingRecords += records.length;
        if (this.#pendingRecords >= groupCommitRecords) {
          clearTimeout(this.#commitTimer);
          this.#commitTimer = undefined;
          setImmediate(() => void this.#commitPending());
        } else {
          this.#commitTimer ??= setTimeout(() => {
            this.#commitTimer = undefined;
            void this.#commitPending();
          }, groupCommitMs);
        }
      });
    }
    const rows = records.map((r) => ({
      i: r.requestId,
      t: Math.floor(r.timeMs),
      m: r.model,
      v: r.version,
      s: r.source,
      c: r.status,
      o: r.outlierRows,
      p: r.parentRequestId ?? null,
      r: Buffer.from(r.bytes.buffer, r.bytes.byteOffset, r.bytes.byteLength).toString("hex"),
    }));
    const inserted = await this.#guard(() =>
      this.db.$queryRawUnsafe<{ id: string }[]>(
        `INSERT INTO "prediction_records" ("request_id", "time_ms", "model", "version", "source", "status", "outlier_rows", "parent_request_id", "record")
         SELECT r.i, r.t, r.m, r.v, r.s, r.c, r.o, r.p, decode(r.r, 'hex')
         FROM jsonb_to_recordset($1::jsonb) AS r(i text, t bigint, m text, v int, s int, c int, o int, p text, r text)
         ON CONFLICT DO NOTHING RETURNING "request_id" AS id`,
        JSON.stringify(rows),
      ),
    );
    return new Set(inserted.map((row) => row.id));
  }

  /** Inserts every waiting message's records in one transaction; each learns which of its records were new. */
  async #commitPending(): Promise<void> {
    const bulk = this.#bulk!;
    const batch = this.#pending;
    if (batch.length === 0) return;
    this.#pending = [];
    this.#pendingRecords = 0;
    try {
      const inserted = await this.#guard(() =>
        bulk.writer.transaction(() =>
          batch.map(({ records }) => {
            const ids = new Set<string>();
            for (const r of records) {
              const hash = idHash(r.requestId);
              if (bulk.exists.get(hash, r.requestId) !== undefined) continue; // stored before: a resend
              bulk.insert.run(hash, r.requestId, Math.floor(r.timeMs), r.model, r.version, r.source, r.status, r.outlierRows, r.parentRequestId ?? null, r.bytes);
              ids.add(r.requestId);
            }
            return ids;
          }),
        ),
      );
      batch.forEach((b, i) => b.resolve(inserted[i]));
    } catch (err) {
      for (const b of batch) b.reject(err);
    }
  }

  /** The record of a request id (the newest, should a caller have reused one), and its parent's id. */
  async get(requestId: string): Promise<{ record: Uint8Array; parentRequestId: string | undefined } | undefined> {
    const bulk = this.#bulk;
    if (bulk !== undefined) {
      const row = await this.#guard(async () => bulk.byRequestId.get(idHash(requestId), requestId) as { record: Uint8Array; parent: string | null } | undefined);
      return row === undefined ? undefined : { record: row.record, parentRequestId: row.parent ?? undefined };
    }
    const sql = `SELECT "record", "parent_request_id" AS parent FROM "prediction_records" WHERE "request_id" = $1 ORDER BY "time_ms" DESC LIMIT 1`;
    const rows = await this.#guard(() => this.db.$queryRawUnsafe<{ record: Uint8Array; parent: string | null }[]>(sql, requestId));
    return rows.length === 0 ? undefined : { record: rows[0].record, parentRequestId: rows[0].parent ?? undefined };
  }

  /** Records made on behalf of a request id (at most `limit`). */
  async children(requestId: string, limit: number): Promise<Uint8Array[]> {
    const bulk = this.#bulk;
    if (bulk !== undefined) return this.#guard(async () => bulk.children.all(requestId, Math.floor(limit)) as Uint8Array[]);
    const rows = await this.#guard(() =>
      this.db.$queryRawUnsafe<{ record: Uint8Array }[]>(
        `SELECT "record" FROM "prediction_records" WHERE "parent_request_id" = $1 ORDER BY "time_ms" LIMIT ${Math.floor(limit)}`,
        requestId,
      ),
    );
    return rows.map((r) => r.record);
  }

  /** One page of a model's records, newest first, after `cursor`; one more than `pageSize` tells there is a next page. */
  async list(query: RecordQuery, pageSize: number, cursor: RecordCursor | undefined): Promise<{ record: Uint8Array; timeMs: number; requestId: string }[]> {
    const where = [`"model" = ${this.#p(1)}`, `"time_ms" >= ${this.#p(2)}`, `"time_ms" < ${this.#p(3)}`];
    const args: unknown[] = [query.model, query.startMs, query.endMs];
    const next = () => this.#p(args.length + 1);
    if (query.version !== 0) {
      where.push(`"version" = ${next()}`);
      args.push(query.version);
    }
    if (query.source !== 0) {
      where.push(`"source" = ${next()}`);
      args.push(query.source);
    }
    if (query.outliersOnly) where.push(`"outlier_rows" > 0`);
    if (cursor !== undefined) {
      const t = next();
      args.push(cursor.timeMs);
      const t2 = next();
      args.push(cursor.timeMs);
      const id = next();
      args.push(cursor.requestId);
      where.push(`("time_ms" < ${t} OR ("time_ms" = ${t2} AND "request_id" < ${id}))`);
    }
    const sql = `SELECT "record", "time_ms" AS t, "request_id" AS id FROM "prediction_records" WHERE ${where.join(" AND ")} ORDER BY "time_ms" DESC, "request_id" DESC LIMIT ${pageSize + 1}`;
    const rows = await this.#guard(() => this.db.$queryRawUnsafe<{ record: Uint8Array; t: bigint | number; id: string }[]>(sql, ...args));
    return rows.map((r) => ({ record: r.record, timeMs: Number(r.t), requestId: r.id }));
  }

  /** Whether any record of the model is kept. */
  async hasModel(model: string): Promise<boolean> {
    const rows = await this.#guard(() => this.db.$queryRawUnsafe<unknown[]>(`SELECT 1 FROM "prediction_records" WHERE "model" = ${this.#p(1)} LIMIT 1`, model));
    return rows.length > 0;
  }

  /** The highest version of a model with Predictor records since `sinceMs`; 0 for none. */
  async latestVersion(model: string, sinceMs: number): Promise<number> {
    const rows = await this.#guard(() =>
      this.db.$queryRawUnsafe<{ v: number | bigint | null }[]>(
        `SELECT max("version") AS v FROM "prediction_records" WHERE "model" = ${this.#p(1)} AND "time_ms" >= ${this.#p(2)} AND "source" = 1`,
        model,
        sinceMs,
      ),
    );
    return Number(rows[0]?.v ?? 0);
  }

  /**
   * Predictor records from `sinceMs` on, model by model and oldest first, in pages (the windows
   * still open at start), through the (model, time_ms) index; at most `max` in all.
   */
  async *predictorRecordsSince(sinceMs: number, max: number): AsyncGenerator<Uint8Array[]> {
    const models = await this.#guard(() => this.db.$queryRawUnsafe<{ model: string }[]>(`SELECT DISTINCT "model" FROM "prediction_records"`));
    let read = 0;
    for (const { model } of models) {
      let after = sinceMs - 1;
      let afterId = "";
      while (read < max) {
        const rows = await this.#guard(() =>
          this.db.$queryRawUnsafe<{ record: Uint8Array; t: bigint | number; id: string; source: number | bigint }[]>(
            `SELECT "record", "time_ms" AS t, "request_id" AS id, "source" FROM "prediction_records"
             WHERE "model" = ${this.#p(1)} AND ("time_ms" > ${this.#p(2)} OR ("time_ms" = ${this.#p(3)} AND "request_id" > ${this.#p(4)}))
             ORDER BY "time_ms", "request_id" LIMIT 10000`,
            model,
            after,
            after,
            afterId,
          ),
        );
        if (rows.length === 0) break;
        read += rows.length;
        after = Number(rows[rows.length - 1].t);
        afterId = rows[rows.length - 1].id;
        yield rows.filter((r) => Number(r.source) === 1).map((r) => r.record);
      }
    }
  }

  /** Stores a closed window's report; false when it was stored already (a restart replayed it). */
  async insertWindow(model: string, version: number, report: WindowReport): Promise<boolean> {
    const sql =
      this.dialect === "postgresql"
        ? `INSERT INTO "drift_windows" ("model", "version", "start_ms", "report") VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`
        : `INSERT OR IGNORE INTO "drift_windows" ("model", "version", "start_ms", "report") VALUES (?, ?, ?, ?)`;
    const count = await this.#guard(() => this.db.$executeRawUnsafe(sql, model, version, report.startMs, JSON.stringify(report)));
    return count > 0;
  }

  /** A model version's stored windows starting in [startMs, endMs), oldest first (at most 10,000). */
  async windows(model: string, version: number, startMs: number, endMs: number): Promise<WindowReport[]> {
    const rows = await this.#guard(() =>
      this.db.$queryRawUnsafe<{ report: string }[]>(
        `SELECT "report" FROM "drift_windows" WHERE "model" = ${this.#p(1)} AND "version" = ${this.#p(2)} AND "start_ms" >= ${this.#p(3)} AND "start_ms" < ${this.#p(4)} ORDER BY "start_ms" LIMIT 10000`,
        model,
        version,
        startMs,
        endMs,
      ),
    );
    return rows.map((r) => JSON.parse(r.report) as WindowReport);
  }

  /** The newest version of a model with a stored window; 0 for none. */
  async latestWindowVersion(model: string): Promise<number> {
    const rows = await this.#guard(() =>
      this.db.$queryRawUnsafe<{ v: number | bigint | null }[]>(`SELECT max("version") AS v FROM "drift_windows" WHERE "model" = ${this.#p(1)}`, model),
    );
    return Number(rows[0]?.v ?? 0);
  }

  async insertAlert(alert: AlertRow): Promise<void> {
    const p = (n: number) => this.#p(n);
    await this.#guard(() =>
      this.db.$executeRawUnsafe(
        `INSERT INTO "monitor_alerts" ("id", "model", "version", "kind", "feature", "statistic", "state", "value", "threshold", "window_start_ms", "fired_at_ms", "resolved_at_ms", "summary")
         VALUES (${[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13].map(p).join(", ")})`,
        alert.id,
        alert.model,
        alert.version,
        alert.kind,
        alert.feature,
        alert.statistic,
        alert.state,
        alert.value,
        alert.threshold,
        alert.windowStartMs,
        alert.firedAtMs,
        alert.resolvedAtMs ?? null,
        alert.summary,
      ),
    );
  }

  async resolveAlert(id: string, resolvedAtMs: number): Promise<void> {
    await this.#guard(() => this.db.$executeRawUnsafe(`UPDATE "monitor_alerts" SET "state" = 2, "resolved_at_ms" = ${this.#p(1)} WHERE "id" = ${this.#p(2)}`, resolvedAtMs, id));
  }

  /** Alerts newest first (fired_at_ms, then id), optionally of one model or state, after a cursor. */
  async alerts(filter: { model: string; state: number }, pageSize: number, cursor: { firedAtMs: number; id: string } | undefined): Promise<AlertRow[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    const next = () => this.#p(args.length + 1);
    if (filter.model !== "") {
      where.push(`"model" = ${next()}`);
      args.push(filter.model);
    }
    if (filter.state !== 0) {
      where.push(`"state" = ${next()}`);
      args.push(filter.state);
    }
    if (cursor !== undefined) {
      const a = next();
      args.push(cursor.firedAtMs);
      const b = next();
      args.push(cursor.firedAtMs);
      const c = next();
      args.push(cursor.id);
      where.push(`("fired_at_ms" < ${a} OR ("fired_at_ms" = ${b} AND "id" < ${c}))`);
    }
    const sql = `SELECT * FROM "monitor_alerts" ${where.length > 0 ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY "fired_at_ms" DESC, "id" DESC LIMIT ${pageSize + 1}`;
    const rows = await this.#guard(() => this.db.$queryRawUnsafe<Record<string, unknown>[]>(sql, ...args));
    return rows.map((r) => ({
      id: String(r.id),
      model: String(r.model),
      version: Number(r.version),
      kind: Number(r.kind),
      feature: String(r.feature),
      statistic: String(r.statistic),
      state: Number(r.state),
      value: Number(r.value),
      threshold: Number(r.threshold),
      windowStartMs: Number(r.window_start_ms),
      firedAtMs: Number(r.fired_at_ms),
      resolvedAtMs: r.resolved_at_ms === null || r.resolved_at_ms === undefined ? undefined : Number(r.resolved_at_ms),
      summary: String(r.summary),
    }));
  }

  /**
   * Keeps the storage within the retention: on PostgreSQL creates the partitions of today and
   * the next two days and drops those wholly older than the cutoff; on SQLite deletes older
   * records in slices. Old windows and resolved alerts go too.
   */
  async maintain(nowMs: number, retentionMs: number): Promise<{ deleted: number; dropped: string[] }> {
    const cutoff = nowMs - retentionMs;
    let deleted = 0;
    const dropped: string[] = [];
    if (this.dialect === "postgresql") {
      const today = Math.floor(nowMs / dayMs);
      for (let d = today; d <= today + 2; d++) {
        const name = `prediction_records_${dayName(d)}`;
        await this.#guard(() =>
          this.db.$executeRawUnsafe(`CREATE TABLE IF NOT EXISTS "${name}" PARTITION OF "prediction_records" FOR VALUES FROM (${d * dayMs}) TO (${(d + 1) * dayMs})`),
        ).catch((err) => {
          // A day's records already in the default partition block its creation: they stay there (and are deleted by time below).
          if (!/would be violated|overlap/i.test(String((err as Error).message))) throw err;
        });
      }
      const partitions = await this.#guard(() =>
        this.db.$queryRawUnsafe<{ name: string }[]>(
          `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'prediction_records'`,
        ),
      );
      for (const { name } of partitions) {
        const match = /^prediction_records_(\d{8})$/.exec(name);
        if (match === null) continue;
        const day = dayOfName(match[1]);
        if ((day + 1) * dayMs <= cutoff) {
          await this.#guard(() => this.db.$executeRawUnsafe(`DROP TABLE "${name}"`));
          dropped.push(name);
        }
      }
      deleted += await this.#guard(() => this.db.$executeRawUnsafe(`DELETE FROM "prediction_records_default" WHERE "time_ms" < $1`, cutoff));
    } else {
      // By model, through the (model, time_ms) index: an index on time alone would cost every insert.
      const models = await this.#guard(() => this.db.$queryRawUnsafe<{ model: string }[]>(`SELECT DISTINCT "model" FROM "prediction_records"`));
      for (const { model } of models) {
        for (;;) {
          const n = await this.#guard(() =>
            this.db.$executeRawUnsafe(
              `DELETE FROM "prediction_records" WHERE rowid IN (SELECT rowid FROM "prediction_records" WHERE "model" = ? AND "time_ms" < ? LIMIT 10000)`,
              model,
              cutoff,
            ),
          );
          deleted += n;
          if (n < 10_000) break;
        }
      }
    }
    await this.#guard(() => this.db.$executeRawUnsafe(`DELETE FROM "drift_windows" WHERE "start_ms" < ${this.#p(1)}`, cutoff));
    await this.#guard(() => this.db.$executeRawUnsafe(`DELETE FROM "monitor_alerts" WHERE "state" = 2 AND "resolved_at_ms" < ${this.#p(1)}`, cutoff));
    return { deleted, dropped };
  }

  async close(): Promise<void> {
    this.#bulk?.writer.close();
    await this.db.$disconnect();
  }

  /** A busy or unreachable database becomes UNAVAILABLE (retry later); anything else is rethrown. */
  async #guard<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      throw databaseUnavailableError("monitor", err) ?? err;
    }
  }
}

/**
 * SQLite's index key of a request id: 53 bits (a safe integer) from two 32-bit hashes of its
 * UTF-16 code units (FNV-1a, and djb2's xor variant). Collisions are possible and harmless: the
 * id itself is compared beside it.
 */
export function idHash(requestId: string): number {
  let fnv = 0x811c9dc5;
  let djb = 5381;
  for (let i = 0; i < requestId.length; i++) {
    const c = requestId.charCodeAt(i);
    fnv = Math.imul(fnv ^ c, 0x01000193);
    djb = (Math.imul(djb, 33) ^ c) >>> 0;
  }
  return (fnv >>> 0) * 0x200000 + (djb & 0x1fffff);
}

/** "20261202" for a day number (days since the epoch, UTC). */
function dayName(day: number): string {
  return new Date(day * dayMs).toISOString().slice(0, 10).replaceAll("-", "");
}

function dayOfName(name: string): number {
  return Math.floor(Date.UTC(Number(name.slice(0, 4)), Number(name.slice(4, 6)) - 1, Number(name.slice(6, 8))) / dayMs);
}
