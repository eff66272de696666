import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry, type CounterConfiguration, type GaugeConfiguration, type HistogramConfiguration } from "prom-client";
import { HotCounter, HotGauge, HotHistogram } from "./hot-metrics.js";

/*
 * Prometheus metrics (prom-client), one registry per process, served as text at GET /metrics
 * on the service's own port (serve/server.ts). Names follow Prometheus' conventions: snake_case, an
 * mlmesh_ prefix, unit suffixes (_seconds, _bytes), _total on counters; label values are
 * bounded (services, methods, protocols, codes, models and versions — never a request id or
 * an input).
 */

/** Every metric of this process. */
export const metricsRegistry = new Registry();

/**
 * METRICS=off turns the RPC metrics into no-ops (GET /metrics still answers, with the process
 * metrics): only to measure what metrics cost (docs/benchmarks.md). Set once at boot
 * (setMetricsEnabled, from env/settings.ts), before the first call.
 */
export let metricsEnabled = true;

export function setMetricsEnabled(enabled: boolean): void {
  metricsEnabled = enabled;
}

collectDefaultMetrics({ register: metricsRegistry });
// prom-client also reports three totals of its per-type gauges (nodejs_active_handles,
// _requests, _resources) named like counters ("_total"), which Prometheus' conventions (and
// promtool check metrics) reject; the per-type gauges stay.
for (const name of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"]) {
  metricsRegistry.removeSingleMetric(name);
}

/** Latency buckets from 100 µs to 10 s: sub-millisecond calls resolve. */
export const latencyBuckets = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Size buckets from 64 B to 64 MiB, by powers of 4. */
export const sizeBuckets = [64, 256, 1024, 4096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304, 16_777_216, 67_108_864];

export function counter<L extends string>(config: Omit<CounterConfiguration<L>, "registers">): Counter<L> {
  return new Counter({ ...config, registers: [metricsRegistry] });
}

export function gauge<L extends string>(config: Omit<GaugeConfiguration<L>, "registers">): Gauge<L> {
  return new Gauge({ ...config, registers: [metricsRegistry] });
}

export function histogram<L extends string>(config: Omit<HistogramConfiguration<L>, "registers">): Histogram<L> {
  return new Histogram({ ...config, registers: [metricsRegistry] });
}

/** The text GET /metrics answers, and its content type. */
export async function metricsText(): Promise<{ body: string; contentType: string }> {
  return { body: await metricsRegistry.metrics(), contentType: metricsRegistry.contentType };
}

/** A hot-path counter (hot-metrics.ts): labels() children that cost one addition per inc(). */
export function hotCounter(name: string, help: string, labelNames: readonly string[]): HotCounter {
  return new HotCounter(name, help, labelNames, metricsRegistry);
}

export function hotGauge(name: string, help: string, labelNames: readonly string[]): HotGauge {
  return new HotGauge(name, help, labelNames, metricsRegistry);
}

export function hotHistogram(name: string, help: string, labelNames: readonly string[], buckets: readonly number[]): HotHistogram {
  return new HotHistogram(name, help, labelNames, buckets, metricsRegistry);
}

const requests = hotCounter(
  "mlmesh_rpc_requests_total",
  "Calls answered (RPCs, and plain HTTP routes under service \"http\"), by service, method, protocol (grpc, grpc-web, connect, rest, http) and status code.",
  ["service", "method", "protocol", "code"],
);
const duration = hotHistogram("mlmesh_rpc_duration_seconds", "Time from an RPC's arrival to its answer (streams: to their end).", ["service", "method", "protocol"], latencyBuckets);
const inFlight = hotGauge("mlmesh_rpc_in_flight", "RPCs being served now.", ["service", "method"]);
const requestBytes = hotHistogram(
  "mlmesh_rpc_request_bytes",
  "Size of an RPC's request: each message (gRPC), or the HTTP body (gRPC-web, Connect).",
  ["service", "method", "protocol"],
  sizeBuckets,
);
const responseBytes = hotHistogram(
  "mlmesh_rpc_response_bytes",
  "Size of an RPC's response: each message (gRPC), or the HTTP body (gRPC-web, Connect).",
  ["service", "method", "protocol"],
  sizeBuckets,
);

/**
 * The RPC metrics of one method ("/pkg.Service/Method"), with its label sets looked up once:
 * the serving path calls these per request.
 */
export class MethodMetrics {
  readonly #service: string;
  readonly #method: string;
  readonly #inFlight;
  readonly #byProtocol = new Map<string, { duration: ReturnType<typeof duration.labels>; requestBytes: ReturnType<typeof requestBytes.labels>; responseBytes: ReturnType<typeof responseBytes.labels> }>();
  readonly #byOutcome = new Map<string, ReturnType<typeof requests.labels>>();

  /** path: "/pkg.Service/Method" of an RPC, or the name of a plain HTTP route ("GET /metrics": service "http"). */
  constructor(path: string) {
    const [service, method] = path.startsWith("/") ? path.slice(1).split("/") : ["http", path];
    this.#service = service;
    this.#method = method;
    this.#inFlight = inFlight.labels(service, method);
  }

  started(): void {
    if (metricsEnabled) this.#inFlight.inc();
  }

  finished(protocol: string, code: string, seconds: number): void {
    if (!metricsEnabled) return;
    this.#inFlight.dec();
    this.#protocol(protocol).duration.observe(seconds);
    const key = `${protocol} ${code}`;
    let count = this.#byOutcome.get(key);
    if (count === undefined) this.#byOutcome.set(key, (count = requests.labels(this.#service, this.#method, protocol, code)));
    count.inc();
  }

  requestSize(protocol: string, bytes: number): void {
    if (metricsEnabled) this.#protocol(protocol).requestBytes.observe(bytes);
  }

  responseSize(protocol: string, bytes: number): void {
    if (metricsEnabled) this.#protocol(protocol).responseBytes.observe(bytes);
  }

  #protocol(protocol: string) {
    let children = this.#byProtocol.get(protocol);
    if (children === undefined) {
      const labels = [this.#service, this.#method, protocol] as const;
      children = { duration: duration.labels(...labels), requestBytes: requestBytes.labels(...labels), responseBytes: responseBytes.labels(...labels) };
      this.#byProtocol.set(protocol, children);
    }
    return children;
  }
}

const byPath = new Map<string, MethodMetrics>();

/** The metrics of a method, by its path "/pkg.Service/Method" (only methods a server serves). */
export function methodMetrics(path: string): MethodMetrics {
  let metrics = byPath.get(path);
  if (metrics === undefined) byPath.set(path, (metrics = new MethodMetrics(path)));
  return metrics;
}
