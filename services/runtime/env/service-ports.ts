/**
 * The port variable and default port of each service. The catalog of services
 * (services/catalog.ts) adds what each runs; this table stays here because settings and the
 * services' own configs (a default address of another service) need it without loading any.
 */
export const servicePorts = {
  registry: { variable: "REGISTRY_PORT", port: 50051 },
  predictor: { variable: "PREDICTOR_PORT", port: 50052 },
  batch: { variable: "BATCH_PORT", port: 50053 },
  proxy: { variable: "PROXY_PORT", port: 50054 },
  monitor: { variable: "MONITOR_PORT", port: 50055 },
  console: { variable: "CONSOLE_PORT", port: 50050 },
  "batch-worker": { variable: "BATCH_WORKER_PORT", port: 0 },
  echo: { variable: "ECHO_PORT", port: 50059 },
} as const;

/** A service's name, as `mlmesh serve` takes it. */
export type ServiceName = keyof typeof servicePorts;
