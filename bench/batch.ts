// Batch throughput end to end: register 100,000 items (10 RegisterItems calls), run the job
// once (RunJobNow) through the Predictor, report items/minute; on SQLite and on PostgreSQL in
// one run. Writes its section of docs/benchmarks.md.
//
//   npm run bench:batch                 (about 1 minute; starts PostgreSQL like npm test)
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BatchJobService } from "../gen/mlmesh/batch/v1/batch_pb.js";
import { GrpcClient } from "../services/runtime/grpc-client.js";
import { machineSummary, repoRoot, startBenchService, table, writeDocSection } from "./support.js";

const itemCount = Number(process.env.BENCH_ITEMS ?? 100_000);
const iris = [
  [5.1, 3.5, 1.4, 0.2],
  [5.9, 3.0, 4.2, 1.5],
  [6.3, 3.3, 6.0, 2.5],
];

const sqliteDir = mkdtempSync(join(tmpdir(), "mlmesh-bench-batch-"));
const adminUrl = execFileSync(`${repoRoot}scripts/start-postgres.sh`, { encoding: "utf8" }).trim();
const pgName = `mlmesh_bench_batch_${Date.now()}`;
execFileSync("psql", [adminUrl, "-q", "-c", `CREATE DATABASE ${pgName}`]);
const databases = [
  { name: "SQLite", url: `file:${join(sqliteDir, "batch.db")}`, port: 50191 },
  { name: "PostgreSQL", url: adminUrl.replace(/\/postgres$/, `/${pgName}`), port: 50192 },
];

const predictor = await startBenchService("predictor", "PREDICTOR_PORT", 50190);
const rows: string[][] = [];
try {
  for (const database of databases) {
    const batch = await startBenchService("batch", "BATCH_PORT", database.port, {
      env: { DATABASE_URL: database.url, PREDICTOR_ADDRESS: predictor.address, BATCH_RUN_JOB_IN_SERVICE: "false" },
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
      const perMinute = (n: number, s: number) => Math.round((n / s) * 60).toLocaleString("en-US");
      rows.push([
        database.name,
        itemCount.toLocaleString("en-US"),
        registerSeconds.toFixed(1),
        perMinute(itemCount, registerSeconds),
        jobSeconds.toFixed(1),
        perMinute(itemCount, jobSeconds),
        perMinute(itemCount, registerSeconds + jobSeconds),
      ]);
      console.log(rows.at(-1)!.join("\t"));
    } finally {
      client.close();
      await batch.stop();
    }
  }
} finally {
  await predictor.stop();
  rmSync(sqliteDir, { recursive: true, force: true });
  execFileSync("psql", [adminUrl, "-q", "-c", `DROP DATABASE IF EXISTS ${pgName} WITH (FORCE)`]);
}

await writeDocSection(
  "batch",
  `
## BatchJob end to end: items per minute

${itemCount.toLocaleString("en-US")} items registered with RegisterItems (10,000 per call), then one job run (RunJobNow) that
claims them 5,000 at a time, predicts them through the Predictor (1,000 rows per request, 4 in
flight) and stores the results. Measured ${new Date().toISOString().slice(0, 10)} on ${await machineSummary()}; nothing pinned;
PostgreSQL 15 from Debian with default settings. The seed required 100 items/minute; the target
here is 100,000.

${table(["database", "items", "register s", "registered/min", "job s", "predicted/min", "end to end /min"], rows)}

Reproduce: \`npm run bench:batch\` (bench/batch.ts; BENCH_ITEMS sets the count).
`,
);
console.log("wrote docs/benchmarks.md");
