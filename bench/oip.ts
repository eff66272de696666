// The Open Inference Protocol side by side, in one run: ModelInfer with raw tensors on the
// mlmesh Predictor, the Predictor's native Predict, and Seldon MLServer 1.7.1 serving the same
// ONNX file through a minimal onnxruntime runtime (bench/mlserver/onnx_runtime.py), adaptive
// batching off and on — at 1, 100 and 1,000 rows per request. Every server runs pinned to core
// 0, h2load on core 1 (one connection, 50 streams); each figure is the median of 3 runs.
// Writes its section of docs/benchmarks.md.
//
//   npm run bench:oip        (installs h2load and MLServer first; about 6 minutes)
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import { ModelInferRequestSchema } from "../gen/inference/open_inference_pb.js";
import { PredictRequestSchema } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { checkGrpc, grpcFrame, h2load, medianRun } from "./h2load.js";
import { startMlserver } from "./mlserver.js";
import { machineSummary, repoRoot, startBenchService, table, writeDocSection } from "./support.js";
import { readProcessEnvironment } from "../services/runtime/env/variables.js";

const environment = readProcessEnvironment();

const rowCounts = [1, 100, 1000];
const streams = 50;
const seconds = Number(environment.BENCH_SECONDS ?? 5);
const runs = Number(environment.BENCH_RUNS ?? 3);
const iris = [
  [5.1, 3.5, 1.4, 0.2],
  [5.9, 3.0, 4.2, 1.5],
  [6.3, 3.3, 6.0, 2.5],
];
const rowsOf = (n: number) => Array.from({ length: n }, (_, i) => iris[i % 3]);

/** ModelInfer with one raw FP32 input, as tritonclient sends it. */
function modelInferBody(rows: number): Buffer {
  const features = Float32Array.from(rowsOf(rows).flat());
  const request = create(ModelInferRequestSchema, {
    modelName: "iris_svc",
    inputs: [{ name: "input", datatype: "FP32", shape: [BigInt(rows), 4n] }],
    outputs: [{ name: "probabilities" }],
    rawInputContents: [new Uint8Array(features.buffer)],
  });
  return grpcFrame(toBinary(ModelInferRequestSchema, request));
}

function predictBody(rows: number): Buffer {
  return grpcFrame(toBinary(PredictRequestSchema, create(PredictRequestSchema, { model: "iris_svc", rows: rowsOf(rows).map((values) => ({ values })) })));
}


interface Row {
  readonly server: string;
  readonly rows: number;
  readonly rps: number;
  readonly min: number;
  readonly max: number;
  readonly meanMs: number;
}

const results: Row[] = [];
async function measure(server: string, url: string, bodies: (rows: number) => Buffer): Promise<void> {
  for (const rows of rowCounts) {
    const body = bodies(rows);
    await checkGrpc(url, body);
    const r = await medianRun(runs, () => h2load({ url, body, streams, seconds, warmupSeconds: 2, cpus: "1" }));
    results.push({ server, rows, ...r });
    console.log(`${server}\t${rows} rows\t${Math.round(r.rps)} req/s (${Math.round(r.min)}-${Math.round(r.max)})\t${Math.round(r.rps * rows)} rows/s`);
  }
}

const predictor = await startBenchService("predictor", 50197, { cpus: "0" });
try {
  await measure("mlmesh ModelInfer (raw)", `http://${predictor.address}/inference.GRPCInferenceService/ModelInfer`, modelInferBody);
  await measure("mlmesh Predict (native)", `http://${predictor.address}/mlmesh.predictor.v1.PredictorService/Predict`, predictBody);
} finally {
  await predictor.stop();
}
for (const batching of [false, true]) {
  // MLServer with adaptive batching off or on (up to 64 requests or 2 ms).
  const mlserver = await startMlserver({
    model: "iris_svc",
    runtime: "onnx_runtime.py",
    runtimeClass: "OnnxClassifier",
    modelUri: join(repoRoot, "models/iris_svc/1/model.onnx"),
    httpPort: 50198,
    grpcPort: 50199,
    batching: batching ? { maxBatchSize: 64, maxBatchTime: 0.002 } : undefined,
  });
  try {
    await measure(`MLServer 1.7.1 ModelInfer (raw), batching ${batching ? "on" : "off"}`, "http://127.0.0.1:50199/inference.GRPCInferenceService/ModelInfer", modelInferBody);
  } finally {
    await mlserver.stop();
  }
}

// The ceiling: onnxruntime alone computing 1,000-row runs on core 0, no server around it.
const { stdout: ceilingText } = await promisify(execFile)("taskset", ["-c", "0", process.execPath, "--import", "tsx", join(repoRoot, "bench/ort-ceiling.ts"), join(repoRoot, "models/iris_svc/1"), "1000", String(seconds)]);
const ortRowsPerSecond = Number(ceilingText.trim());
console.log(`onnxruntime alone, 1000-row runs: ${ortRowsPerSecond} rows/s`);

const find = (server: string, rows: number) => results.find((r) => r.server.startsWith(server) && r.rows === rows)!;
const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const tableRows = results.map((r) => [r.server, String(r.rows), `${fmt(r.rps)} (${fmt(r.min)}–${fmt(r.max)})`, fmt(r.rps * r.rows), r.meanMs.toFixed(2)]);
const ratios = rowCounts.map((rows) => {
  const oip = find("mlmesh ModelInfer", rows);
  const native = find("mlmesh Predict", rows);
  const bestMlserver = Math.max(...results.filter((r) => r.server.startsWith("MLServer") && r.rows === rows).map((r) => r.rps));
  return [String(rows), (oip.rps / native.rps).toFixed(2), (oip.rps / bestMlserver).toFixed(1)];
});

await writeDocSection(
  "oip",
  `
## Open Inference Protocol: mlmesh vs MLServer, raw tensors vs native Predict

ModelInfer with one raw FP32 input (raw_input_contents, as tritonclient sends it) and the
probabilities requested, against the mlmesh Predictor and against Seldon MLServer 1.7.1 serving
the same model.onnx through a minimal onnxruntime runtime (bench/mlserver/onnx_runtime.py: one
intra-op thread, inference in the server process — parallel_workers 0), adaptive batching off
and on (64 requests or 2 ms); and mlmesh's native Predict with the same rows. Every server
pinned to core 0, h2load on core 1 (one connection, ${streams} streams, ${seconds} s after a 2 s warm-up);
requests/s are the median of ${runs} runs with the spread. Measured ${new Date().toISOString().slice(0, 10)} on
${await machineSummary()}.

${table(["server", "rows/request", "requests/s (min–max)", "rows/s", "mean ms"], tableRows)}

${table(["rows/request", "ModelInfer ÷ native Predict", "mlmesh ModelInfer ÷ best MLServer"], ratios)}

The ceiling at 1,000 rows is the model itself: onnxruntime alone, running 1,000-row batches of
this RBF SVM on core 0 with nothing else, computes ${fmt(ortRowsPerSecond)} rows/s; mlmesh's ModelInfer
reaches ${Math.round((find("mlmesh ModelInfer", 1000).rps * 1000 * 100) / ortRowsPerSecond)} % of it. Five times the best MLServer figure at 1,000 rows would be
${fmt(5 * Math.max(...results.filter((r) => r.server.startsWith("MLServer") && r.rows === 1000).map((r) => r.rps)) * 1000)} rows/s: more than the model can be computed at on one core, whatever serves it.

Reproduce: \`npm run bench:oip\` (bench/oip.ts; BENCH_SECONDS and BENCH_RUNS set the length).
`,
);
console.log("wrote docs/benchmarks.md");
