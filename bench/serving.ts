// The serving path side by side in one run, with h2load (one connection; the server pinned to
// core 0, h2load on core 1): a bare grpc-js reference server (bench/reference-server.ts), the
// same plus one onnxruntime run per call, bare node:http2 and a lean HTTP/2 server prototype
// (bench/prototypes/lean-h2-server.ts) with and without it, our echo service, the Predictor at 1/100/1,000 rows
// (metrics on and off; packed rows and ModelInfer's raw tensor at 100 and 1,000), the Proxy's PredictLabel vs a direct Predict at 1 and 50 streams, and
// the registry's GetModelVersionByAlias on SQLite and PostgreSQL. Each figure is the median
// of BENCH_RUNS runs (default 3) with the spread. Writes its section of docs/benchmarks.md.
//
// BENCH_BASELINE=<another checkout with its npm packages> measures that checkout's Predictor,
// Proxy and registry in the same run, for before/after ratios from one machine and one hour.
//
// BENCH_ONLY=predictor,proxy,registry picks groups (a part does not write the doc).
//
//   npm run bench:serving        (installs h2load first; about 12 minutes, 20 with a baseline)
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { ModelInferRequestSchema } from "../gen/inference/open_inference_pb.js";
import { EchoRequestSchema } from "../gen/mlmesh/echo/v1/echo_pb.js";
import { PredictRequestSchema } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { PredictLabelRequestSchema } from "../gen/mlmesh/proxy/v1/proxy_pb.js";
import { GetModelVersionByAliasRequestSchema, ModelRegistryService } from "../gen/mlmesh/registry/v1/registry_pb.js";
import { GrpcClient } from "../services/runtime/client/grpc-client.js";
import { checkGrpc, grpcFrame, h2load, medianOf, type LoadResult, type MedianResult } from "./h2load.js";
import { machineSummary, repoRoot, startBenchService, table, writeDocSection, type BenchService } from "./support.js";
import { readProcessEnvironment } from "../services/runtime/env/variables.js";

const environment = readProcessEnvironment();

const seconds = Number(environment.BENCH_SECONDS ?? 5);
const runs = Number(environment.BENCH_RUNS ?? 3);
const baseline = environment.BENCH_BASELINE;
const rowCounts = [1, 100, 1000];
const iris = [5.1, 3.5, 1.4, 0.2];

const checkouts = [
  { label: "now", root: repoRoot },
  ...(baseline ? [{ label: `baseline ${execFileSync("git", ["-C", baseline, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim()}`, root: baseline }] : []),
];

const predictBody = (rows: number) =>
  grpcFrame(toBinary(PredictRequestSchema, create(PredictRequestSchema, { model: "iris_svc", rows: Array.from({ length: rows }, () => ({ values: iris })) })));
/** Predict with the rows as packed_values and row_width, answered with packed_probabilities. */
const packedPredictBody = (rows: number) =>
  grpcFrame(toBinary(PredictRequestSchema, create(PredictRequestSchema, { model: "iris_svc", packedValues: Array.from({ length: rows }, () => iris).flat(), rowWidth: 4, packedResponse: true })));
/** ModelInfer with one raw FP32 input, as tritonclient sends it (the same rows). */
const modelInferBody = (rows: number) =>
  grpcFrame(
    toBinary(
      ModelInferRequestSchema,
      create(ModelInferRequestSchema, {
        modelName: "iris_svc",
        inputs: [{ name: "input", datatype: "FP32", shape: [BigInt(rows), 4n] }],
        outputs: [{ name: "probabilities" }],
        rawInputContents: [new Uint8Array(Float32Array.from(Array.from({ length: rows }, () => iris).flat()).buffer)],
      }),
    ),
  );
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

/** One load to measure: a server's method with a body, at a number of streams. */
interface Scenario {
  readonly name: string;
  readonly checkout: string;
  readonly url: string;
  readonly body: Uint8Array;
  readonly streams: number;
  readonly rows: number;
}

/**
 * Measures scenarios whose servers all run at once, in rounds: each round runs every scenario
 * once, so that the machine's drift (a noisy neighbour, a CPU frequency change) spreads over
 * all of them instead of landing on whichever ran at the time. A figure is the median round.
 */
async function measureInterleaved(scenarios: readonly Scenario[]): Promise<void> {
  for (const s of scenarios) await checkGrpc(s.url, s.body);
  const results = scenarios.map(() => [] as LoadResult[]);
  for (let round = 0; round < runs; round++) {
    for (const [i, s] of scenarios.entries()) results[i].push(await h2load({ url: s.url, body: s.body, streams: s.streams, seconds, warmupSeconds: 2, cpus: "1" }));
  }
  for (const [i, s] of scenarios.entries()) {
    const result = medianOf(results[i]);
    figures.push({ name: s.name, checkout: s.checkout, streams: s.streams, rows: s.rows, ...result });
    console.log(`${s.name} [${s.checkout}]\t${s.rows} rows\t${s.streams} streams\t${Math.round(result.rps)} req/s (${Math.round(result.min)}-${Math.round(result.max)})\tp50 ${result.p50Ms.toFixed(3)} ms`);
  }
}

/** Starts servers, measures the scenarios they serve, stops them whatever happens. */
async function withServers(start: (servers: BenchService[]) => Promise<Scenario[]>): Promise<void> {
  const servers: BenchService[] = [];
  try {
    await measureInterleaved(await start(servers));
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
  }
}

/** The bare reference server on core 0 (bench/reference-server.ts), with its REFERENCE_* settings. */
async function startReference(port: number, withOrt: boolean, env: Record<string, string> = {}): Promise<BenchService> {
  const child = spawn("taskset", ["-c", "0", process.execPath, "--import", "tsx", join(repoRoot, "bench/reference-server.ts")], {
    env: { ...environment, REFERENCE_PORT: String(port), REFERENCE_ORT: withOrt ? "1" : "0", ...env },
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

const predictPath = "/mlmesh.predictor.v1.PredictorService/Predict";
const only = new Set((environment.BENCH_ONLY ?? "predictor,proxy,registry").split(","));
let port = 50300;

// 1. The ceilings (the bare reference with and without onnxruntime, our echo service) and the
// Predictor at 1/100/1,000 rows, with metrics off as well as on (their cost).
if (only.has("predictor")) {
  await withServers(async (servers) => {
    const scenarios: Scenario[] = [];
    const add = (server: BenchService, name: string, checkout: string, path: string, body: (rows: number) => Uint8Array, rowCounts: number[]) => {
      if (!servers.includes(server)) servers.push(server);
      for (const rows of rowCounts) scenarios.push({ name, checkout, url: `http://${server.address}${path}`, body: body(rows), streams: 50, rows });
    };
    add(await startReference(port++, false), "bare grpc-js, fixed bytes", "-", predictPath, predictBody, rowCounts);
    add(await startReference(port++, true), "bare grpc-js + 1 onnxruntime run per call", "-", predictPath, predictBody, [1]);
    // What the services' native gRPC stands on (node:http2), and the next step's prototype: a
    // purpose-built HTTP/2 server (bench/prototypes/lean-h2-server.ts), both with and without
    // one onnxruntime run per call.
    for (const [stack, label] of [["node-http2", "bare node:http2"], ["lean", "lean HTTP/2 server prototype"]]) {
      add(await startReference(port++, false, { REFERENCE_STACK: stack }), `${label}, fixed bytes`, "-", predictPath, predictBody, [1]);
      add(await startReference(port++, true, { REFERENCE_STACK: stack }), `${label} + 1 onnxruntime run per call`, "-", predictPath, predictBody, [1]);
    }
    add(await startBenchService("echo", port++, { cpus: "0" }), "echo service", "-", "/mlmesh.echo.v1.EchoService/Echo", echoBody, rowCounts);
    for (const checkout of checkouts) {
      for (const metrics of checkout.label === "now" ? ["on", "off"] : ["on"]) {
        const predictor = await startBenchService("predictor", port++, { cpus: "0", checkout: checkout.root, env: { METRICS: metrics } });
        add(predictor, `Predictor, metrics ${metrics}`, checkout.label, predictPath, predictBody, metrics === "on" ? rowCounts : [1, 100]);
        if (checkout.label !== "now" || metrics === "off") continue;
        // The same rows packed (packed_values in, packed_probabilities out), and as ModelInfer's raw tensor.
        add(predictor, "Predictor, packed rows", checkout.label, predictPath, packedPredictBody, [100, 1000]);
        add(predictor, "Predictor, ModelInfer raw", checkout.label, "/inference.GRPCInferenceService/ModelInfer", modelInferBody, [100, 1000]);
      }
    }
    return scenarios;
  });
}

// 2. The Proxy (three backends on one Predictor, both on core 0) vs a direct Predict.
if (only.has("proxy")) {
  await withServers(async (servers) => {
    const scenarios: Scenario[] = [];
    for (const checkout of checkouts) {
      const predictorPort = port++;
      const predictor = await startBenchService("predictor", predictorPort, { cpus: "0", checkout: checkout.root });
      const proxy = await startBenchService("proxy", port++, { cpus: "0", checkout: checkout.root, env: { PREDICTOR_PORT: String(predictorPort) } });
      servers.push(predictor, proxy);
      for (const streams of [1, 50]) {
        scenarios.push({ name: "direct Predict", checkout: checkout.label, url: `http://${predictor.address}${predictPath}`, body: predictBody(1), streams, rows: 1 });
        scenarios.push({ name: "Proxy PredictLabel", checkout: checkout.label, url: `http://${proxy.address}/mlmesh.proxy.v1.ProxyService/PredictLabel`, body: predictLabelBody, streams, rows: 1 });
      }
      if (checkout.label !== "now") continue;
      // The floor of any proxy here: a bare grpc-js server that forwards each call's bytes once to
      // the same Predictor (no decoding, validation, logging or metrics) with the mesh's client,
      // as the Proxy asks one Predictor once per request (PredictModels).
      const hop = await startReference(port++, false, { REFERENCE_FORWARD: predictor.address });
      servers.push(hop);
      for (const streams of [1, 50]) {
        scenarios.push({ name: "bare hop, mesh client", checkout: "-", url: `http://${hop.address}${predictPath}`, body: predictBody(1), streams, rows: 1 });
      }
    }
    return scenarios;
  });
}

// 3. The registry's alias lookup on SQLite and PostgreSQL.
if (only.has("registry")) {
  const sqliteDir = mkdtempSync(join(tmpdir(), "mlmesh-bench-serving-"));
  const adminUrl = execFileSync(`${repoRoot}scripts/start-postgres.sh`, { encoding: "utf8" }).trim();
  const pgNames: string[] = [];
  try {
    await withServers(async (servers) => {
      const scenarios: Scenario[] = [];
      for (const checkout of checkouts) {
        const tag = checkout.label === "now" ? "now" : "baseline";
        const pgName = `mlmesh_bench_serving_${tag}_${Date.now()}`;
        execFileSync("psql", [adminUrl, "-q", "-c", `CREATE DATABASE ${pgName}`]);
        pgNames.push(pgName);
        for (const database of [
          { name: "SQLite", url: `file:${join(sqliteDir, `${tag}.db`)}` },
          { name: "PostgreSQL", url: adminUrl.replace(/\/postgres$/, `/${pgName}`) },
        ]) {
          const registry = await startBenchService("registry", port++, { cpus: "0", checkout: checkout.root, env: { DATABASE_URL: database.url } });
          servers.push(registry);
          const client = new GrpcClient(registry.address);
          const deadlineMs = Date.now() + 10_000;
          const { project } = await client.unary(ModelRegistryService.method.createProject, { name: "bench" }, { deadlineMs });
          const { model } = await client.unary(ModelRegistryService.method.createModel, { projectId: project!.id, name: "iris_svc" }, { deadlineMs });
          await client.unary(ModelRegistryService.method.createModelVersion, { modelId: model!.id, sourceUri: "file://models/iris_svc/1/model.onnx" }, { deadlineMs });
          await client.unary(ModelRegistryService.method.setModelVersionAlias, { modelId: model!.id, alias: "production", version: 1 }, { deadlineMs });
          client.close();
          const body = grpcFrame(toBinary(GetModelVersionByAliasRequestSchema, create(GetModelVersionByAliasRequestSchema, { modelId: model!.id, alias: "production" })));
          const url = `http://${registry.address}/mlmesh.registry.v1.ModelRegistryService/GetModelVersionByAlias`;
          scenarios.push({ name: `GetModelVersionByAlias, ${database.name}`, checkout: checkout.label, url, body, streams: 50, rows: 1 });
        }
      }
      return scenarios;
    });
  } finally {
    rmSync(sqliteDir, { recursive: true, force: true });
    for (const name of pgNames) execFileSync("psql", [adminUrl, "-q", "-c", `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`]);
  }
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
    `${ratio(predictor(1), reference)} (≥ 1.0)`,
    `${fmt((predictor(100)?.rps ?? 0) * 100)}${base ? ` = ${ratio(predictor(100), base)}x baseline` : ""}`,
    `${ratio(find("Proxy PredictLabel", label, 1), find("direct Predict", label, 1), (f) => f.p50Ms)} (≤ 2)`,
    `${ratio(find("Proxy PredictLabel", label, 50), find("direct Predict", label, 50))} (≥ 0.5)`,
    `${fmt(find("GetModelVersionByAlias, SQLite", label, 50)?.rps ?? 0)} / ${fmt(find("GetModelVersionByAlias, PostgreSQL", label, 50)?.rps ?? 0)} (≥ 5,000)`,
  ];
});
const packedRows = (rows: number) => find("Predictor, packed rows", "now", 50, rows);
const modelInferRaw = (rows: number) => find("Predictor, ModelInfer raw", "now", 50, rows);
const metricsOn = (rows: number) => find("Predictor, metrics on", "now", 50, rows);
const metricsOff = (rows: number) => find("Predictor, metrics off", "now", 50, rows);

if (only.size < 3) {
  console.log("BENCH_ONLY ran a part: docs/benchmarks.md left as it is");
  process.exit(0);
}
await writeDocSection(
  "serving",
  `
## The serving path: reference, echo, Predictor, Proxy and registry with h2load

One HTTP/2 connection from h2load on core 1 (${seconds} s after a 2 s warm-up), the servers pinned to core 0
(the Proxy and its Predictor share core 0; PostgreSQL is not pinned). The servers of a group
(ceilings and Predictors; Proxies; registries) run at once and are measured in ${runs} interleaved
rounds, so that the machine's drift spreads over all of them; every figure is the median round,
with the spread; p50/p99 come from h2load's per-request log of that round.
"bare grpc-js" is bench/reference-server.ts: a @grpc/grpc-js server answering Predict with
pre-serialized bytes of the right size (no decoding, validation, logging or metrics), with and
without one onnxruntime run per call. Rows marked baseline ran another checkout's services in
the same run. Measured ${new Date().toISOString().slice(0, 10)} on ${await machineSummary()}.

${table(["server", "checkout", "rows/request", "streams", "requests/s (min–max)", "rows/s", "p50 ms", "p99 ms"], allRows)}

Targets (ratios within this run):

${table(["checkout", "Predictor 1 row ÷ bare grpc-js, 50 streams", "Predictor 100-row rows/s", "Proxy p50 ÷ direct p50, 1 stream", "Proxy RPS ÷ direct RPS, 50 streams", "alias lookups/s SQLite / PostgreSQL"], targetRows)}

Packed rows (PredictRequest.packed_values with row_width, answered with packed_probabilities)
against ModelInfer with one raw FP32 tensor, the same rows on the same Predictor: 100 rows
${ratio(packedRows(100), modelInferRaw(100))}x, 1,000 rows ${ratio(packedRows(1000), modelInferRaw(1000))}x the requests/s (the target is ≥ 1 at 100 rows); Row
messages at 100 rows are ${ratio(metricsOn(100), modelInferRaw(100))}x.

The cost of metrics (METRICS=off switches the whole metrics path off): Predictor 1 row
${ratio(metricsOn(1), metricsOff(1))}x, 100 rows ${ratio(metricsOn(100), metricsOff(100))}x the requests/s without them (the budget is ≥ 0.95).

Per call, the next step (1 row, 50 streams): the lean HTTP/2 server prototype answers
${ratio(find("lean HTTP/2 server prototype, fixed bytes", "-", 50), find("bare node:http2, fixed bytes", "-", 50))}x the requests/s of bare node:http2 with fixed bytes and ${ratio(find("lean HTTP/2 server prototype + 1 onnxruntime run per call", "-", 50), find("bare node:http2 + 1 onnxruntime run per call", "-", 50))}x with one
onnxruntime run per call; bare node:http2 with one onnxruntime run is ${ratio(find("bare node:http2 + 1 onnxruntime run per call", "-", 50), reference)}x the bare grpc-js echo,
the lean prototype with one ${ratio(find("lean HTTP/2 server prototype + 1 onnxruntime run per call", "-", 50), reference)}x.

The Proxy's floor: a bare hop forwarding each call once with the mesh's client has
${ratio(find("bare hop, mesh client", "-", 1), find("direct Predict", "now", 1), (f) => f.p50Ms)}x the direct p50 at concurrency 1 and ${ratio(find("bare hop, mesh client", "-", 50), find("direct Predict", "now", 50))}x the direct requests/s at 50 streams.

Reproduce: \`npm run bench:serving\` (bench/serving.ts; BENCH_SECONDS and BENCH_RUNS set the length,
BENCH_BASELINE=<checkout> adds the baseline rows).
`,
);
console.log("wrote docs/benchmarks.md");
