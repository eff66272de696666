import { hostname } from "node:os";
import { threadId } from "node:worker_threads";
import { loadMeshClientSettings, loadPredictionLogSettings, loadTracingSettings } from "../runtime/env/settings.js";
import type { Env } from "../runtime/env/variables.js";
import { GrpcClient } from "../runtime/client/grpc-client.js";
import { loadMeshCredentials } from "../runtime/client/mesh-credentials.js";
import { createLogger } from "../runtime/observability/logger.js";
import { createTracing } from "../runtime/observability/tracing.js";
import { PredictionLog } from "../runtime/prediction-log/prediction-log.js";
import { loadBatchConfig } from "./config.js";
import { openBatchDatabase } from "./database.js";
import { ItemStore } from "./item-store.js";
import { runBatchJob, type JobRunOutcome } from "./job.js";

/**
 * One scheduled run, as bree starts it in a worker thread: its own connections (the process
 * that scheduled it has migrated the database already), then the job. Rejects only when the
 * database cannot be opened; the job itself reports failures in its outcome.
 */
export async function runScheduledBatchJob(env: Env): Promise<JobRunOutcome> {
  const config = loadBatchConfig(env);
  const { db, dialect } = await openBatchDatabase(config.databaseUrl, { ...config, migrate: false });
  const store = new ItemStore(db, dialect);
  const credentials = loadMeshCredentials(loadMeshClientSettings(env));
  const predictor = new GrpcClient(config.predictorAddress, credentials);
  // The run's item records go to the monitor from this thread, sent before it ends.
  const logSettings = loadPredictionLogSettings(env);
  const { monitorAddress } = logSettings;
  const predictionLog = monitorAddress === undefined ? undefined : new PredictionLog({ ...logSettings, monitorAddress }, createLogger("batch", "warn"), credentials);
  // A scheduled run starts its own trace; its Predict calls are children of it.
  const tracing = await createTracing("batch", loadTracingSettings(env));
  const trace = tracing.start("batch job run", undefined, "internal");
  try {
    const outcome = await runBatchJob({ store, predictor, config, worker: `${hostname()}:${process.pid}:${threadId}`, trace, predictionLog });
    trace.end(outcome.run.error === "" ? undefined : { code: "Unavailable", message: outcome.run.error });
    return outcome;
  } finally {
    await predictionLog?.close(5000);
    predictor.close();
    await store.close().catch(() => undefined);
    await tracing.shutdown().catch(() => undefined);
  }
}
