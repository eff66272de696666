import { VersionMetrics } from "./metrics.js";

/** A cumulative count and duration (nanoseconds), as the Open Inference Protocol reports them. */
export interface Duration {
  count: number;
  ns: number;
}

const newDuration = (): Duration => ({ count: 0, ns: 0 });
const add = (d: Duration, ms: number) => {
  d.count++;
  d.ns += Math.round(ms * 1e6);
};

/**
 * Cumulative statistics of one model version (the protocol's ModelStatistics): requests that
 * succeeded or failed and their time in the server, the time they waited for a model run and
 * spent in one, input preparation and output extraction, and the model runs per batch size.
 * Counted for native Predict and ModelInfer alike, and passed on to the Prometheus metrics.
 */
export class InferenceStats {
  readonly success = newDuration();
  readonly fail = newDuration();
  readonly queue = newDuration();
  readonly computeInput = newDuration();
  readonly computeInfer = newDuration();
  readonly computeOutput = newDuration();
  /** Rows inferred by successful requests. */
  inferenceCount = 0;
  /** Model runs (one run may serve several requests). */
  executionCount = 0;
  /** Epoch ms of the last request; 0 before the first. */
  lastInference = 0;
  /** Rows per run -> the runs of that size. */
  readonly batches = new Map<number, Duration>();
  readonly #metrics: VersionMetrics;

  constructor(model: string, version: number) {
    this.#metrics = new VersionMetrics(model, version);
  }

  /** One model run of `rows` rows that took `computeMs`, for requests that waited `waitsMs` each. */
  recordRun(rows: number, computeMs: number, waitsMs: readonly number[]): void {
    this.#metrics.run(rows, computeMs, waitsMs);
    this.executionCount++;
    let batch = this.batches.get(rows);
    if (batch === undefined) this.batches.set(rows, (batch = newDuration()));
    add(batch, computeMs);
    for (const wait of waitsMs) {
      add(this.queue, wait);
      add(this.computeInfer, computeMs);
    }
  }

  /** One request: its rows, and the time it took in each step (undefined when it failed there). */
  recordRequest(outcome: { ok: boolean; rows: number; totalMs: number; inputMs: number; outputMs?: number }): void {
    this.#metrics.request(outcome.ok, outcome.rows, outcome.totalMs);
    this.lastInference = Date.now();
    add(outcome.ok ? this.success : this.fail, outcome.totalMs);
    add(this.computeInput, outcome.inputMs);
    if (outcome.outputMs !== undefined) add(this.computeOutput, outcome.outputMs);
    if (outcome.ok) this.inferenceCount += outcome.rows;
  }
}
