import { meshHttpGet, type MeshCredentials } from "../runtime/client/mesh-credentials.js";
import { quantileMs, type Interval, type MetricsHistory } from "./metrics-history.js";
import { parseExposition, parseSeriesKey, seriesKey, type BuildLabels, type Sample } from "./scrape.js";

/**
 * The console's server reads every service's GET /metrics every `pollMs` (the browser never
 * calls the services for this): each poll's intervals go to the history (the charts), the
 * last minutes stay here for GET /live.json, and each service's last answer (or silence) and
 * build labels feed the Services page.
 */

/** One point of a live chart. */
export interface LivePoint {
  /** Epoch ms. */
  readonly t: number;
  readonly rps: number;
  /** Share of requests that failed on the server side, 0..1. */
  readonly errorRate: number;
  /** p99 latency over the window, in ms (null without requests in it). */
  readonly p99Ms: number | null;
}

/** What the console knows of one followed service from its polls. */
export interface TargetState {
  readonly service: string;
  readonly metricsUrl: string;
  /** Epoch ms of the last poll that answered; undefined before the first. */
  readonly lastAnswerAt: number | undefined;
  /** Whether the latest poll answered. */
  readonly answering: boolean;
  readonly build: BuildLabels | undefined;
}

export class MetricsPoller {
  /** Recent samples per series key, for the live charts. */
  readonly #recent = new Map<string, Sample[]>();
  readonly #targets = new Map<string, { answering: boolean; lastAnswerAt?: number; build?: BuildLabels }>();
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly targets: ReadonlyMap<string, string>,
    private readonly history: MetricsHistory,
    private readonly options: { pollMs: number; keepMs: number; windowMs: number; credentials: MeshCredentials },
  ) {
    for (const service of targets.keys()) this.#targets.set(service, { answering: false });
  }

  start(): void {
    const poll = () => void this.#pollAll().finally(() => (this.#timer = setTimeout(poll, this.options.pollMs).unref()));
    poll();
  }

  stop(): void {
    clearTimeout(this.#timer);
  }

  /** Each followed service's last poll. */
  states(): TargetState[] {
    return [...this.targets].map(([service, url]) => {
      const state = this.#targets.get(service)!;
      return { service, metricsUrl: `${url}/metrics`, lastAnswerAt: state.lastAnswerAt, answering: state.answering, build: state.build };
    });
  }

  /** Per service, the live chart points of the last minutes (rates between polls, p99 over the window). */
  live(): { service: string; points: LivePoint[] }[] {
    return [...this.targets.keys()].map((service) => {
      const samples = this.#recent.get(seriesKey(service, { kind: "service" })) ?? [];
      const points: LivePoint[] = [];
      for (let i = 1; i < samples.length; i++) {
        const [previous, current] = [samples[i - 1], samples[i]];
        const seconds = (current.at - previous.at) / 1000;
        const requests = Math.max(0, current.requests - previous.requests);
        const errors = Math.max(0, current.errors - previous.errors);
        const windowStart = samples.find((s) => s.at >= current.at - this.options.windowMs) ?? previous;
        const window = intervalBetween(windowStart, current);
        points.push({ t: current.at, rps: requests / seconds, errorRate: requests === 0 ? 0 : errors / requests, p99Ms: window ? quantileMs(0.99, window.buckets) : null });
      }
      return { service, points };
    });
  }

  /** Each model version's requests/s between the last two polls of each Predictor that serves it. */
  modelRates(): { service: string; model: string; version: string; rps: number }[] {
    const rates = [];
    for (const [key, samples] of this.#recent) {
      const { service, of } = parseSeriesKey(key);
      if (of.kind !== "model" || samples.length < 2) continue;
      const [previous, current] = samples.slice(-2);
      rates.push({ service, model: of.model, version: of.version, rps: Math.max(0, current.requests - previous.requests) / ((current.at - previous.at) / 1000) });
    }
    return rates;
  }

  async #pollAll(): Promise<void> {
    await Promise.all(
      [...this.targets].map(async ([service, url]) => {
        const state = this.#targets.get(service)!;
        const text = await meshHttpGet(`${url}/metrics`, this.options.credentials, 2000);
        if (text === undefined) {
          // A service that is down (or answers no metrics) leaves a gap in its charts.
          state.answering = false;
          return;
        }
        const at = Date.now();
        const scrape = parseExposition(service, text, at);
        Object.assign(state, { answering: true, lastAnswerAt: at, build: scrape.build });
        for (const [key, sample] of scrape.series) {
          const samples = this.#recent.get(key) ?? [];
          const previous = samples.at(-1);
          const interval = previous && intervalBetween(previous, sample);
          if (interval) this.history.add(key, interval);
          const kept = samples.filter((s) => s.at >= at - this.options.keepMs);
          kept.push(sample);
          this.#recent.set(key, kept);
        }
        // Series the service no longer exports (an unloaded version) age out of the live window.
        for (const [key, samples] of this.#recent) {
          if (parseSeriesKey(key).service === service && (samples.at(-1)?.at ?? 0) < at - this.options.keepMs) this.#recent.delete(key);
        }
      }),
    );
  }
}

/** What a series counted between two polls; undefined when its counters went back (a restart). */
function intervalBetween(from: Sample, to: Sample): Interval | undefined {
  const requests = to.requests - from.requests;
  if (requests < 0 || to.errors < from.errors) return undefined;
  if (from.buckets.length > 0 && to.buckets.length !== from.buckets.length) return undefined;
  let previousDelta = 0;
  const buckets = to.buckets.map(([le, cumulative], i) => {
    const delta = cumulative - (from.buckets[i]?.[1] ?? 0);
    const count = Math.max(0, delta - previousDelta);
    previousDelta = delta;
    return [le, count] as [number, number];
  });
  return { start: from.at, end: to.at, requests, errors: to.errors - from.errors, buckets };
}
