import type { IngestedRecord } from "./record-wire.js";

/*
 * Per-second sums of the calls each model version answered (count, errors, a latency
 * histogram) and of the shadow comparisons per pair of versions, in memory for
 * MONITOR_TRAFFIC_RETENTION: what GetTrafficStats answers and canary rollouts gate on. Counted as
 * records are stored (a resent record is not counted twice); not rebuilt after a restart.
 */

/** Latency histogram bounds: 50 µs growing by 25 % per bucket, up to about a minute. */
const latencyBounds = Array.from({ length: 64 }, (_, k) => 0.05 * 1.25 ** k);

function latencyBucket(ms: number): number {
  if (ms <= latencyBounds[0]) return 0;
  const k = Math.ceil(Math.log(ms / 0.05) / Math.log(1.25));
  return Math.min(k, latencyBounds.length - 1);
}

class CallSums {
  requests = 0;
  errors = 0;
  readonly latency = new Uint32Array(latencyBounds.length);

  addAll(other: CallSums): void {
    this.requests += other.requests;
    this.errors += other.errors;
    for (let k = 0; k < this.latency.length; k++) this.latency[k] += other.latency[k];
  }

  /** The upper bound of the bucket holding quantile q, in milliseconds. */
  quantileMs(q: number): number {
    const rank = Math.ceil(q * this.requests);
    let seen = 0;
    for (let k = 0; k < this.latency.length; k++) {
      seen += this.latency[k];
      if (seen >= rank && seen > 0) return latencyBounds[k];
    }
    return 0;
  }
}

class ShadowSums {
  calls = 0;
  failed = 0;
  rows = 0;
  agreeingRows = 0;
  differenceSum = 0;
  differenceCount = 0;
  latencyDifferenceSumMs = 0;

  addAll(other: ShadowSums): void {
    this.calls += other.calls;
    this.failed += other.failed;
    this.rows += other.rows;
    this.agreeingRows += other.agreeingRows;
    this.differenceSum += other.differenceSum;
    this.differenceCount += other.differenceCount;
    this.latencyDifferenceSumMs += other.latencyDifferenceSumMs;
  }
}

/** One second of one model: calls by version, comparisons by "primary:shadow". */
interface Second {
  readonly calls: Map<number, CallSums>;
  readonly shadows: Map<string, ShadowSums>;
}

export interface TrafficSummary {
  readonly versions: { version: number; requests: number; errors: number; p50Ms: number; p99Ms: number }[];
  readonly shadows: {
    primaryVersion: number;
    shadowVersion: number;
    calls: number;
    failed: number;
    rows: number;
    agreeingRows: number;
    /** NaN: nothing compared. */
    meanAbsDifference: number;
    meanLatencyDifferenceMs: number;
  }[];
  readonly heldSinceMs: number;
}

export class TrafficBook {
  /** Per model, per epoch second. */
  readonly #models = new Map<string, Map<number, Second>>();
  readonly #startedMs = Date.now();

  constructor(private readonly retentionMs: number) {}

  /** Counts newly stored Predictor records. */
  add(records: Iterable<IngestedRecord>): void {
    for (const record of records) {
      if (record.source !== 1) continue;
      const second = this.#second(record.model, Math.floor(record.timeMs / 1000));
      const shadow = record.shadow;
      if (record.api === "shadow" && shadow !== undefined) {
        const key = `${shadow.primaryVersion}:${record.version}`;
        let sums = second.shadows.get(key);
        if (sums === undefined) second.shadows.set(key, (sums = new ShadowSums()));
        sums.calls++;
        if (record.status !== 0) sums.failed++;
        sums.rows += shadow.rows;
        sums.agreeingRows += shadow.agreeingRows;
        if (!Number.isNaN(shadow.meanAbsDifference)) {
          sums.differenceSum += shadow.meanAbsDifference;
          sums.differenceCount++;
        }
        if (record.status === 0) sums.latencyDifferenceSumMs += shadow.latencyDifferenceMs;
        continue;
      }
      let sums = second.calls.get(record.version);
      if (sums === undefined) second.calls.set(record.version, (sums = new CallSums()));
      sums.requests++;
      if (record.status !== 0) sums.errors++;
      sums.latency[latencyBucket(record.latencyMs)]++;
    }
  }

  /** Sums of [startMs, endMs) for a model. */
  summary(model: string, startMs: number, endMs: number): TrafficSummary {
    const calls = new Map<number, CallSums>();
    const shadows = new Map<string, ShadowSums>();
    const fromSecond = Math.floor(startMs / 1000);
    const toSecond = Math.ceil(endMs / 1000);
    for (const [at, second] of this.#models.get(model) ?? []) {
      if (at < fromSecond || at >= toSecond) continue;
      for (const [version, sums] of second.calls) {
        let total = calls.get(version);
        if (total === undefined) calls.set(version, (total = new CallSums()));
        total.addAll(sums);
      }
      for (const [key, sums] of second.shadows) {
        let total = shadows.get(key);
        if (total === undefined) shadows.set(key, (total = new ShadowSums()));
        total.addAll(sums);
      }
    }
    return {
      versions: [...calls.entries()]
        .sort((a, b) => a[0] - b[0])
        .map(([version, s]) => ({ version, requests: s.requests, errors: s.errors, p50Ms: s.quantileMs(0.5), p99Ms: s.quantileMs(0.99) })),
      shadows: [...shadows.entries()].sort().map(([key, s]) => {
        const [primaryVersion, shadowVersion] = key.split(":").map(Number);
        const answered = s.calls - s.failed;
        return {
          primaryVersion,
          shadowVersion,
          calls: s.calls,
          failed: s.failed,
          rows: s.rows,
          agreeingRows: s.agreeingRows,
          meanAbsDifference: s.differenceCount === 0 ? Number.NaN : s.differenceSum / s.differenceCount,
          meanLatencyDifferenceMs: answered === 0 ? 0 : s.latencyDifferenceSumMs / answered,
        };
      }),
      heldSinceMs: Math.max(this.#startedMs, Date.now() - this.retentionMs),
    };
  }

  /** Drops seconds older than the retention. */
  prune(nowMs: number): void {
    const oldest = Math.floor((nowMs - this.retentionMs) / 1000);
    for (const [model, seconds] of this.#models) {
      for (const at of seconds.keys()) if (at < oldest) seconds.delete(at);
      if (seconds.size === 0) this.#models.delete(model);
    }
  }

  #second(model: string, at: number): Second {
    let seconds = this.#models.get(model);
    if (seconds === undefined) this.#models.set(model, (seconds = new Map()));
    let second = seconds.get(at);
    if (second === undefined) seconds.set(at, (second = { calls: new Map(), shadows: new Map() }));
    return second;
  }
}
