import { binOf, type ReferenceProfile } from "../model/reference-profile.js";
import type { IngestedRecord } from "./record-wire.js";

/*
 * One model version's statistics over one window, and how they compare with its reference
 * profile. Counts and means are exact; the distributions (PSI, KS) are computed on a uniform
 * sample of the window's rows (reservoir sampling, MONITOR_SAMPLE_ROWS), which keeps a window's
 * memory bounded whatever the traffic.
 *
 *  - PSI: sum over the reference's decile bins of (a - e) * ln(a / e), an empty bin counted as
 *    half a row (so one bin left empty by chance does not read as a large shift).
 *    Rules of thumb: below 0.1 stable, 0.1-0.25 a moderate shift, above 0.25 a large one.
 *  - KS: the largest vertical gap between the reference sample's and the window sample's
 *    empirical distribution functions (0: identical, 1: disjoint).
 *  - mean shift: (window mean - reference mean) / reference standard deviation.
 *  - label drift: each label's share of the window's predicted labels against its share of
 *    the training labels; the largest absolute difference, and their PSI.
 */

/** What a closed (or still open) window reports: monitor.proto's DriftWindow, as plain data (also its stored JSON). */
export interface WindowReport {
  readonly startMs: number;
  readonly partial: boolean;
  readonly requests: number;
  readonly rows: number;
  readonly errors: number;
  readonly scoredRows: number;
  readonly outlierRows: number;
  readonly outlierRate: number;
  readonly features: readonly { feature: string; psi: number; ks: number; mean: number; referenceMean: number; meanShift: number }[];
  readonly labels: { shares: { label: string; share: number; referenceShare: number }[]; maxShift: number; psi: number } | undefined;
  readonly latencyP50Ms: number;
}

const shareFloor = 1e-4;
const latencySamples = 2048;

export class WindowStats {
  requests = 0;
  rows = 0;
  errors = 0;
  scoredRows = 0;
  outlierRows = 0;
  width = 0;
  /** Per feature: the exact sum of every row's value (for the mean). */
  sums: Float64Array = new Float64Array(0);
  /** A uniform sample of rows, packed: row i is sample[i * width, (i + 1) * width). */
  sample: Float32Array = new Float32Array(0);
  /** Rows in the sample, and rows the sample has seen (reservoir sampling's counter). */
  sampleCount = 0;
  sampled = 0;
  /** Predicted label counts, by label. */
  readonly labelCounts = new Map<string, number>();
  readonly latencies: number[] = [];
  latencySeen = 0;

  constructor(
    readonly startMs: number,
    private readonly sampleRows: number,
  ) {}

  /** Counts one Predictor record. */
  add(record: IngestedRecord): void {
    this.requests++;
    if (record.status !== 0) this.errors++;
    this.latencySeen++;
    if (this.latencies.length < latencySamples) this.latencies.push(record.latencyMs);
    else {
      const j = Math.floor(Math.random() * this.latencySeen);
      if (j < latencySamples) this.latencies[j] = record.latencyMs;
    }
    if (record.status !== 0) return;
    const { width, values, outlierScores, probabilities, labels } = record;
    const rowCount = values !== undefined && width > 0 ? Math.floor(values.length / width) : record.rowCount;
    this.rows += rowCount;
    if (outlierScores !== undefined) {
      this.scoredRows += outlierScores.length;
      this.outlierRows += record.outlierRows;
    }
    if (values !== undefined && width > 0) {
      if (this.width === 0) {
        this.width = width;
        this.sums = new Float64Array(width);
        this.sample = new Float32Array(this.sampleRows * width);
      }
      if (width === this.width) {
        const sums = this.sums;
        for (let r = 0; r < rowCount; r++) {
          const at = r * width;
          for (let f = 0; f < width; f++) sums[f] += values[at + f];
          this.#sampleRow(values, at);
        }
      }
    }
    if (probabilities !== undefined && labels.length > 0) {
      const classes = labels.length;
      for (let r = 0; r + classes <= probabilities.length; r += classes) {
        let best = 0;
        for (let c = 1; c < classes; c++) if (probabilities[r + c] > probabilities[r + best]) best = c;
        this.labelCounts.set(labels[best], (this.labelCounts.get(labels[best]) ?? 0) + 1);
      }
    }
  }

  /** Reservoir sampling (algorithm R): every row seen has the same chance to be in the sample. */
  #sampleRow(values: Float32Array, at: number): void {
    this.sampled++;
    let slot = this.sampleCount;
    if (slot < this.sampleRows) this.sampleCount++;
    else {
      slot = Math.floor(Math.random() * this.sampled);
      if (slot >= this.sampleRows) return;
    }
    const width = this.width;
    for (let f = 0; f < width; f++) this.sample[slot * width + f] = values[at + f];
  }

  /** The window's report against `profile` (undefined: counts only). */
  report(profile: ReferenceProfile | undefined, partial: boolean): WindowReport {
    const features: WindowReport["features"][number][] = [];
    const valueRows = this.sampleCount;
    if (profile !== undefined && this.width === profile.features.length && valueRows > 0) {
      const counted = this.rows > 0 ? this.rows : valueRows;
      profile.features.forEach((reference, f) => {
        const values = new Float64Array(valueRows);
        for (let i = 0; i < valueRows; i++) values[i] = this.sample[i * this.width + f];
        values.sort();
        const mean = this.sums[f] / counted;
        // Rows arrive as float32: the reference's edges and values are compared at that precision,
        // or a row of 2.9 (2.9000000953674316 in float32) would land past an edge of 2.9.
        features.push({
          feature: reference.name,
          psi: psiOf(reference.edges.map(Math.fround), reference.shares, values, profile.rows),
          ks: ksOf(reference.sample.map(Math.fround), values),
          mean,
          referenceMean: reference.mean,
          meanShift: (mean - reference.mean) / (reference.std > 0 ? reference.std : 1),
        });
      });
    }
    let labels: WindowReport["labels"];
    const predicted = [...this.labelCounts.values()].reduce((s, c) => s + c, 0);
    if (profile !== undefined && profile.labels.length > 0 && predicted > 0) {
      const shares = profile.labels.map((l) => ({ label: l.label, share: (this.labelCounts.get(l.label) ?? 0) / predicted, referenceShare: l.share }));
      const maxShift = Math.max(...shares.map((s) => Math.abs(s.share - s.referenceShare)));
      const psi = shares.reduce((sum, s) => sum + psiTerm(s.share, s.referenceShare), 0);
      labels = { shares, maxShift, psi };
    }
    const sortedLatency = [...this.latencies].sort((a, b) => a - b);
    return {
      startMs: this.startMs,
      partial,
      requests: this.requests,
      rows: this.rows,
      errors: this.errors,
      scoredRows: this.scoredRows,
      outlierRows: this.outlierRows,
      outlierRate: this.scoredRows > 0 ? this.outlierRows / this.scoredRows : 0,
      features,
      labels,
      latencyP50Ms: sortedLatency.length > 0 ? sortedLatency[Math.floor((sortedLatency.length - 1) / 2)] : 0,
    };
  }
}

/** One bin's PSI term; an empty bin counts as half a row of its sample (or 1e-4), not as zero, whose log is infinite. */
function psiTerm(actual: number, expected: number, actualFloor = shareFloor, expectedFloor = shareFloor): number {
  const a = Math.max(actual, actualFloor);
  const e = Math.max(expected, expectedFloor);
  return (a - e) * Math.log(a / e);
}

/** PSI of window values over the reference's bins (`referenceRows`: how many rows the shares came from). */
export function psiOf(edges: readonly number[], expected: readonly number[], values: ArrayLike<number>, referenceRows: number): number {
  const counts = new Array<number>(edges.length + 1).fill(0);
  for (let i = 0; i < values.length; i++) counts[binOf(edges, values[i])]++;
  let psi = 0;
  for (let b = 0; b < counts.length; b++) psi += psiTerm(counts[b] / values.length, expected[b], 0.5 / values.length, 0.5 / Math.max(1, referenceRows));
  return psi;
}

/** The two-sample Kolmogorov-Smirnov statistic of two sorted samples (ties handled: both step past equal values). */
export function ksOf(reference: readonly number[], values: ArrayLike<number>): number {
  let i = 0;
  let j = 0;
  let gap = 0;
  const n = reference.length;
  const m = values.length;
  while (i < n && j < m) {
    const x = Math.min(reference[i], values[j]);
    while (i < n && reference[i] <= x) i++;
    while (j < m && values[j] <= x) j++;
    gap = Math.max(gap, Math.abs(i / n - j / m));
  }
  return gap;
}
