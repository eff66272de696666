import { newId } from "../runtime/storage/ids.js";
import { AlertKind, AlertState } from "../../gen/mlmesh/monitor/v1/monitor_pb.js";
import type { Thresholds } from "./config.js";
import type { WindowReport } from "./drift.js";
import { alertsFiring } from "./metrics.js";
import type { AlertRow, RecordStore } from "./record-store.js";

/*
 * Alerts: each closed window with enough rows (the model's min_rows) is held against the
 * model's thresholds. A condition that holds fires an alert once (kept firing while later
 * windows still meet it); the first later window with enough rows that does not meet it
 * resolves it. Conditions, one alert each: per feature, its PSI, KS statistic or absolute mean
 * shift above threshold (the first of these named); the predicted labels' largest share shift;
 * the outlier rate of scored rows. Every change is stored, then told to the watchers.
 */

export type AlertListener = (alert: AlertRow) => void;

interface Condition {
  readonly kind: AlertKind;
  readonly feature: string;
  /** The statistic that crossed, its value and threshold; undefined when none did. */
  readonly crossed: { statistic: string; value: number; threshold: number } | undefined;
}

export class AlertBook {
  /** Firing alerts by model, version, kind and feature. */
  readonly #firing = new Map<string, AlertRow>();
  readonly #listeners = new Set<AlertListener>();

  private constructor(private readonly store: RecordStore) {}

  /** The book with the alerts still firing in the database. */
  static async load(store: RecordStore): Promise<AlertBook> {
    const book = new AlertBook(store);
    let cursor: { firedAtMs: number; id: string } | undefined;
    for (;;) {
      const page = await store.alerts({ model: "", state: AlertState.FIRING }, 1000, cursor);
      for (const alert of page.slice(0, 1000)) book.#firing.set(keyOf(alert), alert);
      if (page.length <= 1000) break;
      const last = page[999];
      cursor = { firedAtMs: last.firedAtMs, id: last.id };
    }
    book.#updateGauge();
    return book;
  }

  /** Alerts firing now. */
  firing(): AlertRow[] {
    return [...this.#firing.values()];
  }

  /** Calls `listener` with every alert that fires or resolves from now on; returns the unsubscribe. */
  subscribe(listener: AlertListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Holds a closed window against the thresholds: fires and resolves alerts. */
  async evaluate(model: string, version: number, report: WindowReport, thresholds: Thresholds, nowMs: number): Promise<void> {
    const conditions: Condition[] = [];
    if (report.rows >= thresholds.minRows) {
      for (const f of report.features) {
        const crossed =
          f.psi > thresholds.psi
            ? { statistic: "psi", value: f.psi, threshold: thresholds.psi }
            : f.ks > thresholds.ks
              ? { statistic: "ks", value: f.ks, threshold: thresholds.ks }
              : Math.abs(f.meanShift) > thresholds.meanShift
                ? { statistic: "mean_shift", value: f.meanShift, threshold: thresholds.meanShift }
                : undefined;
        conditions.push({ kind: AlertKind.FEATURE_DRIFT, feature: f.feature, crossed });
      }
      if (report.labels !== undefined) {
        const { maxShift } = report.labels;
        conditions.push({ kind: AlertKind.LABEL_DRIFT, feature: "", crossed: maxShift > thresholds.labelShift ? { statistic: "label_shift", value: maxShift, threshold: thresholds.labelShift } : undefined });
      }
    }
    if (report.scoredRows >= thresholds.minRows) {
      const rate = report.outlierRate;
      conditions.push({ kind: AlertKind.OUTLIER_RATE, feature: "", crossed: rate > thresholds.outlierRate ? { statistic: "outlier_rate", value: rate, threshold: thresholds.outlierRate } : undefined });
    }
    for (const condition of conditions) {
      const key = keyOf({ model, version, kind: condition.kind, feature: condition.feature });
      const firing = this.#firing.get(key);
      if (condition.crossed !== undefined && firing === undefined) {
        const { statistic, value, threshold } = condition.crossed;
        const alert: AlertRow = {
          id: newId(),
          model,
          version,
          kind: condition.kind,
          feature: condition.feature,
          statistic,
          state: AlertState.FIRING,
          value,
          threshold,
          windowStartMs: report.startMs,
          firedAtMs: nowMs,
          resolvedAtMs: undefined,
          summary: `${model} v${version}: ${condition.feature === "" ? "" : `${condition.feature} `}${statistic} ${round(value)} > ${threshold} in the window from ${new Date(report.startMs).toISOString()}`,
        };
        await this.store.insertAlert(alert);
        this.#firing.set(key, alert);
        this.#tell(alert);
      } else if (condition.crossed === undefined && firing !== undefined) {
        await this.store.resolveAlert(firing.id, nowMs);
        this.#firing.delete(key);
        this.#tell({ ...firing, state: AlertState.RESOLVED, resolvedAtMs: nowMs });
      }
    }
    this.#updateGauge();
  }

  #tell(alert: AlertRow): void {
    for (const listener of this.#listeners) listener(alert);
  }

  #updateGauge(): void {
    alertsFiring.reset();
    for (const a of this.#firing.values()) alertsFiring.inc({ model: a.model, version: String(a.version), kind: kindName(a.kind) });
  }
}

/** The alert kind as metrics and alert rules name it. */
export function kindName(kind: number): string {
  return kind === AlertKind.FEATURE_DRIFT ? "feature_drift" : kind === AlertKind.LABEL_DRIFT ? "label_drift" : kind === AlertKind.OUTLIER_RATE ? "outlier_rate" : "unknown";
}

function keyOf(a: { model: string; version: number; kind: number; feature: string }): string {
  return `${a.model}\u0000${a.version}\u0000${a.kind}\u0000${a.feature}`;
}

function round(value: number): string {
  return String(Math.round(value * 1000) / 1000);
}
