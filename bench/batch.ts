// Batch throughput end to end, on SQLite and on PostgreSQL in one run. Two scenarios:
//  - bulk: register 100,000 items (10 RegisterItems calls), run the job once (RunJobNow)
//    through the Predictor, report items/minute;
//  - contended: four ghz clients register 1,000-item requests for 20 s while the job runs every
//    second, then the backlog drains; report what was acknowledged and predicted per minute,
//    and what the database really holds afterwards (counted in the file/server directly).
// BENCH_BASELINE=<another checkout with its npm packages> measures that checkout's services in
// the same run (e.g. the commit before a storage change). Writes its section of docs/benchmarks.md.
//
//   npm run bench:batch                 (about 3 minutes; starts PostgreSQL like npm test)
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { create, toBinary } from "@bufbuild/protobuf";
import { BatchJobService, RegisterItemsRequestSchema } from "../gen/mlmesh/batch/v1/batch_pb.js";
import { GrpcClient } from "../services/runtime/client/grpc-client.js";
import { machineSummary, repoRoot, runGhz, startBenchService, table, writeDocSection, type BenchService } from "./support.js";
import { readProcessEnvironment } from "../services/runtime/env/variables.js";

const environment = readProcessEnvironment();

const itemCount = Number(environment.BENCH_ITEMS ?? 100_000);
const contendedSeconds = Number(environment.BENCH_CONTENDED_SECONDS ?? 20);
const registerSeconds = Number(environment.BENCH_REGISTER_SECONDS ?? 10);
const baseline = environment.BENCH_BASELINE;
const iris = [
  [5.1, 3.5, 1.4, 0.2],
  [5.9, 3.0, 4.2, 1.5],
  [6.3, 3.3, 6.0, 2.5],
];

const checkouts = [
  { label: "", root: repoRoot },
  ...(baseline ? [{ label: ` (baseline ${execFileSync("git", ["-C", baseline, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim()})`, root: baseline }] : []),
];
const sqliteDir = mkdtempSync(join(tmpdir(), "mlmesh-bench-batch-"));
const adminUrl = execFileSync(`${repoRoot}scripts/start-postgres.sh`, { encoding: "utf8" }).trim();
const pgNames: string[] = [];
let nextPort = 50191;

/** A fresh database of each kind for one scenario. */
function freshDatabases(tag: string) {
  const pgName = `mlmesh_bench_batch_${tag}_${Date.now()}`;
  execFileSync("psql", [adminUrl, "-q", "-c", `CREATE DATABASE ${pgName}`]);
  pgNames.push(pgName);
  return [
    { name: "SQLite", url: `file:${join(sqliteDir, `${tag}.db`)}` },
    { name: "PostgreSQL", url: adminUrl.replace(/\/postgres$/, `/${pgName}`) },
  ];
}

async function storedItems(url: string): Promise<{ stored: number; predicted: number }> {
  const sql = `SELECT count(*) AS stored, sum(CASE WHEN "state" = 'PREDICTED' THEN 1 ELSE 0 END) AS predicted FROM "batch_items"`;
  let row: { stored: unknown; predicted: unknown };
  if (url.startsWith("file:")) {
    const db = new Database(url.slice("file:".length), { readonly: true });
    row = db.prepare(sql).get() as typeof row;
    db.close();
  } else {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    row = (await client.query(sql)).rows[0] as typeof row;
    await client.end();
  }
  return { stored: Number(row.stored), predicted: Number(row.predicted ?? 0) };
}

/**
 * The benchmark's clients are bulk loaders: per-client limits above what they send (the default
 * LIMIT_RATE, 50 expensive calls a second, would cap one client at 3 M items a minute).
 */
const loaderLimits = { LIMIT_RATE: "100000", LIMIT_CONCURRENCY: "1000" };

const perMinute = (n: number, s: number) => Math.round((n / s) * 60).toLocaleString("en-US");

async function bulk(predictor: BenchService, checkout: (typeof checkouts)[number], database: { name: string; url: string }): Promise<string[]> {
  const batch = await startBenchService("batch", nextPort++, {
    checkout: checkout.root,
    env: { DATABASE_URL: database.url, PREDICTOR_ADDRESS: predictor.address, BATCH_RUN_JOB_IN_SERVICE: "false", ...loaderLimits },
  });
  const client = new GrpcClient(batch.address);
  try {
    const registerStart = performance.now();
    for (let offset = 0; offset < itemCount; offset += 10_000) {
      const items = Array.from({ length: Math.min(10_000, itemCount - offset) }, (_, i) => ({ values: iris[(offset + i) % 3] }));
      await client.unary(BatchJobService.method.registerItems, { items }, { deadlineMs: Date.now() + 120_000 });
    }
    const registerSeconds = (performance.now() - registerStart) / 1000;
    const jobStart = performance.now();
    const { run } = await client.unary(BatchJobService.method.runJobNow, {}, { deadlineMs: Date.now() + 600_000 });
    const jobSeconds = (performance.now() - jobStart) / 1000;
    if (run!.predicted !== itemCount) throw new Error(`${database.name}: predicted ${run!.predicted} of ${itemCount} (${run!.error})`);
    return [
      database.name + checkout.label,
      itemCount.toLocaleString("en-US"),
      registerSeconds.toFixed(1),
      perMinute(itemCount, registerSeconds),
      jobSeconds.toFixed(1),
      perMinute(itemCount, jobSeconds),
      perMinute(itemCount, registerSeconds + jobSeconds),
    ];
  } finally {
    client.close();
    await batch.stop();
  }
}

/** A RegisterItems request of 1,000 items, serialized once. */
const registerRequest = toBinary(RegisterItemsRequestSchema, create(RegisterItemsRequestSchema, { items: Array.from({ length: 1000 }, (_, i) => ({ values: iris[i % 3] })) }));

/**
 * Four ghz clients, each on its own connection, calling RegisterItems (1,000 items each) for
 * `seconds`, as issue 23 measured it; the calls in flight at the end are awaited and counted.
 * (The bench's own Node clients cost more CPU than ghz, on the same two cores as the service.)
 */
async function registerFor(address: string, seconds: number): Promise<{ acknowledged: number; refused: number }> {
  const result = await runGhz({
    address,
    call: "mlmesh.batch.v1.BatchJobService/RegisterItems",
    data: registerRequest,
    concurrency: 4,
    connections: 4,
    durationSeconds: seconds,
    durationStop: "wait",
  });
  return { acknowledged: (result.count - result.errors) * 1000, refused: result.errors };
}

/** Four ghz clients registering 1,000-item requests for `registerSeconds` with the job idle: what registration alone takes. */
async function registrationAlone(checkout: (typeof checkouts)[number], database: { name: string; url: string }): Promise<string[]> {
  const batch = await startBenchService("batch", nextPort++, {
    checkout: checkout.root,
    env: { DATABASE_URL: database.url, BATCH_INTERVAL: "1h", ...loaderLimits },
  });
  let registered = { acknowledged: 0, refused: 0 };
  try {
    registered = await registerFor(batch.address, registerSeconds);
  } finally {
    await batch.stop();
  }
  const { stored } = await storedItems(database.url);
  const { acknowledged, refused } = registered;
  return [database.name + checkout.label, acknowledged.toLocaleString("en-US"), String(refused), perMinute(acknowledged, registerSeconds), stored.toLocaleString("en-US")];
}

async function contended(predictor: BenchService, checkout: (typeof checkouts)[number], database: { name: string; url: string }): Promise<string[]> {
  const batch = await startBenchService("batch", nextPort++, {
    checkout: checkout.root,
    env: { DATABASE_URL: database.url, PREDICTOR_ADDRESS: predictor.address, BATCH_INTERVAL: "1s", ...loaderLimits },
  });
  const client = new GrpcClient(batch.address);
  let registered = { acknowledged: 0, refused: 0 };
  let drainSeconds = NaN;
  const start = performance.now();
  try {
    registered = await registerFor(batch.address, contendedSeconds);
    // The backlog drains (or stops moving: a connection that lost its writes never catches up).
    let last = -1;
    for (let stalled = 0; stalled < 10; ) {
      const status = await client.unary(BatchJobService.method.getJobStatus, {}, { deadlineMs: Date.now() + 10_000 });
      if (status.pendingItems === 0n) {
        drainSeconds = (performance.now() - start) / 1000;
        break;
      }
      stalled = Number(status.pendingItems) === last ? stalled + 1 : 0;
      last = Number(status.pendingItems);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  } finally {
    client.close();
    await batch.stop();
  }
  const { stored, predicted } = await storedItems(database.url);
  const { acknowledged, refused } = registered;
  return [
    database.name + checkout.label,
    acknowledged.toLocaleString("en-US"),
    String(refused),
    perMinute(acknowledged, contendedSeconds),
    Number.isNaN(drainSeconds) ? "never" : perMinute(predicted, drainSeconds),
    stored.toLocaleString("en-US"),
    (acknowledged - stored).toLocaleString("en-US"),
  ];
}

const bulkRows: string[][] = [];
const contendedRows: string[][] = [];
const aloneRows: string[][] = [];
const predictor = await startBenchService("predictor", 50190);
try {
  for (const checkout of checkouts) {
    for (const database of freshDatabases(`bulk${bulkRows.length}`)) {
      bulkRows.push(await bulk(predictor, checkout, database));
      console.log(bulkRows.at(-1)!.join("\t"));
    }
    for (const database of freshDatabases(`contended${contendedRows.length}`)) {
      contendedRows.push(await contended(predictor, checkout, database));
      console.log(contendedRows.at(-1)!.join("\t"));
    }
    for (const database of freshDatabases(`alone${aloneRows.length}`)) {
      aloneRows.push(await registrationAlone(checkout, database));
      console.log(aloneRows.at(-1)!.join("\t"));
    }
  }
} finally {
  await predictor.stop();
  rmSync(sqliteDir, { recursive: true, force: true });
  for (const name of pgNames) execFileSync("psql", [adminUrl, "-q", "-c", `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`]);
}

await writeDocSection(
  "batch",
  `
## BatchJob end to end: items per minute

Measured ${new Date().toISOString().slice(0, 10)} on ${await machineSummary()}; nothing pinned; PostgreSQL 15 from Debian
with default settings; SQLite through better-sqlite3 (WAL, synchronous FULL: every acknowledged
write is on disk).${baseline ? " Rows marked baseline ran the services of another checkout in the same run." : ""} The seed required 100 items/minute; the targets
here (issue 23) are 2 M items/min end to end on SQLite and 1.5 M on PostgreSQL while clients
register (contended, below), and 5 M items/min for registration alone.

Bulk: ${itemCount.toLocaleString("en-US")} items registered with RegisterItems (10,000 per call), then one job run
(RunJobNow) that claims them 5,000 at a time, predicts them through the Predictor (1,000 rows
per request, 4 in flight) and stores the results.

${table(["database", "items", "register s", "registered/min", "job s", "predicted/min", "end to end /min"], bulkRows)}

Contended: four ghz clients, each on its own connection, call RegisterItems (1,000 items each) for
${contendedSeconds} s (the calls in flight at the end are awaited and counted) while the job runs every second
in the service's worker thread; then the backlog drains. The services run with per-client limits
above what the clients send (LIMIT_RATE=100000: the default 50 calls a second would cap a client
at 3 M items a minute). "stored" is counted in the database
itself after the service stopped; "lost" is acknowledged minus stored.

${table(["database", "acknowledged", "refused", "acknowledged/min", "predicted/min (until drained)", "stored", "lost"], contendedRows)}

Registration alone: the same four ghz clients for ${registerSeconds} s with the job idle; "stored" counted in the database.

${table(["database", "acknowledged", "refused", "acknowledged/min", "stored"], aloneRows)}

Reproduce: \`npm run bench:batch\` (bench/batch.ts; BENCH_ITEMS and BENCH_CONTENDED_SECONDS set the
sizes, BENCH_REGISTER_SECONDS the registration-alone run; BENCH_BASELINE=<checkout> adds another checkout's services, e.g. \`git worktree add
/tmp/base <commit> && (cd /tmp/base && npm ci)\`).
`,
);
console.log("wrote docs/benchmarks.md");
