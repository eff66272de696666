import { fileURLToPath } from "node:url";
import Bree from "bree";
import type { Env } from "../runtime/config.js";
import type { Logger } from "../runtime/logger.js";
import type { JobRun } from "./item-store.js";

const jobFile = fileURLToPath(new URL("scheduled-job-worker.mjs", import.meta.url));

/**
 * Runs the batch job every `intervalMs` with bree, each run in a worker thread; bree skips a
 * tick while the previous run is still going. Returns a stop function for shutdown.
 */
export async function startScheduler(env: Env, intervalMs: number, logger: Logger): Promise<() => Promise<void>> {
  const bree = new Bree({
    root: false,
    logger: false,
    jobs: [{ name: "predict-pending", path: jobFile, interval: intervalMs, worker: { workerData: { env: { ...env } } } }],
    workerMessageHandler: ({ message }) => {
      const { run } = (message ?? {}) as { run?: JobRun };
      if (run) logger.info({ run }, "batch job run");
    },
    errorHandler: (error: unknown) => logger.error({ err: error }, "batch job failed"),
  });
  await bree.start();
  return () => bree.stop();
}
