// bree runs this file in a worker thread for each scheduled run of the batch job. bree cannot
// start a .ts file under Node 20, so this loads the job compiled (dist/scheduled-job.js, made by
// scripts/build.mjs) when that build is fresh, else the TypeScript through tsx, as bin/mlmesh.js
// does. The thread always ends normally: whatever happened is posted to the scheduler, which logs it.
import { parentPort, workerData } from "node:worker_threads";
import { buildIsFresh } from "../../scripts/build-freshness.mjs";

try {
  const { runScheduledBatchJob } = (await buildIsFresh())
    ? await import("../../dist/scheduled-job.js")
    : await (await import("tsx/esm/api")).tsImport("./scheduled-job.ts", import.meta.url);
  parentPort?.postMessage(await runScheduledBatchJob(workerData.job.worker.workerData.env));
} catch (err) {
  parentPort?.postMessage({ startError: err instanceof Error ? err.message : String(err) });
}
