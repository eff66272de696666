// The ceiling of any server running ResNet-50 on the cores this process is pinned to:
// onnxruntime alone, one intra-op thread, batches of each size run back to back for a few
// seconds, nothing else in the process. Prints JSON: per batch size, images/s and the median
// run time. bench/images.ts runs it under taskset beside the servers it measures.
//   tsx bench/resnet-ceiling.ts <model.onnx> <batch,batch,...> <seconds>
import { readFile } from "node:fs/promises";
import * as ort from "onnxruntime-node";

const [modelPath, batchesText, secondsText] = process.argv.slice(2);
const session = await ort.InferenceSession.create(await readFile(modelPath), { executionProviders: ["cpu"], intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: "all" });
const result: Record<string, { imagesPerSecond: number; p50Ms: number }> = {};
for (const batch of batchesText.split(",").map(Number)) {
  const input = new ort.Tensor("float32", Float32Array.from({ length: batch * 3 * 224 * 224 }, (_, i) => Math.sin(i)), [batch, 3, 224, 224]);
  for (let i = 0; i < 3; i++) await session.run({ input });
  const times: number[] = [];
  const end = performance.now() + Number(secondsText) * 1000;
  while (performance.now() < end) {
    const started = performance.now();
    await session.run({ input });
    times.push(performance.now() - started);
  }
  times.sort((a, b) => a - b);
  result[batch] = { imagesPerSecond: (batch * times.length * 1000) / times.reduce((a, b) => a + b, 0), p50Ms: times[Math.floor(times.length / 2)] };
}
process.stdout.write(`${JSON.stringify(result)}\n`);
