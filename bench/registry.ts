// ModelRegistry hot paths with ghz, on SQLite and on PostgreSQL side by side in one run:
// GetModelVersionByAlias (the lookup a deployment makes) and CreateExperiment (a write).
// Writes its section of docs/benchmarks.md.
//
//   npm run bench:registry             (about 2 minutes; starts PostgreSQL like npm test)
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ModelRegistryService } from "../gen/mlmesh/registry/v1/registry_pb.js";
import { GrpcClient } from "../services/runtime/client/grpc-client.js";
import { fmt, machineSummary, measure, repoRoot, startBenchService, table, writeDocSection } from "./support.js";
import { readProcessEnvironment } from "../services/runtime/env/variables.js";

const environment = readProcessEnvironment();

const durationSeconds = Number(environment.BENCH_SECONDS ?? 10);
const warmupSeconds = 3;

const sqliteDir = mkdtempSync(join(tmpdir(), "mlmesh-bench-registry-"));
const adminUrl = execFileSync(`${repoRoot}scripts/start-postgres.sh`, { encoding: "utf8" }).trim();
const pgName = `mlmesh_bench_${Date.now()}`;
execFileSync("psql", [adminUrl, "-q", "-c", `CREATE DATABASE ${pgName}`]);
const databases = [
  { name: "SQLite", url: `file:${join(sqliteDir, "registry.db")}`, port: 50181 },
  { name: "PostgreSQL", url: adminUrl.replace(/\/postgres$/, `/${pgName}`), port: 50182 },
];

const rows: string[][] = [];
try {
  for (const database of databases) {
    const registry = await startBenchService("registry", database.port, {
      cpus: "0",
      env: { DATABASE_URL: database.url },
    });
    try {
      const client = new GrpcClient(registry.address);
      const deadlineMs = Date.now() + 10_000;
      const { project } = await client.unary(ModelRegistryService.method.createProject, { name: "bench" }, { deadlineMs });
      const { model } = await client.unary(ModelRegistryService.method.createModel, { projectId: project!.id, name: "iris_svc" }, { deadlineMs });
      const modelId = model!.id;
      await client.unary(ModelRegistryService.method.createModelVersion, { modelId, sourceUri: "file://models/iris_svc/1/model.onnx" }, { deadlineMs });
      await client.unary(ModelRegistryService.method.setModelVersionAlias, { modelId, alias: "production", version: 1 }, { deadlineMs });
      client.close();
      const scenarios = [
        { rpc: "GetModelVersionByAlias", data: { model_id: modelId, alias: "production" } },
        { rpc: "CreateExperiment", data: { model_id: modelId, parameters: { lr: 0.01 }, evaluations: { accuracy: 0.95 } } },
      ];
      for (const { rpc, data } of scenarios) {
        for (const concurrency of [1, 50]) {
          const call = `mlmesh.registry.v1.ModelRegistryService/${rpc}`;
          const r = await measure({ address: registry.address, call, data, concurrency, durationSeconds, warmupSeconds, cpus: "1" });
          rows.push([database.name, rpc, String(concurrency), fmt.rps(r.rps), fmt.ms(r.p50Ms), fmt.ms(r.p99Ms)]);
          console.log(rows.at(-1)!.join("\t"));
        }
      }
    } finally {
      await registry.stop();
    }
  }
} finally {
  rmSync(sqliteDir, { recursive: true, force: true });
  execFileSync("psql", [adminUrl, "-q", "-c", `DROP DATABASE IF EXISTS ${pgName} WITH (FORCE)`]);
}

await writeDocSection(
  "registry",
  `
## ModelRegistry on SQLite and PostgreSQL

Measured ${new Date().toISOString().slice(0, 10)} on ${await machineSummary()}; registry on core 0, ghz on core 1 (PostgreSQL 15 from
Debian, default settings, unpinned), ${warmupSeconds} s warm-up then ${durationSeconds} s measured, LOG_LEVEL=warn.
GetModelVersionByAlias resolves "production" of a model (two indexed reads); CreateExperiment
inserts one row with three JSON objects.

${table(["database", "RPC", "concurrency", "RPS", "p50 ms", "p99 ms"], rows)}

Reproduce: \`npm run bench:registry\` (bench/registry.ts).
`,
);
console.log("wrote docs/benchmarks.md");
