import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { PrismaPg } from "@prisma/adapter-pg";
import type { SqlDriverAdapterFactory } from "@prisma/driver-adapter-utils";
import { dialectOf, migrate, type Dialect, type RawSqlClient } from "./migrations.js";
import { counter, histogram, latencyBuckets } from "../observability/metrics.js";
import { unavailableReason } from "./errors.js";
import { SqliteAdapterFactory } from "./sqlite-adapter.js";

/** What a generated Prisma client's constructor takes here (both dialects' clients accept it). */
interface ClientOptions {
  adapter: SqlDriverAdapterFactory;
  transactionOptions: { maxWait: number; timeout: number };
}

/** A service's two generated Prisma clients, one per dialect, with the same API. */
export interface PrismaClients<Db> {
  readonly postgresql: new (options: ClientOptions) => Db;
  readonly sqlite: new (options: ClientOptions) => unknown;
}

export interface OpenDatabaseOptions {
  /** What the database is ("registry", "batch"): the label of its metrics. */
  readonly name: string;
  /** `file:<path>` (SQLite; its folder is created) or `postgresql://...`. */
  readonly url: string;
  /** SQLite: how long a write waits for another writer's lock (SQLITE_BUSY_TIMEOUT). */
  readonly sqliteBusyTimeoutMs: number;
  /** Apply the migrations of <migrationsDir>/<dialect>/ before returning; omit to skip. */
  readonly migrationsDir?: string;
}

/** How long one interactive transaction may take before Prisma rolls it back. */
const transactionTimeoutMs = 15_000;

/**
 * Opens a service's database through a Prisma driver adapter — better-sqlite3 wrapped for
 * concurrency (sqlite-adapter.ts) for a `file:` URL, node-postgres for `postgresql://` — and
 * applies pending migrations when asked. Returns the client, its dialect, and the migrations
 * applied now.
 */
export async function openDatabase<Db extends { $disconnect(): Promise<void> }>(
  clients: PrismaClients<Db>,
  options: OpenDatabaseOptions,
): Promise<{ db: Db; dialect: Dialect; applied: string[] }> {
  const { url } = options;
  const dialect = dialectOf(url);
  let db: Db;
  const timed = (client: unknown) => withOperationMetrics(client, options.name) as Db;
  if (dialect === "postgresql") {
    const adapter = new PrismaPg({ connectionString: url, connectionTimeoutMillis: 3000, max: 10 });
    db = timed(new clients.postgresql({ adapter, transactionOptions: { maxWait: 5000, timeout: transactionTimeoutMs } }));
  } else if (dialect === "sqlite") {
    const path = url.slice("file:".length);
    mkdirSync(dirname(path), { recursive: true });
    const adapter = new SqliteAdapterFactory(path, { busyTimeoutMs: options.sqliteBusyTimeoutMs });
    // A transaction waits for the write lock in BEGIN for up to the busy timeout: Prisma must
    // not give up on it first.
    const maxWait = options.sqliteBusyTimeoutMs + 1000;
    db = timed(new clients.sqlite({ adapter, transactionOptions: { maxWait, timeout: transactionTimeoutMs } }));
  } else {
    throw new Error("unsupported database URL (want file:... or postgresql://...)");
  }
  try {
    // Prisma's overloaded $transaction does not match a structural type; the runner uses its callback form.
    const applied = options.migrationsDir === undefined ? [] : await migrate(db as unknown as RawSqlClient, dialect, options.migrationsDir);
    return { db, dialect, applied };
  } catch (err) {
    await db.$disconnect();
    throw err;
  }
}

const operationDuration = histogram({
  name: "mlmesh_db_operation_duration_seconds",
  help: "Duration of each database operation (Prisma model operation, or raw SQL), by database and operation.",
  labelNames: ["database", "operation"],
  buckets: latencyBuckets,
});
const operationErrors = counter({
  name: "mlmesh_db_errors_total",
  help: "Failed database operations by kind: busy, unreachable, unique_violation, not_found, foreign_key, other.",
  labelNames: ["database", "kind"],
});

/**
 * Times every operation of a Prisma client (a query extension: model operations as
 * "Model.operation", raw SQL as "$executeRawUnsafe" and the like) and counts failures by kind.
 */
function withOperationMetrics(client: unknown, database: string): unknown {
  return (client as { $extends(extension: object): unknown }).$extends({
    query: {
      async $allOperations({ model, operation, args, query }: { model?: string; operation: string; args: unknown; query: (args: unknown) => Promise<unknown> }) {
        const stop = operationDuration.startTimer({ database, operation: model ? `${model}.${operation}` : operation });
        try {
          return await query(args);
        } catch (err) {
          operationErrors.inc({ database, kind: errorKind(err) });
          throw err;
        } finally {
          stop();
        }
      },
    },
  });
}

function errorKind(err: unknown): string {
  const reason = unavailableReason(err);
  if (reason !== undefined) return reason;
  const code = (err as { code?: string }).code;
  return code === "P2002" ? "unique_violation" : code === "P2025" ? "not_found" : code === "P2003" ? "foreign_key" : "other";
}
