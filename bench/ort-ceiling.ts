// onnxruntime alone, in one process, on whatever core it was pinned to (bench/oip.ts runs it with
// taskset -c 0): model runs of ROWS rows for SECONDS seconds, printing rows per second. The
// ceiling of any server computing this model on one core.
import { readFile } from "node:fs/promises";
import { parseModelMetadata } from "../services/model/metadata.js";
import { openOnnxModel } from "../services/model/onnx-model.js";

const [folder, rowsText, secondsText] = process.argv.slice(2);
const rows = Number(rowsText);
const metadata = parseModelMetadata(await readFile(`${folder}/metadata.json`, "utf8"));
const classifier = (await openOnnxModel(await readFile(`${folder}/model.onnx`), metadata, { intraOpThreads: 1 })).classifier!;
const sample = classifier.metadata.sample_input;
const features = Float32Array.from(Array.from({ length: rows }, (_, i) => sample[i % sample.length]).flat());
for (let i = 0; i < 50; i++) await classifier.run(features, rows);
const end = performance.now() + Number(secondsText) * 1000;
let done = 0;
const started = performance.now();
while (performance.now() < end) {
  await classifier.run(features, rows);
  done += rows;
}
console.log(Math.round(done / ((performance.now() - started) / 1000)));
