import { counter, gauge, hotCounter, hotHistogram, latencyBuckets, metricsEnabled } from "../runtime/observability/metrics.js";

const inferenceRequests = hotCounter(
  "mlmesh_predictor_inference_requests_total",
  "Inference requests (Predict, ModelInfer) per model version, by outcome: ok or failed.",
  ["model", "version", "outcome"],
);
const inferenceDuration = hotHistogram(
  "mlmesh_predictor_inference_duration_seconds",
  "Time of each inference request (Predict, ModelInfer) from its input to its answer, per model version: the console's per-model latency charts.",
  ["model", "version"],
  latencyBuckets,
);
const rows = hotCounter("mlmesh_predictor_rows_total", "Rows inferred by successful requests, per model version.", ["model", "version"]);
const batchRows = hotHistogram(
  "mlmesh_predictor_batch_rows",
  "Rows per onnxruntime run (concurrent requests share runs), per model version.",
  ["model", "version"],
  [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000],
);
const queueWait = hotHistogram("mlmesh_predictor_queue_wait_seconds", "Time a request waited for an onnxruntime run, per model version.", ["model", "version"], latencyBuckets);
const compute = hotHistogram("mlmesh_predictor_compute_seconds", "Duration of each onnxruntime run, per model version.", ["model", "version"], latencyBuckets);

/** Calls routed by an alias's traffic policy, per arm ("v2", "route:beta"): the observed split. */
export const trafficCalls = counter({
  name: "mlmesh_predictor_traffic_calls_total",
  help: "Calls naming an alias with a traffic policy, by the arm that answered them (v<version>, or route:<name>).",
  labelNames: ["model", "alias", "arm"],
});

/** Model loads by outcome (loaded, failed) and unloads: what changed and when. */
export const modelLoads = counter({ name: "mlmesh_predictor_model_loads_total", help: "Model versions loaded, by outcome: loaded or failed.", labelNames: ["model", "outcome"] });
export const modelUnloads = counter({ name: "mlmesh_predictor_model_unloads_total", help: "Model versions unloaded after their last call.", labelNames: ["model"] });

/** The metrics of one model version, label sets looked up once (the serving path uses them). */
export class VersionMetrics {
  readonly #ok;
  readonly #failed;
  readonly #rows;
  readonly #duration;
  readonly #batchRows;
  readonly #queueWait;
  readonly #compute;

  constructor(model: string, version: number) {
    const v = String(version);
    this.#ok = inferenceRequests.labels(model, v, "ok");
    this.#failed = inferenceRequests.labels(model, v, "failed");
    this.#rows = rows.labels(model, v);
    this.#duration = inferenceDuration.labels(model, v);
    this.#batchRows = batchRows.labels(model, v);
    this.#queueWait = queueWait.labels(model, v);
    this.#compute = compute.labels(model, v);
  }

  run(rowCount: number, computeMs: number, waitsMs: readonly number[]): void {
    if (!metricsEnabled) return;
    this.#batchRows.observe(rowCount);
    this.#compute.observe(computeMs / 1000);
    for (const wait of waitsMs) this.#queueWait.observe(wait / 1000);
  }

  request(ok: boolean, rowCount: number, totalMs: number): void {
    if (!metricsEnabled) return;
    this.#duration.observe(totalMs / 1000);
    if (ok) {
      this.#ok.inc();
      this.#rows.inc(rowCount);
    } else {
      this.#failed.inc();
    }
  }
}

/** What watchServingTable reads of the serving table (a structural type: the table's module imports this one). */
interface ServedVersions {
  readonly snapshot: { readonly models: ReadonlyMap<string, { readonly versions: ReadonlyMap<number, unknown> }> };
}

/** mlmesh_predictor_loaded_versions, read from what the table serves at scrape time. */
export function watchServingTable(table: ServedVersions): void {
  gauge({
    name: "mlmesh_predictor_loaded_versions",
    help: "Model versions loaded and serving, per model.",
    labelNames: ["model"],
    collect() {
      this.reset();
      for (const [name, served] of table.snapshot.models) this.set({ model: name }, served.versions.size);
    },
  });
}
