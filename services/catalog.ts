/**
 * The one list of mlmesh's services: each one's name, port variable and default port, the gRPC
 * service it serves, whether `mlmesh up` runs it (and in which order), and how to load its
 * process. The CLI (`mlmesh serve`, `mlmesh up`), the tests and the benchmarks start services
 * from this list; adding a service means adding it here (and to env/service-ports.ts, whose
 * port table the services' own settings read without loading each other).
 */

import type { Env } from "./runtime/env/variables.js";
import { servicePorts, type ServiceName } from "./runtime/env/service-ports.js";

/** One service of the catalog. */
export interface ServiceEntry {
  readonly name: ServiceName;
  /** The variable that sets its port, and the port without it (0: any free port). */
  readonly portVariable: string;
  readonly defaultPort: number;
  /** The full name of the gRPC service it serves ("" for none: the console serves a web page). */
  readonly grpcService: string;
  /** What it is, for `mlmesh help` and the start-up table. */
  readonly summary: string;
  /** Started by `mlmesh up`: the registry first, then the others side by side. */
  readonly inMesh: boolean;
  /** Loads the process's entry point (its main.ts): runs the service until it is stopped. */
  load(): Promise<(env: Env) => Promise<void>>;
}

const entry = (name: ServiceName, rest: Omit<ServiceEntry, "name" | "portVariable" | "defaultPort">): ServiceEntry => ({
  name,
  portVariable: servicePorts[name].variable,
  defaultPort: servicePorts[name].port,
  ...rest,
});

export const catalog: readonly ServiceEntry[] = [
  entry("registry", {
    grpcService: "mlmesh.registry.v1.ModelRegistryService",
    summary: "projects, models, versions and aliases, with their artifacts",
    inMesh: true,
    load: async () => (await import("./registry/main.js")).main,
  }),
  entry("predictor", {
    grpcService: "mlmesh.predictor.v1.PredictorService",
    summary: "ONNX inference: native Predict and the Open Inference Protocol",
    inMesh: true,
    load: async () => (await import("./predictor/main.js")).main,
  }),
  entry("batch", {
    grpcService: "mlmesh.batch.v1.BatchJobService",
    summary: "batch items, predicted by a scheduled job",
    inMesh: true,
    load: async () => (await import("./batch/main.js")).main,
  }),
  entry("proxy", {
    grpcService: "mlmesh.proxy.v1.ProxyService",
    summary: "fans one request out to the one-vs-rest Predictors",
    inMesh: true,
    load: async () => (await import("./proxy/main.js")).main,
  }),
  entry("monitor", {
    grpcService: "mlmesh.monitor.v1.MonitorService",
    summary: "the prediction log: records, drift against training data, alerts",
    inMesh: true,
    load: async () => (await import("./monitor/main.js")).main,
  }),
  entry("console", {
    grpcService: "",
    summary: "the web console",
    inMesh: true,
    load: async () => (await import("./console/main.js")).main,
  }),
  entry("batch-worker", {
    grpcService: "",
    summary: "a scale-out batch job worker (health and metrics only)",
    inMesh: false,
    load: async () => (await import("./batch/main.js")).workerMain,
  }),
  entry("echo", {
    grpcService: "mlmesh.echo.v1.EchoService",
    summary: "diagnostics: echoes what it is sent",
    inMesh: false,
    load: async () => (await import("./echo/main.js")).main,
  }),
];

/** The entry of a service by name; undefined for a name the catalog lacks. */
export function catalogEntry(name: string): ServiceEntry | undefined {
  return catalog.find((e) => e.name === name);
}
