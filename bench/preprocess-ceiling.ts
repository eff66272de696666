// Image preprocessing alone on the cores this process is pinned to: an image model's steps
// (services/model/preprocessing.ts, sharp) on one JPEG, back to back, one image at a time.
// Prints JSON: images/s and the median time per image. bench/images.ts runs it under taskset.
//   tsx bench/preprocess-ceiling.ts <model folder> <image file> <seconds>
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { parseModelMetadata } from "../services/model/metadata.js";
import { Preprocessor } from "../services/model/preprocessing.js";

const [folder, imagePath, secondsText] = process.argv.slice(2);
const metadata = parseModelMetadata(await readFile(join(folder, "metadata.json"), "utf8"));
const steps = metadata.preprocessing!;
const preprocessor = new Preprocessor(steps, { name: steps.input, dtype: "float32", shape: [-1, 3, 224, 224] });
const image = await readFile(imagePath);
const limits = { maxBytes: 64 * 1024 * 1024, maxPixels: 100_000_000 };
for (let i = 0; i < 5; i++) await preprocessor.run([image], limits);
const times: number[] = [];
const end = performance.now() + Number(secondsText) * 1000;
while (performance.now() < end) {
  const started = performance.now();
  await preprocessor.run([image], limits);
  times.push(performance.now() - started);
}
times.sort((a, b) => a - b);
process.stdout.write(`${JSON.stringify({ imagesPerSecond: (times.length * 1000) / times.reduce((a, b) => a + b, 0), p50Ms: times[Math.floor(times.length / 2)] })}\n`);
