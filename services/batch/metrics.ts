import { counter, gauge, histogram } from "../runtime/observability/metrics.js";
import type { ItemStore, JobRun } from "./item-store.js";

export const itemsRegistered = counter({ name: "mlmesh_batch_items_registered_total", help: "Items registered (RegisterItem, RegisterItems)." });

const runs = counter({ name: "mlmesh_batch_job_runs_total", help: "Job runs that found work, by outcome: ok, or failed (stopped early; the reason is in the log and GetJobStatus).", labelNames: ["outcome"] });
const runDuration = histogram({
  name: "mlmesh_batch_job_run_duration_seconds",
  help: "Duration of each job run that found work.",
  buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
});
const runItems = counter({
  name: "mlmesh_batch_job_items_total",
  help: "Items job runs handled, by result: claimed, predicted, failed (the model refused them), released (given back for a later run).",
  labelNames: ["result"],
});

/** Counts a finished run (scheduled, or RunJobNow) in the metrics. */
export function recordRun(run: Omit<JobRun, "id">): void {
  if (run.claimed === 0 && run.error === "") return;
  runs.labels(run.error === "" ? "ok" : "failed").inc();
  if (run.endedAt) runDuration.observe((run.endedAt.getTime() - run.startedAt.getTime()) / 1000);
  for (const result of ["claimed", "predicted", "failed", "released"] as const) runItems.labels(result).inc(run[result]);
}

/** Items by state and the age of the oldest pending item (the lag to alert on), read at scrape time. */
export function watchItems(store: Pick<ItemStore, "counts" | "oldestPendingCreatedAt">): void {
  gauge({
    name: "mlmesh_batch_items",
    help: "Items in the batch database, by state: pending, predicted, failed.",
    labelNames: ["state"],
    async collect() {
      const counts = await store.counts();
      for (const state of ["pending", "predicted", "failed"] as const) this.set({ state }, counts[state]);
    },
  });
  gauge({
    name: "mlmesh_batch_oldest_pending_age_seconds",
    help: "How long the oldest pending item has waited (0 when none waits): the batch job's lag.",
    async collect() {
      const oldest = await store.oldestPendingCreatedAt();
      this.set(oldest === undefined ? 0 : (Date.now() - oldest.getTime()) / 1000);
    },
  });
}
