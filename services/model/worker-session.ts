import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import type * as ort from "onnxruntime-node";
import { ModelArtifactError } from "./metadata.js";
import type { HostTensor, TensorData } from "./tensors.js";

const workerFile = fileURLToPath(new URL("onnx-session-worker.mjs", import.meta.url));

/**
 * An onnxruntime session in a worker thread of its own (onnx-session-worker.mjs), for a heavy
 * model: onnxruntime-node computes on the calling thread, and a ResNet-50 batch would hold the
 * event loop for a second. Tensors are copied to the worker and outputs come back transferred.
 */
export class WorkerSession {
  readonly #pending = new Map<number, { resolve(outputs: Record<string, HostTensor>): void; reject(error: Error): void }>();
  #nextId = 1;
  #failed: Error | undefined;

  private constructor(
    private readonly worker: Worker,
    /** The graph's inputs and outputs as onnxruntime describes them. */
    readonly metadata: { inputs: ort.InferenceSession.ValueMetadata[]; outputs: ort.InferenceSession.ValueMetadata[] },
  ) {
    worker.on("message", (message: { id: number; outputs?: Record<string, HostTensor>; error?: string }) => {
      const pending = this.#pending.get(message.id);
      if (pending === undefined) return;
      this.#pending.delete(message.id);
      if (message.error !== undefined) pending.reject(new Error(message.error));
      else pending.resolve(message.outputs!);
    });
    const fail = (error: Error) => {
      this.#failed = error;
      for (const pending of this.#pending.values()) pending.reject(error);
      this.#pending.clear();
    };
    worker.on("error", fail);
    worker.on("exit", (code) => fail(new Error(`the model's worker thread exited (${code})`)));
  }

  /** Opens the model in a new worker thread; ModelArtifactError when onnxruntime cannot load it. */
  static open(onnx: Uint8Array, intraOpThreads: number): Promise<WorkerSession> {
    // A compact copy, transferred: the caller's buffer stays as it is.
    const copy = onnx.slice().buffer;
    const worker = new Worker(workerFile, { workerData: { onnx: copy, intraOpThreads }, transferList: [copy] });
    return new Promise((resolve, reject) => {
      worker.once("message", (message: { opened?: WorkerSession["metadata"]; openError?: string }) => {
        if (message.opened !== undefined) resolve(new WorkerSession(worker, message.opened));
        else {
          void worker.terminate();
          reject(new ModelArtifactError(`model.onnx does not load in onnxruntime: ${message.openError}`));
        }
      });
      worker.once("error", (err) => reject(new ModelArtifactError(`the model's worker thread failed to start: ${err.message}`)));
    });
  }

  run(feeds: Readonly<Record<string, HostTensor>>, fetches: readonly string[]): Promise<Record<string, HostTensor>> {
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    const id = this.#nextId++;
    const copies: Record<string, HostTensor> = {};
    const transfer: ArrayBuffer[] = [];
    for (const [name, tensor] of Object.entries(feeds)) {
      // A compact copy of each input (a view may share a larger buffer), transferred.
      const data = (Array.isArray(tensor.data) ? [...tensor.data] : tensor.data.slice()) as TensorData;
      if (!Array.isArray(data)) transfer.push(data.buffer as ArrayBuffer);
      copies[name] = { dtype: tensor.dtype, dims: [...tensor.dims], data };
    }
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.worker.postMessage({ run: { id, feeds: copies, fetches: [...fetches] } }, transfer);
    });
  }

  async release(): Promise<void> {
    if (this.#failed !== undefined) return;
    this.worker.postMessage({ release: true });
    await new Promise<void>((resolve) => this.worker.once("exit", () => resolve()));
  }
}
