import { meshHttpGet, type MeshCredentials } from "../runtime/client/mesh-credentials.js";
import type { Interval, MetricsHistory } from "./metrics-history.js";
/**
 * The console's live panel: its server reads every service's GET /metrics every `pollMs`
 * (the browser never calls the services for this), keeps the last minutes, and serves per
 * service requests per second, server-side error rate and p99 latency (over a sliding window)
 * as GET /live.json.
 */

/** Codes that are the service's failure, not the caller's (as the alert rules count them). */
const serverErrorCodes = new Set(["Unavailable", "Internal", "Unknown", "DeadlineExceeded", "ResourceExhausted", "DataLoss", "Unimplemented"]);

/** One poll of one service: cumulative counts, as Prometheus counters are. */
interface Sample {
  readonly at: number;
  readonly requests: number;
  readonly errors: number;
  /** Cumulative count per latency bucket upper bound (seconds), ascending. */
  readonly buckets: readonly [number, number][];
}

/** One point of a chart. */
export interface LivePoint {
  /** Epoch ms. */
  readonly t: number;
  readonly rps: number;
  /** Share of requests that failed on the server side, 0..1. */
  readonly errorRate: number;
  /** p99 latency over the window, in ms (null without requests in it). */
  readonly p99Ms: number | null;
}

export class LiveMetrics {
  readonly #history = new Map<string, Sample[]>();
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly targets: ReadonlyMap<string, string>,
    private readonly options: {
      pollMs: number;
      keepMs: number;
      windowMs: number;
      credentials: MeshCredentials;
      /** Where each poll's interval is also kept, for the history charts. */
      history?: MetricsHistory;
    },
  ) {}

  start(): void {
    const poll = () => void this.#pollAll().finally(() => (this.#timer = setTimeout(poll, this.options.pollMs).unref()));
    poll();
  }

  stop(): void {
    clearTimeout(this.#timer);
  }

  /** Per service, the chart points of the last minutes (rates between consecutive polls, p99 over the window). */
  series(): { service: string; points: LivePoint[] }[] {
    return [...this.targets.keys()].map((service) => {
      const samples = this.#history.get(service) ?? [];
      const points: LivePoint[] = [];
      for (let i = 1; i < samples.length; i++) {
        const [previous, current] = [samples[i - 1], samples[i]];
        const seconds = (current.at - previous.at) / 1000;
        const requests = Math.max(0, current.requests - previous.requests);
        const errors = Math.max(0, current.errors - previous.errors);
        const windowStart = samples.find((s) => s.at >= current.at - this.options.windowMs) ?? previous;
        points.push({ t: current.at, rps: requests / seconds, errorRate: requests === 0 ? 0 : errors / requests, p99Ms: p99Ms(windowStart, current) });
      }
      return { service, points };
    });
  }

  async #pollAll(): Promise<void> {
    await Promise.all(
      [...this.targets].map(async ([service, url]) => {
        try {
          const text = await meshHttpGet(`${url}/metrics`, this.options.credentials, 2000);
          if (text === undefined) return;
          const sample = parse(text, Date.now());
          const samples = this.#history.get(service) ?? [];
          const previous = samples.at(-1);
          const interval = previous && intervalBetween(previous, sample);
          if (interval) this.options.history?.add(service, interval);
          const kept = samples.filter((s) => s.at >= sample.at - this.options.keepMs);
          this.#history.set(service, [...kept, sample]);
        } catch {
          // A service that is down (or answers no metrics) leaves a gap in its chart.
        }
      }),
    );
  }
}

/** What a service answered between two polls; undefined when its counters went back (a restart). */
function intervalBetween(from: Sample, to: Sample): Interval | undefined {
  const requests = to.requests - from.requests;
  if (requests < 0 || to.errors < from.errors || to.buckets.length !== from.buckets.length) return undefined;
  let previousDelta = 0;
  const buckets = to.buckets.map(([le, cumulative], i) => {
    const delta = cumulative - from.buckets[i][1];
    const count = Math.max(0, delta - previousDelta);
    previousDelta = delta;
    return [le, count] as [number, number];
  });
  return { start: from.at, end: to.at, requests, errors: to.errors - from.errors, buckets };
}

/** The p99 of the requests between two samples, from their latency buckets (as histogram_quantile does). */
function p99Ms(from: Sample, to: Sample): number | null {
  const deltas = to.buckets.map(([le, count], i) => [le, count - (from.buckets[i]?.[1] ?? 0)] as const);
  const total = deltas.at(-1)?.[1] ?? 0;
  if (total <= 0) return null;
  const rank = 0.99 * total;
  let lowerBound = 0;
  let lowerCount = 0;
  for (const [le, count] of deltas) {
    if (count >= rank) {
      if (!Number.isFinite(le)) return lowerBound * 1000; // in the +Inf bucket: its lower bound
      return (lowerBound + ((le - lowerBound) * (rank - lowerCount)) / Math.max(1, count - lowerCount)) * 1000;
    }
    lowerBound = le;
    lowerCount = count;
  }
  return null;
}

/**
 * The counts the panel needs from a Prometheus text exposition: mlmesh_rpc_requests_total and
 * the mlmesh_rpc_duration_seconds buckets, summed over every application call: health checks,
 * reflection and the plain HTTP routes (service "http": GET /metrics, which this panel's own
 * polls would otherwise count, and the console's files) are left out.
 */
function parse(text: string, at: number): Sample {
  let requests = 0;
  let errors = 0;
  const buckets = new Map<number, number>();
  for (const line of text.split("\n")) {
    if (!line.startsWith("mlmesh_rpc_")) continue;
    const match = /^(mlmesh_rpc_requests_total|mlmesh_rpc_duration_seconds_bucket)\{(.*)\} (\S+)$/.exec(line);
    if (!match) continue;
    const labels = Object.fromEntries([...match[2].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (labels.service === undefined || labels.service.startsWith("grpc.") || labels.service === "http") continue;
    const value = Number(match[3]);
    if (match[1] === "mlmesh_rpc_requests_total") {
      requests += value;
      if (serverErrorCodes.has(labels.code)) errors += value;
    } else {
      const le = labels.le === "+Inf" ? Number.POSITIVE_INFINITY : Number(labels.le);
      buckets.set(le, (buckets.get(le) ?? 0) + value);
    }
  }
  return { at, requests, errors, buckets: [...buckets].sort(([a], [b]) => a - b) };
}
