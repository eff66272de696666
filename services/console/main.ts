import type { Env } from "../runtime/env/variables.js";
import { ServingStatus } from "../runtime/serve/health.js";
import { runService } from "../runtime/serve/run-service.js";
import { startServer } from "../runtime/serve/server.js";
import { consoleApi } from "./api.js";
import { loadConsoleConfig } from "./config.js";
import { MetricsHistory } from "./metrics-history.js";
import { MetricsPoller } from "./metrics-poller.js";
import { bundleWeb, consoleFiles } from "./site.js";

/** How often the console's server polls each service's /metrics (the live charts and the history). */
const pollMs = 2000;

/**
 * Runs the web console: an app that calls the mesh's services from the browser with Connect
 * and gRPC-web (the services must list the console's origin in CORS_ORIGINS; `mlmesh up` does
 * that), and the console's own endpoints for charts and service status. The page's server is
 * the shared runtime, so it has health, logs and drains.
 */
export function main(env: Env): Promise<void> {
  return runService("console", env, async ({ config, logger, tracing, gatekeeper, meshCredentials }) => {
    const consoleConfig = loadConsoleConfig(env);
    const history = new MetricsHistory(consoleConfig.history);
    const poller = new MetricsPoller(consoleConfig.metricsTargets, history, { pollMs, keepMs: 5 * 60_000, windowMs: 30_000, credentials: meshCredentials });
    const api = consoleApi(consoleConfig, poller, history, pollMs, meshCredentials);
    const site = await consoleFiles(consoleConfig, await bundleWeb(), api);
    const server = await startServer({ config, logger, tracing, gatekeeper, services: [], httpRoutes: site });
    poller.start();
    server.health.setAll(ServingStatus.SERVING);
    logger.info({ page: `http://${server.address}/`, ...consoleConfig, metricsTargets: Object.fromEntries(consoleConfig.metricsTargets) }, "console page");
    return { server, close: async () => poller.stop() };
  });
}
