import { ModelArtifactError } from "./metadata.js";

/*
 * A version's reference profile (reference_profile.json, a companion file of its artifact):
 * what its training inputs and labels looked like, in enough detail for the monitor to compute
 * drift without the data itself. `mlmesh models push` computes it from the folder's
 * training_data.csv when the version is pushed; the monitor reads it from the registry.
 *
 * Per feature: the mean and standard deviation (mean shift), the decile edges and each bin's
 * share (PSI), and a sorted sample of at most 1,000 values (the Kolmogorov-Smirnov statistic
 * against a window's values). Per label: its share of the training labels (label drift).
 */

export const referenceProfileFormat = "mlmesh.reference_profile.v1";
/** Values kept per feature for the KS statistic: evenly spaced order statistics beyond this. */
const maxSample = 1000;
const decileCount = 10;

export interface FeatureProfile {
  readonly name: string;
  readonly mean: number;
  readonly std: number;
  /** Ascending, distinct inner edges: bin i holds values <= edges[i] (and > edges[i-1]); the last bin the rest. */
  readonly edges: readonly number[];
  /** Each bin's share of the training values (edges.length + 1 bins). */
  readonly shares: readonly number[];
  /** Sorted sample of the training values. */
  readonly sample: readonly number[];
}

export interface ReferenceProfile {
  readonly format: typeof referenceProfileFormat;
  readonly rows: number;
  readonly features: readonly FeatureProfile[];
  /** Each training label's share, by label; empty when the data had no labels. */
  readonly labels: readonly { readonly label: string; readonly share: number }[];
}

/** The bin of `value` among ascending inner edges (binary search). */
export function binOf(edges: readonly number[], value: number): number {
  let lo = 0;
  let hi = edges.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (value <= edges[mid]) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** Computes the profile of training rows (and their labels, by name, when known). */
export function computeReferenceProfile(featureNames: readonly string[], rows: readonly (readonly number[])[], labels?: readonly string[], labelNames?: readonly string[]): ReferenceProfile {
  if (rows.length === 0) throw new ModelArtifactError("the training data has no rows");
  const features = featureNames.map((name, f): FeatureProfile => {
    // As the model sees them: float32.
    const values = rows.map((r) => Math.fround(r[f])).sort((a, b) => a - b);
    const n = values.length;
    const mean = values.reduce((s, v) => s + v, 0) / n;
    const std = Math.sqrt(values.reduce((s, v) => s + (v - mean) ** 2, 0) / n);
    const edges = [...new Set(Array.from({ length: decileCount - 1 }, (_, i) => quantile(values, (i + 1) / decileCount)))];
    const counts = new Array<number>(edges.length + 1).fill(0);
    for (const v of values) counts[binOf(edges, v)]++;
    const sample = n <= maxSample ? values : Array.from({ length: maxSample }, (_, i) => values[Math.round((i * (n - 1)) / (maxSample - 1))]);
    return { name, mean: short(mean), std: short(std), edges: edges.map(short), shares: counts.map((c) => short(c / n)), sample: sample.map(short) };
  });
  const labelShares: { label: string; share: number }[] = [];
  if (labels !== undefined && labels.length > 0) {
    const names = labelNames ?? [...new Set(labels)].sort();
    for (const label of names) labelShares.push({ label, share: short(labels.filter((l) => l === label).length / labels.length) });
  }
  return { format: referenceProfileFormat, rows: rows.length, features, labels: labelShares };
}

/** A float32 value's shortest decimal (7 significant digits): the profile stays small, and reads back as the same float32. */
function short(value: number): number {
  return Number(value.toPrecision(7));
}

/** Linear-interpolated quantile of sorted values. */
function quantile(sorted: readonly number[], q: number): number {
  const at = q * (sorted.length - 1);
  const lo = Math.floor(at);
  const hi = Math.min(sorted.length - 1, lo + 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo);
}

/**
 * Reads training_data.csv: a header naming the model's features (any order; extra columns
 * ignored) and optionally "label", then one row per line. Throws ModelArtifactError naming the
 * line and column of anything that is not a finite number.
 */
export function parseTrainingCsv(text: string, featureNames: readonly string[]): { rows: number[][]; labels: string[] | undefined } {
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== "");
  if (lines.length < 2) throw new ModelArtifactError("training_data.csv needs a header and at least one row");
  const header = lines[0].split(",").map((h) => h.trim());
  const columns = featureNames.map((name) => {
    const at = header.indexOf(name);
    if (at === -1) throw new ModelArtifactError(`training_data.csv has no column "${name}" (its header: ${header.join(", ")})`);
    return at;
  });
  const labelColumn = header.indexOf("label");
  const rows: number[][] = [];
  const labels: string[] = [];
  for (let i = 1; i < lines.length; i++) {
    const cells = lines[i].split(",");
    rows.push(
      columns.map((c, f) => {
        const value = Number(cells[c]);
        if (cells[c] === undefined || cells[c].trim() === "" || !Number.isFinite(value)) {
          throw new ModelArtifactError(`training_data.csv line ${i + 1}: ${featureNames[f]} is "${cells[c] ?? ""}", not a finite number`);
        }
        return value;
      }),
    );
    if (labelColumn !== -1) labels.push((cells[labelColumn] ?? "").trim());
  }
  return { rows, labels: labelColumn === -1 ? undefined : labels };
}

/** Parses and checks reference_profile.json; throws ModelArtifactError naming what is wrong. */
export function parseReferenceProfile(text: string): ReferenceProfile {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ModelArtifactError(`reference_profile.json is not JSON: ${(err as Error).message}`);
  }
  const p = raw as Partial<ReferenceProfile>;
  if (p?.format !== referenceProfileFormat) throw new ModelArtifactError(`reference_profile.json: format must be "${referenceProfileFormat}"`);
  if (!Array.isArray(p.features) || !Array.isArray(p.labels) || typeof p.rows !== "number") throw new ModelArtifactError("reference_profile.json: rows, features and labels are required");
  const finite = (v: unknown) => typeof v === "number" && Number.isFinite(v);
  for (const f of p.features) {
    const ok =
      typeof f?.name === "string" &&
      finite(f.mean) &&
      finite(f.std) &&
      Array.isArray(f.edges) &&
      f.edges.every(finite) &&
      Array.isArray(f.shares) &&
      f.shares.length === f.edges.length + 1 &&
      f.shares.every(finite) &&
      Array.isArray(f.sample) &&
      f.sample.length > 0 &&
      f.sample.every(finite);
    if (!ok) throw new ModelArtifactError(`reference_profile.json: feature ${JSON.stringify(f?.name ?? "?")} is malformed`);
  }
  for (const l of p.labels) if (typeof l?.label !== "string" || !finite(l.share)) throw new ModelArtifactError("reference_profile.json: a label share is malformed");
  return p as ReferenceProfile;
}
