import { ProxyService } from "../../gen/mlmesh/proxy/v1/proxy_pb.js";
import type { Env } from "../runtime/env/variables.js";
import { ServingStatus } from "../runtime/serve/health.js";
import { serve } from "../runtime/serve/registration.js";
import { runService } from "../runtime/serve/run-service.js";
import { predictLabelWire } from "../model/wire/predict-wire.js";
import { startServer } from "../runtime/serve/server.js";
import { BackendClient } from "./backends.js";
import { loadProxyConfig } from "./config.js";
import { watchCircuits } from "./metrics.js";
import { PredictorConnection } from "./predictor-connection.js";
import { createProxyService } from "./service.js";

/**
 * Runs the Proxy. It is SERVING as soon as it listens: it answers with whichever backends are
 * up, and CheckBackends reports each one's health and circuit.
 */
export function main(env: Env): Promise<void> {
  return runService("proxy", env, async ({ config, logger, tracing, gatekeeper, meshCredentials, predictionLog }) => {
    const proxyConfig = loadProxyConfig(env);
    // One connection per Predictor, shared by the backends it serves (one call asks them all).
    const connections = new Map<string, PredictorConnection>();
    const connectionTo = (address: string) => connections.get(address) ?? connections.set(address, new PredictorConnection(address, meshCredentials, proxyConfig.backendConcurrency)).get(address)!;
    const backends = proxyConfig.backends.map((b) => new BackendClient(b, proxyConfig, connectionTo(b.address)));
    watchCircuits(new Map(backends.map((b) => [b.backend.name, b.breaker])));
    logger.info({ backends: proxyConfig.backends, backendTimeoutMs: proxyConfig.backendTimeoutMs }, "backends");
    const server = await startServer({ config, logger, tracing, gatekeeper, services: [serve(ProxyService, createProxyService(backends, proxyConfig, predictionLog), { predictLabel: predictLabelWire })] });
    server.health.setAll(ServingStatus.SERVING);
    return { server, close: async () => connections.forEach((c) => c.close()) };
  });
}
