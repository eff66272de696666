import type { Registry } from "prom-client";

/*
 * Counters, gauges and histograms for the per-RPC hot path, registered in prom-client's registry
 * like its own metrics: prom-client still writes the exposition (escaping, HELP/TYPE lines) and
 * the process metrics. What differs is the recording: prom-client hashes and checks the label
 * values on every inc() and observe(), even through labels() children — about half a
 * microsecond each, nine times per Predict (docs/benchmarks.md). Here a labels() child is one
 * plain record, made once, that inc() and observe() update in place.
 */

type Labels = Record<string, string | number>;

/** What prom-client's registry reads from a metric at scrape time (Registry.getMetricsAsString). */
interface ScrapedMetric {
  readonly name: string;
  readonly help: string;
  readonly type: "counter" | "gauge" | "histogram";
  readonly aggregator: "sum";
  readonly values: readonly { metricName?: string; labels: Labels; value: number }[];
}

abstract class HotMetric<Child> {
  readonly aggregator = "sum" as const;
  readonly #children = new Map<string, { labels: Labels; child: Child }>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
    registry: Registry,
  ) {
    registry.registerMetric(this as never);
  }

  /** The child of one set of label values (in labelNames order); look it up once and keep it. */
  labels(...values: string[]): Child {
    if (values.length !== this.labelNames.length) throw new Error(`${this.name} takes ${this.labelNames.length} label values, got ${values.length}`);
    const key = values.join("\u0000");
    let entry = this.#children.get(key);
    if (entry === undefined) {
      const labels = Object.fromEntries(this.labelNames.map((name, i) => [name, values[i]]));
      entry = { labels, child: this.newChild() };
      this.#children.set(key, entry);
    }
    return entry.child;
  }

  protected abstract newChild(): Child;

  protected children(): Iterable<{ labels: Labels; child: Child }> {
    return this.#children.values();
  }
}

export class HotCounter extends HotMetric<{ value: number; inc(by?: number): void }> {
  readonly type = "counter" as const;

  protected newChild() {
    return {
      value: 0,
      inc(by = 1) {
        this.value += by;
      },
    };
  }

  async get(): Promise<ScrapedMetric> {
    const values = [...this.children()].map(({ labels, child }) => ({ labels, value: child.value }));
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}

export class HotGauge extends HotMetric<{ value: number; inc(): void; dec(): void }> {
  readonly type = "gauge" as const;

  protected newChild() {
    return {
      value: 0,
      inc() {
        this.value++;
      },
      dec() {
        this.value--;
      },
    };
  }

  async get(): Promise<ScrapedMetric> {
    const values = [...this.children()].map(({ labels, child }) => ({ labels, value: child.value }));
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}

interface HistogramChild {
  /** Observations per bucket (not cumulative); the last is +Inf. */
  readonly counts: Float64Array;
  sum: number;
  observe(value: number): void;
}

export class HotHistogram extends HotMetric<HistogramChild> {
  readonly type = "histogram" as const;

  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    readonly buckets: readonly number[],
    registry: Registry,
  ) {
    super(name, help, labelNames, registry);
  }

  protected newChild(): HistogramChild {
    const buckets = this.buckets;
    return {
      counts: new Float64Array(buckets.length + 1),
      sum: 0,
      observe(value: number) {
        let i = 0;
        while (i < buckets.length && value > buckets[i]) i++;
        this.counts[i]++;
        this.sum += value;
      },
    };
  }

  async get(): Promise<ScrapedMetric> {
    const values: { metricName: string; labels: Labels; value: number }[] = [];
    for (const { labels, child } of this.children()) {
      let cumulative = 0;
      for (let i = 0; i <= this.buckets.length; i++) {
        cumulative += child.counts[i];
        values.push({ metricName: `${this.name}_bucket`, labels: { le: i < this.buckets.length ? this.buckets[i] : "+Inf", ...labels }, value: cumulative });
      }
      values.push({ metricName: `${this.name}_sum`, labels, value: child.sum });
      values.push({ metricName: `${this.name}_count`, labels, value: cumulative });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}
