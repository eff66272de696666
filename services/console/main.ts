import type { Env } from "../runtime/env/variables.js";
import { ServingStatus } from "../runtime/serve/health.js";
import { runService } from "../runtime/serve/run-service.js";
import { startServer } from "../runtime/serve/server.js";
import { loadConsoleConfig } from "./config.js";
import { LiveMetrics } from "./live-metrics.js";
import { MetricsHistory } from "./metrics-history.js";
import { loadSite, pollMs } from "./site.js";

/**
 * Runs the web console: a page that calls the mesh's services from the browser with
 * Connect and gRPC-web (the services must list the console's origin in CORS_ORIGINS; `mlmesh
 * up` does that). The page's server is the shared runtime, so it has health, logs and drains.
 */
export function main(env: Env): Promise<void> {
  return runService("console", env, async ({ config, logger, tracing, gatekeeper, meshCredentials }) => {
    const consoleConfig = loadConsoleConfig(env);
    const history = new MetricsHistory(consoleConfig.history);
    const live = new LiveMetrics(consoleConfig.metricsTargets, { pollMs, keepMs: 5 * 60_000, windowMs: 30_000, credentials: meshCredentials, history });
    const site = await loadSite(consoleConfig, live, history);
    const server = await startServer({ config, logger, tracing, gatekeeper, services: [], httpRoutes: site });
    live.start();
    server.health.setAll(ServingStatus.SERVING);
    logger.info({ page: `http://${server.address}/`, ...consoleConfig, metricsTargets: Object.fromEntries(consoleConfig.metricsTargets) }, "console page");
    return { server, close: async () => live.stop() };
  });
}
