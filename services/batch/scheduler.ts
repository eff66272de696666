import { fileURLToPath } from "node:url";
import Bree from "bree";
import type { Env } from "../runtime/env/variables.js";
import type { Logger } from "../runtime/observability/logger.js";
import type { JobRunOutcome } from "./job.js";
import { recordRun } from "./metrics.js";

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
    workerMessageHandler: ({ message }) => logRun(logger, message as ScheduledRunMessage),
    errorHandler: (error: unknown) => logger.error({ err: error }, "batch job failed"),
  });
  await bree.start();
  return () => bree.stop();
}

/** What a scheduled run's thread posts (scheduled-job-worker.mjs). */
type ScheduledRunMessage = Partial<JobRunOutcome> & { startError?: string };

function logRun(logger: Logger, message: ScheduledRunMessage): void {
  const { run, recordError, startError } = message ?? {};
  if (startError !== undefined) logger.error({ reason: startError }, "batch job run could not start; the next run will try again");
  if (run === undefined) return;
  recordRun(run);
  if (recordError !== undefined) logger.error({ run, recordError }, "batch job run ended but its record could not be stored");
  else if (run.error !== "") logger.warn({ run }, "batch job run stopped early; the next run goes on");
  else logger.info({ run }, "batch job run");
}
