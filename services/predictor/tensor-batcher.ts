import { allocate, type HostTensor, type Signature, type TensorData } from "../model/tensors.js";
import type { RunObserver } from "./inference-batcher.js";

/** Runs the graph once: every input by name, the outputs asked for. */
export type RunTensors = (feeds: Readonly<Record<string, HostTensor>>, fetches: readonly string[]) => Promise<Record<string, HostTensor>>;

interface Pending {
  readonly feeds: Readonly<Record<string, HostTensor>>;
  readonly fetches: readonly string[];
  /** Entries along the batch dimension (the inputs' first). */
  readonly rows: number;
  /** What requests must share to run together: the fetches and every input's dims past the first. */
  readonly key: string;
  readonly queuedAt: number;
  resolve(outputs: Record<string, HostTensor>): void;
  reject(error: unknown): void;
}

/** Whether a graph batches along its first dimension: every input and output dynamic there. */
export function batchable(signature: Signature): boolean {
  return [...signature.inputs, ...signature.outputs].every((t) => t.shape.length >= 1 && t.shape[0] === -1);
}

/**
 * Cross-request batching for any graph that batches along its first dimension (batchable): the
 * tensors of concurrent requests for one model version are concatenated along it and run
 * together, each request answered with its own slice of every output. As the classifiers'
 * InferenceBatcher, an idle model runs a request at once and the requests that arrive during a
 * run go together in the next; `delayMs` (the model's batch_delay_ms) makes an idle model wait
 * that long for company first, up to `maxRows` entries. Requests whose trailing dimensions or
 * outputs differ run in separate batches.
 */
export class TensorBatcher {
  #queue: Pending[] = [];
  #running = false;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly run: RunTensors,
    private readonly options: { readonly maxRows: number; readonly delayMs: number; readonly observe?: RunObserver },
  ) {}

  submit(feeds: Readonly<Record<string, HostTensor>>, fetches: readonly string[]): Promise<Record<string, HostTensor>> {
    const tensors = Object.entries(feeds).sort(([a], [b]) => a.localeCompare(b));
    const rows = tensors[0]?.[1].dims[0] ?? 1;
    const key = `${fetches.join(",")}|${tensors.map(([name, t]) => `${name}:${t.dims.slice(1).join("x")}`).join(";")}`;
    return new Promise((resolve, reject) => {
      this.#queue.push({ feeds, fetches, rows, key, queuedAt: performance.now(), resolve, reject });
      if (this.#running || this.#timer !== undefined) return;
      const queued = this.#queue.reduce((sum, p) => sum + p.rows, 0);
      if (this.options.delayMs > 0 && queued < this.options.maxRows) {
        this.#timer = setTimeout(() => {
          this.#timer = undefined;
          this.#runNext();
        }, this.options.delayMs);
      } else {
        this.#runNext();
      }
    });
  }

  #runNext(): void {
    const batch = this.#takeBatch();
    if (batch.length === 0) {
      this.#running = false;
      return;
    }
    this.#running = true;
    const rows = batch.reduce((sum, p) => sum + p.rows, 0);
    const startedAt = performance.now();
    const feeds = batch.length === 1 ? batch[0].feeds : concatenated(batch, rows);
    this.run(feeds, batch[0].fetches)
      .then(
        (outputs) => {
          this.options.observe?.(rows, performance.now() - startedAt, batch.map((p) => startedAt - p.queuedAt));
          if (batch.length === 1) {
            batch[0].resolve(outputs);
            return;
          }
          let answers: Record<string, HostTensor>[];
          try {
            let offset = 0;
            answers = batch.map((pending) => {
              const answer = sliced(outputs, offset, pending.rows, rows);
              offset += pending.rows;
              return answer;
            });
          } catch (error) {
            for (const pending of batch) pending.reject(error);
            return;
          }
          batch.forEach((pending, i) => pending.resolve(answers[i]));
        },
        (error: unknown) => {
          for (const pending of batch) pending.reject(error);
        },
      )
      .finally(() => this.#runNext());
  }

  /** The oldest request and those queued after it that can share its run, up to maxRows entries. */
  #takeBatch(): Pending[] {
    const first = this.#queue[0];
    if (first === undefined) return [];
    const batch = [first];
    let rows = first.rows;
    const rest: Pending[] = [];
    for (const pending of this.#queue.slice(1)) {
      if (pending.key === first.key && rows + pending.rows <= this.options.maxRows) {
        batch.push(pending);
        rows += pending.rows;
      } else {
        rest.push(pending);
      }
    }
    this.#queue = rest;
    return batch;
  }
}

/** Every input of the batch's requests, concatenated along the first dimension. */
function concatenated(batch: readonly Pending[], rows: number): Record<string, HostTensor> {
  const feeds: Record<string, HostTensor> = {};
  for (const [name, first] of Object.entries(batch[0].feeds)) {
    const perRow = first.dims.slice(1).reduce((a, b) => a * b, 1);
    const data = allocate(first.dtype, rows * perRow);
    let at = 0;
    for (const pending of batch) {
      const part = pending.feeds[name].data;
      if (Array.isArray(data)) for (let i = 0; i < part.length; i++) data[at + i] = (part as string[])[i];
      else (data as Exclude<TensorData, string[]>).set(part as never, at);
      at += part.length;
    }
    feeds[name] = { dtype: first.dtype, dims: [rows, ...first.dims.slice(1)], data };
  }
  return feeds;
}

/** One request's entries [offset, offset + count) of every output. */
function sliced(outputs: Record<string, HostTensor>, offset: number, count: number, rows: number): Record<string, HostTensor> {
  const mine: Record<string, HostTensor> = {};
  for (const [name, tensor] of Object.entries(outputs)) {
    if (tensor.dims[0] !== rows) throw new Error(`output "${name}" has ${tensor.dims[0]} entries for a batch of ${rows}`);
    const perRow = tensor.dims.slice(1).reduce((a, b) => a * b, 1);
    const data = Array.isArray(tensor.data) ? tensor.data.slice(offset * perRow, (offset + count) * perRow) : tensor.data.subarray(offset * perRow, (offset + count) * perRow);
    mine[name] = { dtype: tensor.dtype, dims: [count, ...tensor.dims.slice(1)], data: data as TensorData };
  }
  return mine;
}
