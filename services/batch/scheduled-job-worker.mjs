// bree runs this file in a worker thread for each scheduled run of the batch job. bree cannot
// start a .ts file under Node 20, so this loads the TypeScript job through tsx. The thread
// always ends normally: whatever happened is posted to the scheduler, which logs it.
import { parentPort, workerData } from "node:worker_threads";
import { tsImport } from "tsx/esm/api";

try {
  const { runScheduledBatchJob } = await tsImport("./scheduled-job.ts", import.meta.url);
  parentPort?.postMessage(await runScheduledBatchJob(workerData.job.worker.workerData.env));
} catch (err) {
  parentPort?.postMessage({ startError: err instanceof Error ? err.message : String(err) });
}
