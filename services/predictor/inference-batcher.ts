/** Runs one inference over rows packed row-major; resolves to probabilities packed the same way. */
export type RunInference = (features: Float32Array, rowCount: number) => Promise<Float32Array>;

/** Told of every run: its rows, how long it took, and how long each of its requests waited for it. */
export type RunObserver = (rows: number, computeMs: number, waitsMs: readonly number[]) => void;

interface Pending {
  readonly features: Float32Array;
  readonly rowCount: number;
  /** performance.now() when the request was queued. */
  readonly queuedAt: number;
  resolve(probabilities: Float32Array): void;
  reject(error: unknown): void;
}

/**
 * Coalesces concurrent requests for one model into shared inference calls. onnxruntime's
 * per-call overhead dominates small requests (a 1-row run costs nearly as much as a 100-row
 * one), so under load this cuts inference CPU per request several times over.
 *
 * Batching happens only while a run is under way: an idle model runs a request at once (no
 * added latency), and the requests that arrive meanwhile run together as the next batch.
 */
export class InferenceBatcher {
  private queue: Pending[] = [];
  private running = false;

  constructor(
    private readonly run: RunInference,
    private readonly featureCount: number,
    private readonly classCount: number,
    /** Most rows per run (a single larger request still runs alone). */
    private readonly maxRows: number,
    private readonly observe?: RunObserver,
  ) {}

  classify(features: Float32Array, rowCount: number): Promise<Float32Array> {
    return new Promise((resolve, reject) => {
      this.queue.push({ features, rowCount, queuedAt: performance.now(), resolve, reject });
      if (!this.running) this.runNext();
    });
  }

  private runNext(): void {
    const batch = this.takeBatch();
    if (batch.length === 0) {
      this.running = false;
      return;
    }
    this.running = true;
    const rowCount = batch.reduce((sum, pending) => sum + pending.rowCount, 0);
    const startedAt = performance.now();
    this.run(batch.length === 1 ? batch[0].features : this.concat(batch, rowCount), rowCount)
      .then(
        (probabilities) => {
          this.observe?.(
            rowCount,
            performance.now() - startedAt,
            batch.map((pending) => startedAt - pending.queuedAt),
          );
          let start = 0;
          for (const pending of batch) {
            const end = start + pending.rowCount * this.classCount;
            pending.resolve(probabilities.subarray(start, end));
            start = end;
          }
        },
        (error: unknown) => {
          for (const pending of batch) pending.reject(error);
        },
      )
      .finally(() => this.runNext());
  }

  /** The oldest queued requests, up to maxRows rows (at least one request). */
  private takeBatch(): Pending[] {
    let rows = 0;
    let count = 0;
    while (count < this.queue.length && (count === 0 || rows + this.queue[count].rowCount <= this.maxRows)) {
      rows += this.queue[count].rowCount;
      count++;
    }
    return this.queue.splice(0, count);
  }

  private concat(batch: readonly Pending[], rowCount: number): Float32Array {
    const features = new Float32Array(rowCount * this.featureCount);
    let offset = 0;
    for (const pending of batch) {
      features.set(pending.features, offset);
      offset += pending.features.length;
    }
    return features;
  }
}
