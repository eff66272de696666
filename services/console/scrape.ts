/**
 * What the console reads from one service's GET /metrics (Prometheus text exposition): for
 * each series it charts, cumulative request and error counts and latency buckets, as the
 * counters are. A series is the service as a whole (every application call), one model
 * version on a Predictor, or one backend of a Proxy; the series' key says which.
 */

/** Codes that are the service's failure, not the caller's (as the alert rules count them). */
export const serverErrorCodes = ["Unavailable", "Internal", "Unknown", "DeadlineExceeded", "ResourceExhausted", "DataLoss", "Unimplemented"];
const serverErrors = new Set(serverErrorCodes);

/** One series' counts at one poll: cumulative, as Prometheus counters are. */
export interface Sample {
  readonly at: number;
  readonly requests: number;
  readonly errors: number;
  /** Cumulative count per latency bucket upper bound (seconds), ascending, +Inf last. */
  readonly buckets: readonly (readonly [number, number])[];
}

/** What a series counts: the service's calls, a model version's inferences, a Proxy backend's calls. */
export type SeriesOf = { kind: "service" } | { kind: "model"; model: string; version: string } | { kind: "backend"; backend: string };

/** The history's key of a series of `service` (the console's name for the target). */
export function seriesKey(service: string, of: SeriesOf): string {
  if (of.kind === "service") return service;
  return of.kind === "model" ? `${service}\u0000model\u0000${of.model}\u0000${of.version}` : `${service}\u0000backend\u0000${of.backend}`;
}

/** The reverse of seriesKey. */
export function parseSeriesKey(key: string): { service: string; of: SeriesOf } {
  const [service, kind, a, b] = key.split("\u0000");
  if (kind === "model") return { service, of: { kind, model: a, version: b } };
  if (kind === "backend") return { service, of: { kind, backend: a } };
  return { service, of: { kind: "service" } };
}

/** mlmesh_build_info's labels: what the service runs and how it serves. */
export interface BuildLabels {
  readonly version: string;
  readonly commit: string;
  readonly node: string;
  readonly tls: string;
  readonly auth: string;
}

export interface Scrape {
  readonly series: Map<string, Sample>;
  readonly build: BuildLabels | undefined;
}

interface Counts {
  requests: number;
  errors: number;
  buckets: Map<number, number>;
}

/**
 * The counts of every series in one exposition:
 * - the service: mlmesh_rpc_requests_total and the mlmesh_rpc_duration_seconds buckets, summed
 *   over every application call (health checks, reflection and the plain HTTP routes, service
 *   "http", which counts these very polls, are left out);
 * - a Predictor's model versions: mlmesh_predictor_inference_requests_total (outcome failed
 *   counts as an error) and mlmesh_predictor_inference_duration_seconds;
 * - a Proxy's backends: mlmesh_proxy_backend_calls_total (any outcome but ok counts as an
 *   error) and mlmesh_proxy_backend_call_duration_seconds.
 */
export function parseExposition(service: string, text: string, at: number): Scrape {
  const counts = new Map<string, Counts>();
  const of = (key: string) => {
    let c = counts.get(key);
    if (c === undefined) counts.set(key, (c = { requests: 0, errors: 0, buckets: new Map() }));
    return c;
  };
  const addBucket = (c: Counts, le: string, value: number) => {
    const bound = le === "+Inf" ? Number.POSITIVE_INFINITY : Number(le);
    c.buckets.set(bound, (c.buckets.get(bound) ?? 0) + value);
  };
  let build: BuildLabels | undefined;
  for (const line of text.split("\n")) {
    if (!line.startsWith("mlmesh_")) continue;
    const match = /^(mlmesh_\w+)\{(.*)\} (\S+)$/.exec(line);
    if (!match) continue;
    const [, name, labelText, valueText] = match;
    const labels = Object.fromEntries([...labelText.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2].replace(/\\(.)/g, "$1")]));
    const value = Number(valueText);
    switch (name) {
      case "mlmesh_rpc_requests_total":
      case "mlmesh_rpc_duration_seconds_bucket": {
        if (labels.service === undefined || labels.service.startsWith("grpc.") || labels.service === "http") break;
        const c = of(seriesKey(service, { kind: "service" }));
        if (name === "mlmesh_rpc_duration_seconds_bucket") addBucket(c, labels.le, value);
        else {
          c.requests += value;
          if (serverErrors.has(labels.code)) c.errors += value;
        }
        break;
      }
      case "mlmesh_predictor_inference_requests_total": {
        const c = of(seriesKey(service, { kind: "model", model: labels.model, version: labels.version }));
        c.requests += value;
        if (labels.outcome !== "ok") c.errors += value;
        break;
      }
      case "mlmesh_predictor_inference_duration_seconds_bucket":
        addBucket(of(seriesKey(service, { kind: "model", model: labels.model, version: labels.version })), labels.le, value);
        break;
      case "mlmesh_proxy_backend_calls_total": {
        const c = of(seriesKey(service, { kind: "backend", backend: labels.backend }));
        c.requests += value;
        if (labels.outcome !== "ok") c.errors += value;
        break;
      }
      case "mlmesh_proxy_backend_call_duration_seconds_bucket":
        addBucket(of(seriesKey(service, { kind: "backend", backend: labels.backend })), labels.le, value);
        break;
      case "mlmesh_build_info":
        build = { version: labels.version, commit: labels.commit, node: labels.node, tls: labels.tls, auth: labels.auth };
        break;
    }
  }
  const series = new Map<string, Sample>();
  for (const [key, c] of counts) series.set(key, { at, requests: c.requests, errors: c.errors, buckets: [...c.buckets].sort(([a], [b]) => a - b) });
  // A service always has its own series, even before its first call.
  const own = seriesKey(service, { kind: "service" });
  if (!series.has(own)) series.set(own, { at, requests: 0, errors: 0, buckets: [] });
  return { series, build };
}
