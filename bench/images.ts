// Image models side by side, in one run: ResNet-50 (random weights: the architecture is what
// costs, pretrained weights cannot be downloaded here) as onnxruntime alone computes it (the
// ceiling), served by the mlmesh Predictor, and served by Seldon MLServer 1.7.1 through a minimal
// onnxruntime runtime (bench/mlserver/onnx_tensor_runtime.py) — ModelInfer with raw FP32 tensors
// of 1, 8 and 32 images; then the Predictor's preprocessing (a 640x480 JPEG decoded, resized,
// cropped and normalised), ClassifyImages end to end, and the prediction cache's hits. Every
// server and ceiling pinned to core 0, h2load on core 1. Writes its section of docs/benchmarks.md.
//
//   npm run bench:images       (installs h2load and MLServer first; about 5 minutes)
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import sharp from "sharp";
import { ModelInferRequestSchema } from "../gen/inference/open_inference_pb.js";
import { ClassifyImagesRequestSchema } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { readProcessEnvironment } from "../services/runtime/env/variables.js";
import { checkGrpc, grpcFrame, h2load, medianRun, type MedianResult } from "./h2load.js";
import { startMlserver } from "./mlserver.js";
import { machineSummary, repoRoot, startBenchService, table, writeDocSection } from "./support.js";

const exec = promisify(execFile);
const environment = readProcessEnvironment();
const batches = [1, 8, 32];
const seconds = Number(environment.BENCH_SECONDS ?? 5);
const runs = Number(environment.BENCH_RUNS ?? 3);
/** Two requests in flight: one computing, one queued (cross-request batching may join them). */
const streams = 2;
const maxMessage = String(64 * 1024 * 1024);

await exec(join(repoRoot, "scripts/make-resnet50.sh"), [], { cwd: repoRoot });
const resnet = join(repoRoot, ".cache/models/resnet50");
const repo = mkdtempSync(join(tmpdir(), "mlmesh-bench-images-"));
symlinkSync(resnet, join(repo, "resnet50"));
// A photo-sized JPEG with detail in it (a smooth gradient would decode faster than photos do).
const noise = Buffer.from(Array.from({ length: 640 * 480 * 3 }, (_, i) => (i * 7919) % 251));
const jpeg = await sharp(noise, { raw: { width: 640, height: 480, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
const jpegFile = join(repo, "photo.jpg");
writeFileSync(jpegFile, jpeg);

function modelInferBody(batch: number): Buffer {
  const images = Float32Array.from({ length: batch * 3 * 224 * 224 }, (_, i) => Math.sin(i));
  const request = create(ModelInferRequestSchema, {
    modelName: "resnet50",
    inputs: [{ name: "input", datatype: "FP32", shape: [BigInt(batch), 3n, 224n, 224n] }],
    outputs: [{ name: "probabilities" }],
    rawInputContents: [new Uint8Array(images.buffer)],
  });
  return grpcFrame(toBinary(ModelInferRequestSchema, request));
}
const classifyBody = grpcFrame(toBinary(ClassifyImagesRequestSchema, create(ClassifyImagesRequestSchema, { model: "resnet50", images: [jpeg], topK: 5 })));

const tsx = (script: string, args: string[]) => exec("taskset", ["-c", "0", process.execPath, "--import", "tsx", join(repoRoot, script), ...args], { cwd: repoRoot, maxBuffer: 1024 * 1024 });
/** Latency at concurrency 1: a timed window after a warm-up. */
const load = (url: string, body: Buffer, streamCount: number) => medianRun(runs, () => h2load({ url, body, streams: streamCount, seconds, warmupSeconds: 2, cpus: "1" }));
/**
 * Throughput of `batch`-image requests: a fixed number of them, about `seconds` of onnxruntime's
 * work and at least 6 (a 32-image request takes seconds: a timed window would count too few).
 */
const throughput = (url: string, body: Buffer, batch: number) =>
  medianRun(runs, () => h2load({ url, body, streams, seconds, warmupSeconds: 0, requests: Math.max(6, Math.ceil((seconds * ceiling[batch].imagesPerSecond) / batch)), cpus: "1" }));

// 1. The ceilings: onnxruntime alone, and the preprocessing alone, on core 0.
const ceiling = JSON.parse((await tsx("bench/resnet-ceiling.ts", [join(resnet, "1/model.onnx"), batches.join(","), String(seconds)])).stdout) as Record<string, { imagesPerSecond: number; p50Ms: number }>;
const prep = JSON.parse((await tsx("bench/preprocess-ceiling.ts", [join(resnet, "1"), jpegFile, String(seconds)])).stdout) as { imagesPerSecond: number; p50Ms: number };
console.log("onnxruntime alone", ceiling, "preprocessing alone", prep);

// 2. The mlmesh Predictor.
const served: Record<string, Record<number, MedianResult>> = { mlmesh: {}, MLServer: {} };
const latency: Record<string, MedianResult> = {};
/** A one-image onnxruntime run inside the Predictor (its ModelStatistics batch_stats), in ms. */
let inServerRunMs = Number.NaN;
/** onnxruntime alone's one-image p50, measured again right after the Predictor's latency runs. */
let ceilingAfter = Number.NaN;
const predictor = await startBenchService("predictor", 50297, { cpus: "0", env: { MODEL_DIR: repo, MAX_MESSAGE_BYTES: maxMessage } });
try {
  const infer = `http://${predictor.address}/inference.GRPCInferenceService/ModelInfer`;
  for (const batch of batches) {
    const body = modelInferBody(batch);
    await checkGrpc(infer, body);
    served.mlmesh[batch] = await throughput(infer, body, batch);
    console.log(`mlmesh ModelInfer ${batch} images: ${(served.mlmesh[batch].rps * batch).toFixed(1)} images/s`);
  }
  latency.mlmeshInfer = await load(infer, modelInferBody(1), 1);
  const classify = `http://${predictor.address}/mlmesh.predictor.v1.PredictorService/ClassifyImages`;
  await checkGrpc(classify, classifyBody);
  latency.mlmeshClassify = await load(classify, classifyBody, 1);
  // The ceiling again, right after (the machine drifts by several ms per image within a run):
  // the latency ratios use the mean of the two.
  ceilingAfter = (JSON.parse((await tsx("bench/resnet-ceiling.ts", [join(resnet, "1/model.onnx"), "1", String(seconds)])).stdout) as Record<string, { p50Ms: number }>)[1].p50Ms;
  // Where the time goes: the Predictor's own statistics of its one-image runs.
  const stats = (await (await fetch(`http://${predictor.address}/v2/models/resnet50/stats`)).json()) as {
    model_stats: { batch_stats: { batch_size: number; compute_infer: { count: number; ns: number } }[] }[];
  };
  const oneImage = stats.model_stats[0].batch_stats.find((b) => b.batch_size === 1)!;
  inServerRunMs = oneImage.compute_infer.ns / oneImage.compute_infer.count / 1e6;
} finally {
  await predictor.stop();
}

// The same, the model on the event loop's thread (no worker): what the worker thread costs.
const onMainThread = await startBenchService("predictor", 50296, { cpus: "0", env: { MODEL_DIR: repo, MAX_MESSAGE_BYTES: maxMessage, PREDICTOR_WORKER_MODEL_BYTES: String(2 ** 40) } });
try {
  latency.mlmeshInferMain = await load(`http://${onMainThread.address}/inference.GRPCInferenceService/ModelInfer`, modelInferBody(1), 1);
} finally {
  await onMainThread.stop();
}

// 3. The cache: the same JPEG again and again, answered from memory after the first.
const cached = await startBenchService("predictor", 50298, { cpus: "0", env: { MODEL_DIR: repo, PREDICTOR_CACHE_MODELS: "resnet50" } });
try {
  const classify = `http://${cached.address}/mlmesh.predictor.v1.PredictorService/ClassifyImages`;
  await checkGrpc(classify, classifyBody);
  latency.cacheHit = await load(classify, classifyBody, 1);
} finally {
  await cached.stop();
}

// 4. MLServer, the same model file and tensors.
const mlserver = await startMlserver({
  model: "resnet50",
  runtime: "onnx_tensor_runtime.py",
  runtimeClass: "OnnxTensorModel",
  modelUri: join(resnet, "1/model.onnx"),
  httpPort: 50299,
  grpcPort: 50300,
  grpcMaxMessageBytes: Number(maxMessage),
});
try {
  const infer = "http://127.0.0.1:50300/inference.GRPCInferenceService/ModelInfer";
  for (const batch of batches) {
    const body = modelInferBody(batch);
    await checkGrpc(infer, body);
    served.MLServer[batch] = await throughput(infer, body, batch);
    console.log(`MLServer ModelInfer ${batch} images: ${(served.MLServer[batch].rps * batch).toFixed(1)} images/s`);
  }
  latency.mlserverInfer = await load(infer, modelInferBody(1), 1);
} finally {
  await mlserver.stop();
  rmSync(repo, { recursive: true, force: true });
}

const f1 = (n: number) => n.toFixed(1);
const f2 = (n: number) => n.toFixed(2);
const images = (server: string, batch: number) => served[server][batch].rps * batch;
const throughputRows = batches.map((batch) => [
  String(batch),
  f1(ceiling[batch].imagesPerSecond),
  `${f1(images("mlmesh", batch))} (${f1(served.mlmesh[batch].min * batch)}–${f1(served.mlmesh[batch].max * batch)})`,
  f2(images("mlmesh", batch) / ceiling[batch].imagesPerSecond),
  `${f1(images("MLServer", batch))} (${f1(served.MLServer[batch].min * batch)}–${f1(served.MLServer[batch].max * batch)})`,
  f2(images("mlmesh", batch) / images("MLServer", batch)),
]);
const ortAlone = (ceiling[1].p50Ms + ceilingAfter) / 2;
const ortPlusDecode = ortAlone + prep.p50Ms;
const latencyRows = [
  ["onnxruntime alone, 1 image (mean of before and after the servers)", `${f1(ortAlone)} (${f1(ceiling[1].p50Ms)}, ${f1(ceilingAfter)})`],
  ["preprocessing alone, one 640x480 JPEG", f1(prep.p50Ms)],
  ["onnxruntime alone + preprocessing", f1(ortPlusDecode)],
  ["mlmesh ClassifyImages, the JPEG (top 5)", `${f1(latency.mlmeshClassify.p50Ms)} (${f2(latency.mlmeshClassify.p50Ms / ortPlusDecode)}x)`],
  ["mlmesh ModelInfer, one image as FP32", `${f1(latency.mlmeshInfer.p50Ms)} (${f2(latency.mlmeshInfer.p50Ms / ortAlone)}x onnxruntime alone)`],
  ["of which onnxruntime's run inside the Predictor (mean, ModelStatistics)", `${f1(inServerRunMs)} (${f2(inServerRunMs / ortAlone)}x onnxruntime alone)`],
  ["mlmesh ModelInfer, the model on the event loop's thread (no worker)", `${f1(latency.mlmeshInferMain.p50Ms)} (${f2(latency.mlmeshInferMain.p50Ms / ortAlone)}x)`],
  ["MLServer 1.7.1 ModelInfer, one image as FP32", f1(latency.mlserverInfer.p50Ms)],
  ["mlmesh ClassifyImages, a cache hit", `${f2(latency.cacheHit.p50Ms)} (${f1(latency.mlmeshClassify.p50Ms / latency.cacheHit.p50Ms)}x faster than computing)`],
];

await writeDocSection(
  "images",
  `
## Image models: ResNet-50 against onnxruntime alone and MLServer, preprocessing, cache

ResNet-50 (the architecture with random weights: pretrained weights cannot be downloaded here;
the cost is the architecture's) as onnxruntime alone computes it on core 0 with one intra-op
thread (the ceiling: bench/resnet-ceiling.ts), served by the mlmesh Predictor (in its worker
thread, one intra-op thread) and by Seldon MLServer 1.7.1 through a minimal onnxruntime runtime
(bench/mlserver/onnx_tensor_runtime.py, one intra-op thread, parallel_workers 0), each pinned
to core 0: ModelInfer with raw FP32 tensors of 1, 8 and 32 images, h2load on core 1 (one
connection, ${streams} streams; a fixed number of requests, about ${seconds} s of onnxruntime's work and at
least 6, after one to warm up; the median of ${runs} runs with the spread). Latencies at concurrency 1
are over ${seconds} s after a 2 s warm-up.
Measured ${new Date().toISOString().slice(0, 10)} on ${await machineSummary()}.

${table(["images/request", "onnxruntime alone, images/s", "mlmesh, images/s (min–max)", "mlmesh ÷ onnxruntime", "MLServer 1.7.1, images/s (min–max)", "mlmesh ÷ MLServer"], throughputRows)}

At concurrency 1, median ms per request:

${table(["what", "p50 ms"], latencyRows)}

Where the time goes: the Predictor's own statistics put a one-image onnxruntime run at
${f1(inServerRunMs)} ms inside the server against ${f1(ortAlone)} ms alone (${f1(ceiling[1].p50Ms)} before the servers ran, ${f1(ceilingAfter)} after: the
machine drifts), so of the ${f1(latency.mlmeshInfer.p50Ms - ortAlone)} ms a one-image ModelInfer adds over onnxruntime alone,
${f1(inServerRunMs - ortAlone)} ms are the model's run itself inside the server, and ${f1(latency.mlmeshInfer.p50Ms - inServerRunMs)} ms the protocol
(decoding and checking the request, the hop to the model's worker thread and back).

Preprocessing alone (bench/preprocess-ceiling.ts: a 640x480 JPEG decoded, resized to a shorter
side of 256, centre-cropped to 224x224 and normalised, with sharp, on core 0): ${f1(prep.imagesPerSecond)} images/s
per core, ${Math.round((prep.p50Ms / ortPlusDecode) * 100)} % of a one-image request's work (the rest is the model).
A cache hit runs no preprocessing and no model: it allocates no tensor.

Reproduce: \`npm run bench:images\` (bench/images.ts; BENCH_SECONDS and BENCH_RUNS set the length).
`,
);
console.log("wrote docs/benchmarks.md");
