/**
 * The history behind the console's charts, kept by the console's server from the /metrics it
 * already polls (metrics-poller.ts), per series (a service, a model version, a Proxy backend:
 * scrape.ts names them): every poll interval of the last hour (by default) as it was
 * measured, and one point a minute for the day before it, downsampled from those intervals
 * with their counts and latency buckets summed (so a minute's p99 is that minute's, not an
 * average of p99s). Memory is bounded by the two windows: at a 2 s poll, 1,800 intervals and
 * 1,440 minutes per series.
 */

/** What one service answered between two polls: counts, and the latency bucket deltas. */
export interface Interval {
  /** Epoch ms of the earlier and the later poll. */
  readonly start: number;
  readonly end: number;
  readonly requests: number;
  readonly errors: number;
  /** Requests per latency bucket upper bound (seconds, ascending, +Inf last): counts, not cumulative. */
  readonly buckets: readonly (readonly [number, number])[];
}

/** One point of a history chart. */
export interface HistoryPoint {
  /** Epoch ms at the end of the point's interval. */
  readonly t: number;
  readonly rps: number;
  /** Share of requests that failed on the server side, 0..1. */
  readonly errorRate: number;
  /** Latency quantiles in ms over the point's interval; null without requests in it. */
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
}

/** How long each tier keeps its points. */
export interface HistoryWindows {
  /** Intervals kept as polled (default one hour). */
  readonly fineMs: number;
  /** Minutes kept beyond that (default a day). */
  readonly coarseMs: number;
}

const minuteMs = 60_000;

interface Minute {
  readonly start: number;
  end: number;
  /** Seconds its intervals covered. */
  seconds: number;
  requests: number;
  errors: number;
  buckets: [number, number][];
}

export class MetricsHistory {
  readonly #fine = new Map<string, Interval[]>();
  readonly #coarse = new Map<string, Minute[]>();

  constructor(readonly windows: HistoryWindows = { fineMs: 3_600_000, coarseMs: 86_400_000 }) {}

  /** Records one series' interval (intervals of a series arrive in time order). */
  add(key: string, interval: Interval): void {
    const fine = this.#fine.get(key) ?? [];
    fine.push(interval);
    const fineFrom = interval.end - this.windows.fineMs;
    let drop = 0;
    while (drop < fine.length && fine[drop].end <= fineFrom) drop++;
    this.#fine.set(key, drop > 0 ? fine.slice(drop) : fine);

    const coarse = this.#coarse.get(key) ?? [];
    const minuteStart = Math.floor(interval.end / minuteMs) * minuteMs;
    let minute = coarse.at(-1);
    if (minute === undefined || minute.start !== minuteStart) {
      minute = { start: minuteStart, end: interval.end, seconds: 0, requests: 0, errors: 0, buckets: interval.buckets.map(([le]) => [le, 0]) };
      coarse.push(minute);
    }
    minute.end = interval.end;
    minute.seconds += (interval.end - interval.start) / 1000;
    minute.requests += interval.requests;
    minute.errors += interval.errors;
    if (minute.buckets.length !== interval.buckets.length) minute.buckets = interval.buckets.map(([le]) => [le, 0]);
    interval.buckets.forEach(([, count], i) => (minute.buckets[i][1] += count));
    const coarseFrom = interval.end - this.windows.fineMs - this.windows.coarseMs;
    while (coarse.length > 0 && coarse[0].start + minuteMs < coarseFrom) coarse.shift();
    this.#coarse.set(key, coarse);
  }

  /** The series with any history. */
  keys(): string[] {
    return [...this.#fine.keys()];
  }

  /**
   * The points of a series from `fromMs` to `toMs`: each polled interval where the fine tier
   * still holds it, one point a minute before that.
   */
  range(key: string, fromMs: number, toMs: number): { points: HistoryPoint[]; fineFromMs: number } {
    const fine = (this.#fine.get(key) ?? []).filter((i) => i.end >= fromMs && i.end <= toMs);
    const fineFromMs = fine[0]?.start ?? toMs;
    const minutes = (this.#coarse.get(key) ?? []).filter((m) => m.end >= fromMs && m.end < fineFromMs && m.end <= toMs);
    const point = (t: number, seconds: number, requests: number, errors: number, buckets: readonly (readonly [number, number])[]): HistoryPoint => ({
      t,
      rps: seconds > 0 ? requests / seconds : 0,
      errorRate: requests === 0 ? 0 : errors / requests,
      p50Ms: quantileMs(0.5, buckets),
      p99Ms: quantileMs(0.99, buckets),
    });
    return {
      points: [
        // A minute's rate is over the time its intervals covered.
        ...minutes.map((m) => point(m.end, m.seconds, m.requests, m.errors, m.buckets)),
        ...fine.map((i) => point(i.end, (i.end - i.start) / 1000, i.requests, i.errors, i.buckets)),
      ],
      fineFromMs,
    };
  }
}

/** A quantile of latency bucket counts, in ms, interpolated within its bucket as histogram_quantile does. */
export function quantileMs(q: number, buckets: readonly (readonly [number, number])[]): number | null {
  const total = buckets.reduce((sum, [, count]) => sum + count, 0);
  if (total <= 0) return null;
  const rank = q * total;
  let lowerBound = 0;
  let below = 0;
  for (const [le, count] of buckets) {
    if (below + count >= rank) {
      if (!Number.isFinite(le)) return lowerBound * 1000; // in the +Inf bucket: its lower bound
      return (lowerBound + ((le - lowerBound) * (rank - below)) / Math.max(1, count)) * 1000;
    }
    lowerBound = le;
    below += count;
  }
  return null;
}
