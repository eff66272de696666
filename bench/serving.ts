// The serving path side by side in one run, with h2load (one connection; the server pinned to
// core 0, h2load on core 1): a bare grpc-js reference server (bench/reference-server.ts), the
// same plus one onnxruntime run per call, our echo service, the Predictor at 1/100/1,000 rows
// (metrics on and off), the Proxy's PredictLabel vs a direct Predict at 1 and 50 streams, and
// the registry's GetModelVersionByAlias on SQLite and PostgreSQL. Each figure is the median
// of BENCH_RUNS runs (default 3) with the spread. Writes its section of docs/benchmarks.md.
//
// BENCH_BASELINE=<another checkout with its npm packages> measures that checkout's Predictor,
// Proxy and registry in the same run, for before/after ratios from one machine and one hour.
//
//   npm run bench:serving        (installs h2load first; about 12 minutes, 20 with a baseline)
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { EchoRequestSchema } from "../gen/mlmesh/echo/v1/echo_pb.js";
import { PredictRequestSchema } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { PredictLabelRequestSchema } from "../gen/mlmesh/proxy/v1/proxy_pb.js";
import { GetModelVersionByAliasRequestSchema, ModelRegistryService } from "../gen/mlmesh/registry/v1/registry_pb.js";
import { GrpcClient } from "../services/runtime/grpc-client.js";
import { checkGrpc, grpcFrame, h2load, medianRun, type MedianResult } from "./h2load.js";
import { machineSummary, repoRoot, startBenchService, table, writeDocSection, type BenchService } from "./support.js";

const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const runs = Number(process.env.BENCH_RUNS ?? 3);
const baseline = process.env.BENCH_BASELINE;
const rowCounts = [1, 100, 1000];
const iris = [5.1, 3.5, 1.4, 0.2];

const checkouts = [
  { label: "now", root: repoRoot },
  ...(baseline ? [{ label: `baseline ${execFileSync("git", ["-C", baseline, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim()}`, root: baseline }] : []),
];

const predictBody = (rows: number) =>
  grpcFrame(toBinary(PredictRequestSchema, create(PredictRequestSchema, { model: "iris_svc", rows: Array.from({ length: rows }, () => ({ values: iris })) })));
const echoBody = (rows: number) => grpcFrame(toBinary(EchoRequestSchema, create(EchoRequestSchema, { values: Array.from({ length: rows }, () => iris).flat() })));
const predictLabelBody = grpcFrame(toBinary(PredictLabelRequestSchema, create(PredictLabelRequestSchema, { rows: [{ values: iris }] })));

/** One figure: what was measured, and h2load's median run. */
interface Figure extends MedianResult {
  readonly name: string;
  readonly checkout: string;
  readonly streams: number;
  readonly rows: number;
}
const figures: Figure[] = [];

async function measure(name: string, checkout: string, url: string, body: Uint8Array, streams: number, rows = 1): Promise<Figure> {
  await checkGrpc(url, body);
  const result = await medianRun(runs, () => h2load({ url, body, streams, seconds, warmupSeconds: 2, cpus: "1" }));
  const figure = { name, checkout, streams, rows, ...result };
  figures.push(figure);
  console.log(`${name} [${checkout}]\t${streams} streams\t${Math.round(result.rps)} req/s (${Math.round(result.min)}-${Math.round(result.max)})\tp50 ${result.p50Ms.toFixed(3)} ms`);
  return figure;
}

/** The bare reference server on core 0 (bench/reference-server.ts). */
async function startReference(port: number, withOrt: boolean): Promise<BenchService> {
  const child = spawn("taskset", ["-c", "0", process.execPath, "--import", "tsx", join(repoRoot, "bench/reference-server.ts")], {
    env: { ...process.env, REFERENCE_PORT: String(port), REFERENCE_ORT: withOrt ? "1" : "0" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    child.stdout.once("data", () => resolve());
    child.once("exit", () => reject(new Error("the reference server exited")));
  });
  return {
    address: `127.0.0.1:${port}`,
    pid: child.pid!,
    stop: () => {
      child.kill("SIGTERM");
      return exited;
    },
  };
}

// 1. The ceilings: the bare reference (with and without onnxruntime) and our echo service.
for (const withOrt of [false, true]) {
  const reference = await startReference(50300, withOrt);
  try {
    for (const rows of withOrt ? [1] : rowCounts) {
      await measure(withOrt ? "bare grpc-js + 1 onnxruntime run per call" : "bare grpc-js, fixed bytes", "-", `http://${reference.address}/mlmesh.predictor.v1.PredictorService/Predict`, predictBody(rows), 50, rows);
    }
  } finally {
    await reference.stop();
  }
}
const echo = await startBenchService("echo", "ECHO_PORT", 50301, { cpus: "0" });
try {
  for (const rows of rowCounts) await measure("echo service", "-", `http://${echo.address}/mlmesh.echo.v1.EchoService/Echo`, echoBody(rows), 50, rows);
} finally {
  await echo.stop();
}

// 2. The Predictor at 1/100/1,000 rows; metrics off as well as on (their cost).
for (const checkout of checkouts) {
  for (const metrics of checkout.label === "now" ? ["on", "off"] : ["on"]) {
    const predictor = await startBenchService("predictor", "PREDICTOR_PORT", 50302, { cpus: "0", checkout: checkout.root, env: { METRICS: metrics } });
    try {
      for (const rows of metrics === "on" ? rowCounts : [1, 100]) {
        await measure(`Predictor, metrics ${metrics}`, checkout.label, `http://${predictor.address}/mlmesh.predictor.v1.PredictorService/Predict`, predictBody(rows), 50, rows);
      }
    } finally {
      await predictor.stop();
    }
  }
}

// 3. The Proxy (three backends on one Predictor, both on core 0) vs a direct Predict.
for (const checkout of checkouts) {
  const predictor = await startBenchService("predictor", "PREDICTOR_PORT", 50303, { cpus: "0", checkout: checkout.root });
  const proxy = await startBenchService("proxy", "PROXY_PORT", 50304, { cpus: "0", checkout: checkout.root, env: { PREDICTOR_PORT: "50303" } });
  try {
    for (const streams of [1, 50]) {
      await measure("direct Predict", checkout.label, `http://${predictor.address}/mlmesh.predictor.v1.PredictorService/Predict`, predictBody(1), streams);
      await measure("Proxy PredictLabel", checkout.label, `http://${proxy.address}/mlmesh.proxy.v1.ProxyService/PredictLabel`, predictLabelBody, streams);
    }
  } finally {
    await Promise.all([proxy.stop(), predictor.stop()]);
  }
}

// 4. The registry's alias lookup on SQLite and PostgreSQL.
const sqliteDir = mkdtempSync(join(tmpdir(), "mlmesh-bench-serving-"));
const adminUrl = execFileSync(`${repoRoot}scripts/start-postgres.sh`, { encoding: "utf8" }).trim();
const pgNames: string[] = [];
try {
  for (const checkout of checkouts) {
    const tag = checkout.label === "now" ? "now" : "baseline";
    const pgName = `mlmesh_bench_serving_${tag}_${Date.now()}`;
    execFileSync("psql", [adminUrl, "-q", "-c", `CREATE DATABASE ${pgName}`]);
    pgNames.push(pgName);
    for (const database of [
      { name: "SQLite", url: `file:${join(sqliteDir, `${tag}.db`)}` },
      { name: "PostgreSQL", url: adminUrl.replace(/\/postgres$/, `/${pgName}`) },
    ]) {
      const registry = await startBenchService("registry", "REGISTRY_PORT", 50305, { cpus: "0", checkout: checkout.root, env: { DATABASE_URL: database.url } });
      try {
        const client = new GrpcClient(registry.address);
        const deadlineMs = Date.now() + 10_000;
        const { project } = await client.unary(ModelRegistryService.method.createProject, { name: "bench" }, { deadlineMs });
        const { model } = await client.unary(ModelRegistryService.method.createModel, { projectId: project!.id, name: "iris_svc" }, { deadlineMs });
        await client.unary(ModelRegistryService.method.createModelVersion, { modelId: model!.id, sourceUri: "file://models/iris_svc/1/model.onnx" }, { deadlineMs });
        await client.unary(ModelRegistryService.method.setModelVersionAlias, { modelId: model!.id, alias: "production", version: 1 }, { deadlineMs });
        client.close();
        const body = grpcFrame(toBinary(GetModelVersionByAliasRequestSchema, create(GetModelVersionByAliasRequestSchema, { modelId: model!.id, alias: "production" })));
        await measure(`GetModelVersionByAlias, ${database.name}`, checkout.label, `http://${registry.address}/mlmesh.registry.v1.ModelRegistryService/GetModelVersionByAlias`, body, 50);
      } finally {
        await registry.stop();
      }
    }
  }
} finally {
  rmSync(sqliteDir, { recursive: true, force: true });
  for (const name of pgNames) execFileSync("psql", [adminUrl, "-q", "-c", `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`]);
}

// The tables.
const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const find = (name: string, checkout: string, streams: number, rows = 1) => figures.find((f) => f.name === name && f.checkout === checkout && f.streams === streams && f.rows === rows);
const allRows = figures.map((f) => [
  f.name,
  f.checkout,
  String(f.rows),
  String(f.streams),
  `${fmt(f.rps)} (${fmt(f.min)}–${fmt(f.max)})`,
  fmt(f.rps * f.rows),
  f.p50Ms.toFixed(3),
  f.p99Ms.toFixed(3),
]);
const reference = find("bare grpc-js, fixed bytes", "-", 50)!;
const ratio = (a: Figure | undefined, b: Figure | undefined, of: (f: Figure) => number = (f) => f.rps) => (a && b ? (of(a) / of(b)).toFixed(2) : "–");
const targetRows = checkouts.map(({ label }) => {
  const predictor = (rows: number) => find("Predictor, metrics on", label, 50, rows);
  const base = baseline ? find("Predictor, metrics on", checkouts[1].label, 50, 100) : undefined;
  return [
    label,
    `${ratio(predictor(1), reference)} (≥ 0.85)`,
    `${fmt((predictor(100)?.rps ?? 0) * 100)}${base ? ` = ${ratio(predictor(100), base)}x baseline (≥ 3)` : ""}`,
    `${ratio(find("Proxy PredictLabel", label, 1), find("direct Predict", label, 1), (f) => f.p50Ms)} (≤ 2)`,
    `${ratio(find("Proxy PredictLabel", label, 50), find("direct Predict", label, 50))} (≥ 0.3)`,
    `${fmt(find("GetModelVersionByAlias, SQLite", label, 50)?.rps ?? 0)} / ${fmt(find("GetModelVersionByAlias, PostgreSQL", label, 50)?.rps ?? 0)} (≥ 5,000)`,
  ];
});
const metricsOn = (rows: number) => find("Predictor, metrics on", "now", 50, rows);
const metricsOff = (rows: number) => find("Predictor, metrics off", "now", 50, rows);

await writeDocSection(
  "serving",
  `
## The serving path: reference, echo, Predictor, Proxy and registry with h2load

One HTTP/2 connection from h2load on core 1 (${seconds} s after a 2 s warm-up), the server pinned to core 0
(the Proxy and its Predictor share core 0; PostgreSQL is not pinned). Every figure is the
median of ${runs} runs, with the spread; p50/p99 come from h2load's per-request log of the median run.
"bare grpc-js" is bench/reference-server.ts: a @grpc/grpc-js server answering Predict with
pre-serialized bytes of the right size (no decoding, validation, logging or metrics), with and
without one onnxruntime run per call. Rows marked baseline ran another checkout's services in
the same run. Measured ${new Date().toISOString().slice(0, 10)} on ${await machineSummary()}.

${table(["server", "checkout", "rows/request", "streams", "requests/s (min–max)", "rows/s", "p50 ms", "p99 ms"], allRows)}

Targets (ratios within this run):

${table(["checkout", "Predictor 1 row ÷ bare grpc-js, 50 streams", "Predictor 100-row rows/s", "Proxy p50 ÷ direct p50, 1 stream", "Proxy RPS ÷ direct RPS, 50 streams", "alias lookups/s SQLite / PostgreSQL"], targetRows)}

The cost of metrics (METRICS=off switches the whole metrics path off): Predictor 1 row
${ratio(metricsOn(1), metricsOff(1))}x, 100 rows ${ratio(metricsOn(100), metricsOff(100))}x the requests/s without them (the budget is ≥ 0.95).

Reproduce: \`npm run bench:serving\` (bench/serving.ts; BENCH_SECONDS and BENCH_RUNS set the length,
BENCH_BASELINE=<checkout> adds the baseline rows).
`,
);
console.log("wrote docs/benchmarks.md");
