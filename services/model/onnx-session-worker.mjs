// One ONNX model's onnxruntime session in a worker thread (worker-session.ts starts it).
// onnxruntime-node runs inference synchronously on the calling thread: a heavy model run here
// leaves the Predictor's event loop free for health checks, small models and new requests.
// Messages in: {run: {id, feeds, fetches}} or {release: true}; out: {opened}, {id, outputs}, {id, error}.
import { parentPort, workerData } from "node:worker_threads";
import * as ort from "onnxruntime-node";

const { onnx, intraOpThreads } = workerData;
const session = await ort.InferenceSession.create(new Uint8Array(onnx), {
  executionProviders: ["cpu"],
  intraOpNumThreads: intraOpThreads,
  interOpNumThreads: 1,
  graphOptimizationLevel: "all",
}).catch((err) => {
  parentPort.postMessage({ openError: err instanceof Error ? err.message : String(err) });
  return undefined;
});

if (session !== undefined) {
  const plain = (m) => ({ name: m.name, isTensor: m.isTensor, type: m.type, shape: m.shape });
  parentPort.postMessage({ opened: { inputs: session.inputMetadata.map(plain), outputs: session.outputMetadata.map(plain) } });
  parentPort.on("message", async (message) => {
    if (message.release) {
      await session.release();
      parentPort.close();
      return;
    }
    const { id, feeds, fetches } = message.run;
    try {
      const inputs = {};
      for (const [name, t] of Object.entries(feeds)) inputs[name] = new ort.Tensor(t.dtype, t.data, t.dims);
      const results = await session.run(inputs, fetches);
      const outputs = {};
      const transfer = [];
      for (const name of fetches) {
        const t = results[name];
        outputs[name] = { dtype: t.type, dims: [...t.dims], data: t.data };
        if (!Array.isArray(t.data)) transfer.push(t.data.buffer);
      }
      parentPort.postMessage({ id, outputs }, transfer);
    } catch (err) {
      parentPort.postMessage({ id, error: err instanceof Error ? err.message : String(err) });
    }
  });
}
