import type { Logger } from "../runtime/observability/logger.js";
import { counter, histogram, latencyBuckets } from "../runtime/observability/metrics.js";
import type { InferenceEvent } from "./inference.js";
import type { LoadedVersion } from "./serving-table.js";

/*
 * Shadows of an alias's traffic policy: a sample of the calls the policy routes is run again on
 * each shadow version after the answer was computed (the call's answer is sent meanwhile: the
 * work starts on the next turn of the event loop), and the two answers are compared. At most
 * PREDICTOR_SHADOW_CONCURRENCY shadow runs at a time: a call drawn while they are all busy is
 * skipped and counted. A run slower than PREDICTOR_SHADOW_TIMEOUT is counted as timed out; it
 * keeps its slot until onnxruntime returns (it cannot be stopped), so a hung shadow costs
 * skipped comparisons, never a primary call.
 */

const shadowCalls = counter({
  name: "mlmesh_shadow_calls_total",
  help: "Calls copied to a shadow version, by outcome: ok, failed (the shadow refused or failed the input), timeout, or skipped_busy (every shadow slot was taken).",
  labelNames: ["model", "primary_version", "shadow_version", "outcome"],
});
const shadowRows = counter({
  name: "mlmesh_shadow_rows_total",
  help: "Rows compared between a primary and a shadow version (classifiers).",
  labelNames: ["model", "primary_version", "shadow_version"],
});
const shadowAgreeingRows = counter({
  name: "mlmesh_shadow_agreeing_rows_total",
  help: "Rows on which the shadow's label equals the primary's (classifiers); ÷ mlmesh_shadow_rows_total: label agreement.",
  labelNames: ["model", "primary_version", "shadow_version"],
});
const shadowDifference = histogram({
  name: "mlmesh_shadow_mean_abs_difference",
  help: "Per compared call, the mean absolute difference between the primary's and the shadow's probabilities (classifiers) or numeric outputs (tensor models).",
  labelNames: ["model", "primary_version", "shadow_version"],
  buckets: [0.0001, 0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1],
});
const shadowLatency = histogram({
  name: "mlmesh_shadow_latency_difference_seconds",
  help: "Per compared call, the shadow's inference time minus the primary's (negative: the shadow was faster), in seconds.",
  labelNames: ["model", "primary_version", "shadow_version"],
  buckets: [-0.1, -0.01, -0.001, 0, 0.001, 0.01, 0.1, 1, ...latencyBuckets.filter((b) => b > 1)],
});

/** One comparison of a primary's answer with a shadow's. */
export interface ShadowComparison {
  readonly model: string;
  readonly primaryVersion: number;
  readonly shadowVersion: number;
  /** The primary call's request id (from its call), when it had one. */
  readonly call: InferenceEvent["call"];
  /** Rows compared, and those whose label agreed (classifiers; 0 and 0 for tensors). */
  readonly rows: number;
  readonly agreeingRows: number;
  /** Mean absolute difference of probabilities or numeric outputs; NaN when not comparable. */
  readonly meanAbsDifference: number;
  /** Shadow inference time minus the primary's. */
  readonly latencyDifferenceMs: number;
  /** The shadow's probabilities and its labels (classifiers), or outputs (tensors), for the prediction log. */
  readonly probabilities?: Float32Array;
  readonly labels?: readonly string[];
  readonly outputs?: Readonly<Record<string, import("../model/tensors.js").HostTensor>>;
  /** Why the shadow failed or was cut off; unset when it answered. */
  readonly failure?: { readonly code: number; readonly message: string };
  readonly shadowMs: number;
}

export interface ShadowRunnerOptions {
  readonly concurrency: number;
  readonly timeoutMs: number;
  readonly logger: Logger;
  /** Told of each comparison (and of each failed or timed-out shadow): the prediction log. */
  readonly onCompared?: (comparison: ShadowComparison, event: InferenceEvent) => void;
}

/** The metric series of one (model, primary, shadow) pair, looked up once. */
class PairMetrics {
  readonly ok;
  readonly failed;
  readonly timeout;
  readonly skippedBusy;
  readonly rows;
  readonly agreeingRows;
  readonly difference;
  readonly latency;

  /** Why the shadow can never take the primary's input (computed once: versions do not change). */
  readonly incompatible: string | undefined;

  constructor(primary: LoadedVersion, shadow: LoadedVersion) {
    this.incompatible = incompatibility(primary, shadow);
    const labels = [primary.name, String(primary.version), String(shadow.version)] as const;
    this.ok = shadowCalls.labels(...labels, "ok");
    this.failed = shadowCalls.labels(...labels, "failed");
    this.timeout = shadowCalls.labels(...labels, "timeout");
    this.skippedBusy = shadowCalls.labels(...labels, "skipped_busy");
    this.rows = shadowRows.labels(...labels);
    this.agreeingRows = shadowAgreeingRows.labels(...labels);
    this.difference = shadowDifference.labels(...labels);
    this.latency = shadowLatency.labels(...labels);
  }
}

export class ShadowRunner {
  #running = 0;
  /** Weak: a version taken out of service leaves with its entries. */
  readonly #pairs = new WeakMap<LoadedVersion, WeakMap<LoadedVersion, PairMetrics>>();

  constructor(private readonly options: ShadowRunnerOptions) {}

  /** Shadow runs under way (slots taken). */
  get running(): number {
    return this.#running;
  }

  /** The Inference observer: draws the call's shadows and starts those drawn. Returns at once. */
  observe(event: InferenceEvent): void {
    if (event.shadows === undefined || event.shadows.length === 0 || event.error !== undefined) return;
    if (event.input === undefined && event.feeds === undefined) return;
    for (const shadow of event.shadows) {
      if (shadow.loaded === event.loaded) continue; // the call was answered by the shadow's version itself
      if (shadow.samplePercent < 100 && Math.random() * 100 >= shadow.samplePercent) continue;
      const metrics = this.#metricsOf(event.loaded, shadow.loaded);
      if (metrics.incompatible !== undefined) {
        // Known to fail without running: counted, and recorded once the answer is on its way
        // (like every shadow's record: never on the primary's path), no slot taken.
        metrics.failed.inc();
        const failure = { code: 9, message: metrics.incompatible };
        const loaded = shadow.loaded;
        setImmediate(() => this.#tell({ ...uncompared(event, loaded, 0), latencyDifferenceMs: 0, failure }, event));
        continue;
      }
      if (this.#running >= this.options.concurrency) {
        metrics.skippedBusy.inc();
        continue;
      }
      this.#running++;
      shadow.loaded.enter();
      setImmediate(() => {
        void this.#run(event, shadow.loaded, metrics).finally(() => {
          this.#running--;
          shadow.loaded.leave();
        });
      });
    }
  }

  #metricsOf(primary: LoadedVersion, shadow: LoadedVersion): PairMetrics {
    let byShadow = this.#pairs.get(primary);
    if (byShadow === undefined) this.#pairs.set(primary, (byShadow = new WeakMap()));
    let metrics = byShadow.get(shadow);
    if (metrics === undefined) byShadow.set(shadow, (metrics = new PairMetrics(primary, shadow)));
    return metrics;
  }

  async #run(event: InferenceEvent, shadow: LoadedVersion, metrics: PairMetrics): Promise<void> {
    const started = performance.now();
    const work = runOn(shadow, event);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), this.options.timeoutMs);
    });
    const outcome = await Promise.race([work.then((answer) => ({ answer }), (error: unknown) => ({ error })), timedOut]);
    clearTimeout(timer);
    const shadowMs = performance.now() - started;
    const base = uncompared(event, shadow, shadowMs);
    if (outcome === "timeout") {
      metrics.timeout.inc();
      this.#tell({ ...base, failure: { code: 4, message: `the shadow did not answer within ${this.options.timeoutMs} ms (PREDICTOR_SHADOW_TIMEOUT)` } }, event);
      await work.catch(() => undefined); // the slot is held until onnxruntime returns
      return;
    }
    if ("error" in outcome) {
      metrics.failed.inc();
      const err = outcome.error as { code?: unknown; rawMessage?: string; message?: string };
      this.#tell({ ...base, failure: { code: typeof err.code === "number" ? err.code : 2, message: err.rawMessage ?? err.message ?? String(outcome.error) } }, event);
      return;
    }
    metrics.ok.inc();
    const comparison = { ...base, ...compare(event, shadow, outcome.answer) };
    if (comparison.rows > 0) {
      metrics.rows.inc(comparison.rows);
      metrics.agreeingRows.inc(comparison.agreeingRows);
    }
    if (!Number.isNaN(comparison.meanAbsDifference)) metrics.difference.observe(comparison.meanAbsDifference);
    metrics.latency.observe(comparison.latencyDifferenceMs / 1000);
    this.#tell(comparison, event);
  }

  #tell(comparison: ShadowComparison, event: InferenceEvent): void {
    try {
      this.options.onCompared?.(comparison, event);
    } catch (err) {
      this.options.logger.warn({ reason: (err as Error).message }, "a shadow comparison could not be recorded");
    }
  }
}

/** A comparison before (or without) the answers compared: who, and how long the shadow took. */
function uncompared(event: InferenceEvent, shadow: LoadedVersion, shadowMs: number): ShadowComparison {
  return {
    model: event.model,
    primaryVersion: event.version,
    shadowVersion: shadow.version,
    call: event.call,
    rows: 0,
    agreeingRows: 0,
    meanAbsDifference: Number.NaN,
    latencyDifferenceMs: shadowMs - event.ms,
    shadowMs,
  };
}

type ShadowAnswer = { probabilities: Float32Array } | { outputs: Record<string, import("../model/tensors.js").HostTensor> };

/**
 * Why a shadow can never answer the primary's input (FAILED_PRECONDITION in its record): a
 * tensor model shadowing a classifier, or a classifier of another width. Undefined: it can try.
 */
function incompatibility(primary: LoadedVersion, shadow: LoadedVersion): string | undefined {
  const rows = primary.classifier;
  if (rows === undefined) return undefined; // tensors: onnxruntime checks them per call
  if (shadow.classifier === undefined) return `version ${shadow.version} is a tensor model, not a classifier of feature rows: it cannot shadow version ${primary.version}`;
  if (shadow.classifier.featureCount !== rows.featureCount) {
    return `version ${shadow.version} takes ${shadow.classifier.featureCount} features per row; version ${primary.version} takes ${rows.featureCount}`;
  }
  return undefined;
}

/** The shadow's answer to the primary's input: the same rows, or the same tensors and outputs. */
async function runOn(shadow: LoadedVersion, event: InferenceEvent): Promise<ShadowAnswer> {
  if (event.input !== undefined) return { probabilities: await shadow.classify(event.input.features, event.input.rowCount) };
  return { outputs: await shadow.runTensors(event.feeds!, Object.keys(event.outputs ?? {})) };
}

function compare(event: InferenceEvent, shadow: LoadedVersion, answer: ShadowAnswer): Pick<ShadowComparison, "rows" | "agreeingRows" | "meanAbsDifference" | "probabilities" | "labels" | "outputs"> {
  if ("probabilities" in answer) {
    const primaryLabels = event.loaded.classifier!.metadata.labels;
    const shadowLabels = shadow.classifier!.metadata.labels;
    const rows = event.input!.rowCount;
    const p = event.probabilities!;
    const q = answer.probabilities;
    let agreeing = 0;
    for (let r = 0; r < rows; r++) {
      if (primaryLabels[argmax(p, r, primaryLabels.length)] === shadowLabels[argmax(q, r, shadowLabels.length)]) agreeing++;
    }
    return { rows, agreeingRows: agreeing, meanAbsDifference: probabilityDifference(primaryLabels, p, shadowLabels, q, rows), probabilities: q, labels: shadowLabels };
  }
  let sum = 0;
  let count = 0;
  for (const [name, primary] of Object.entries(event.outputs ?? {})) {
    const other = answer.outputs[name];
    if (other === undefined || !(primary.data instanceof Float32Array || primary.data instanceof Float64Array) || other.data.length !== primary.data.length) continue;
    const a = primary.data;
    const b = other.data as ArrayLike<number>;
    for (let i = 0; i < a.length; i++) sum += Math.abs(a[i] - b[i]);
    count += a.length;
  }
  return { rows: 0, agreeingRows: 0, meanAbsDifference: count === 0 ? Number.NaN : sum / count, outputs: answer.outputs };
}

function argmax(values: Float32Array, row: number, width: number): number {
  let best = 0;
  for (let k = 1; k < width; k++) if (values[row * width + k] > values[row * width + best]) best = k;
  return best;
}

/**
 * Mean absolute difference of two classifiers' probabilities, label by label (their labels may
 * be in another order); NaN when their label sets differ.
 */
function probabilityDifference(primaryLabels: readonly string[], p: Float32Array, shadowLabels: readonly string[], q: Float32Array, rows: number): number {
  const width = primaryLabels.length;
  if (shadowLabels.length !== width || rows === 0) return Number.NaN;
  const column = primaryLabels.map((label) => shadowLabels.indexOf(label));
  if (column.includes(-1)) return Number.NaN;
  let sum = 0;
  for (let r = 0; r < rows; r++) for (let k = 0; k < width; k++) sum += Math.abs(p[r * width + k] - q[r * width + column[k]]);
  return sum / (rows * width);
}
