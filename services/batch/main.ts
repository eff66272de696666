import { hostname } from "node:os";
import { BatchJobService } from "../../gen/mlmesh/batch/v1/batch_pb.js";
import type { Env } from "../runtime/env/variables.js";
import { GrpcClient } from "../runtime/client/grpc-client.js";
import { ServingStatus } from "../runtime/serve/health.js";
import { serve } from "../runtime/serve/registration.js";
import { runService } from "../runtime/serve/run-service.js";
import { startServer } from "../runtime/serve/server.js";
import { loadBatchConfig } from "./config.js";
import { openBatchDatabase } from "./database.js";
import { ItemStore } from "./item-store.js";
import { runBatchJob } from "./job.js";
import { watchItems } from "./metrics.js";
import { startScheduler } from "./scheduler.js";
import { registerItemsWire } from "./register-wire.js";
import { createBatchService } from "./service.js";

/**
 * Runs the BatchJob service: migrates its database, serves the RPCs, and (unless
 * BATCH_RUN_JOB_IN_SERVICE=false) runs the job every BATCH_INTERVAL with bree.
 */
export function main(env: Env): Promise<void> {
  return runService("batch", env, async ({ config, logger, tracing, gatekeeper, meshCredentials, predictionLog }) => {
    const batchConfig = loadBatchConfig(env);
    const { db, dialect, applied } = await openBatchDatabase(batchConfig.databaseUrl, { ...batchConfig, migrate: true });
    logger.info({ dialect, migrationsApplied: applied, predictor: batchConfig.predictorAddress }, "database ready");
    const store = new ItemStore(db, dialect);
    watchItems(store);
    const predictor = new GrpcClient(batchConfig.predictorAddress, meshCredentials);
    const worker = `${hostname()}:${process.pid}:now`;
    let stopScheduler: (() => Promise<void>) | undefined;
    const draining = new AbortController();
    const server = await startServer({
      tracing,
      config,
      logger,
      gatekeeper,
      services: [
        serve(
          BatchJobService,
          createBatchService({
            store,
            intervalMs: batchConfig.intervalMs,
            runJob: (trace) => runBatchJob({ store, predictor, config: batchConfig, worker, trace, predictionLog }),
            stopping: () => draining.signal,
          }),
          { registerItems: registerItemsWire },
        ),
      ],
    });
    if (batchConfig.runJobInService) stopScheduler = await startScheduler(env, batchConfig.intervalMs, logger);
    server.stopping.addEventListener("abort", () => draining.abort(), { once: true });
    server.health.setAll(ServingStatus.SERVING);
    return {
      server,
      async close() {
        await stopScheduler?.();
        predictor.close();
        await store.close();
      },
    };
  });
}

/**
 * Runs a separate batch worker (`mlmesh serve batch-worker`): the scheduled job only, for
 * scale-out; its port (BATCH_WORKER_PORT, default any free port) answers health checks.
 */
export function workerMain(env: Env): Promise<void> {
  return runService("batch-worker", env, async ({ config, logger, tracing, gatekeeper }) => {
    const batchConfig = loadBatchConfig(env);
    const { db, applied } = await openBatchDatabase(batchConfig.databaseUrl, { ...batchConfig, migrate: true });
    await db.$disconnect(); // each run opens its own connections in its worker thread
    logger.info({ migrationsApplied: applied, intervalMs: batchConfig.intervalMs }, "batch worker ready");
    const server = await startServer({ config, logger, tracing, gatekeeper, services: [] });
    const stopScheduler = await startScheduler(env, batchConfig.intervalMs, logger);
    server.health.setAll(ServingStatus.SERVING);
    return { server, close: stopScheduler };
  });
}
