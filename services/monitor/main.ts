import { MonitorService } from "../../gen/mlmesh/monitor/v1/monitor_pb.js";
import type { Env } from "../runtime/env/variables.js";
import { ServingStatus } from "../runtime/serve/health.js";
import { serve } from "../runtime/serve/registration.js";
import { runService } from "../runtime/serve/run-service.js";
import { startServer } from "../runtime/serve/server.js";
import { AlertBook } from "./alerts.js";
import { loadMonitorConfig } from "./config.js";
import { RecordStore } from "./record-store.js";
import { ingestWire, readRecord } from "./record-wire.js";
import { ReferenceBook } from "./references.js";
import { createMonitorService } from "./service.js";
import { WindowBook } from "./windows.js";
import { TrafficBook } from "./traffic.js";

/** How often due windows are closed, and the retention applied. */
const tickMs = 500;
const maintenanceMs = 3_600_000;

/**
 * Runs the monitor: migrates its database, reads back the windows still open, serves the
 * MonitorService, closes windows as they fall due and keeps the storage within the retention.
 */
export function main(env: Env): Promise<void> {
  return runService("monitor", env, async ({ config, logger, tracing, gatekeeper, meshCredentials }) => {
    const monitorConfig = loadMonitorConfig(env);
    const { store, applied } = await RecordStore.open(monitorConfig.databaseUrl, monitorConfig.sqliteBusyTimeoutMs);
    const maintained = await store.maintain(Date.now(), monitorConfig.retentionMs);
    const references = new ReferenceBook(monitorConfig.registryAddress, meshCredentials, monitorConfig.thresholds, monitorConfig.referenceRefreshMs, logger);
    const alerts = await AlertBook.load(store);
    const windows = new WindowBook(monitorConfig, store, references, alerts, logger);
    const replayed = await windows.replay(Date.now(), readRecord);
    const traffic = new TrafficBook(monitorConfig.trafficRetentionMs);
    logger.info({ dialect: store.dialect, migrationsApplied: applied, replayed, ...maintained, windowMs: monitorConfig.windowMs, registry: monitorConfig.registryAddress }, "monitor ready");
    const draining = new AbortController();
    const server = await startServer({
      tracing,
      config,
      logger,
      gatekeeper,
      services: [serve(MonitorService, createMonitorService({ config: monitorConfig, store, windows, traffic, alerts, references, stopping: draining.signal }), { ingestRecords: ingestWire })],
    });
    server.stopping.addEventListener("abort", () => draining.abort(), { once: true });
    let closing: Promise<void> | undefined;
    const tick = setInterval(() => {
      closing ??= windows.closeDue(Date.now()).finally(() => (closing = undefined));
      traffic.prune(Date.now());
    }, tickMs);
    const maintenance = setInterval(() => {
      store.maintain(Date.now(), monitorConfig.retentionMs).catch((err) => logger.error({ err: (err as Error).message }, "retention failed"));
    }, maintenanceMs);
    server.health.setAll(ServingStatus.SERVING);
    return {
      server,
      async close() {
        clearInterval(tick);
        clearInterval(maintenance);
        await closing;
        await store.close();
      },
    };
  });
}
