// bree runs this file in a worker thread for each scheduled run of the batch job. bree cannot
// start a .ts file under Node 20, so this loads the TypeScript job through tsx.
import { parentPort, workerData } from "node:worker_threads";
import { tsImport } from "tsx/esm/api";

const { runScheduledBatchJob } = await tsImport("./scheduled-job.ts", import.meta.url);
const run = await runScheduledBatchJob(workerData.job.worker.workerData.env);
parentPort?.postMessage({ run });
