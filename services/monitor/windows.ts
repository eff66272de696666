import type { Logger } from "../runtime/observability/logger.js";
import type { AlertBook } from "./alerts.js";
import type { MonitorConfig } from "./config.js";
import { WindowStats, type WindowReport } from "./drift.js";
import { featureKs, featureMeanShift, featurePsi, labelShift, lateRecords, outlierRate, windowRequests, windowRows } from "./metrics.js";
import type { RecordStore } from "./record-store.js";
import type { IngestedRecord } from "./record-wire.js";
import type { ReferenceBook } from "./references.js";

/*
 * The open windows: every stored Predictor record counts in the window of its model version
 * and time (MONITOR_WINDOW, aligned to the epoch). A window closes MONITOR_WINDOW_GRACE after
 * its end: its report against the version's reference profile is stored, exported as metrics
 * and held against the thresholds (alerts.ts). A record for a window already closed is stored
 * but counted late. At start, the records of windows that may still be open are read back, so
 * a restart loses no window; a window stored before the restart is not stored (or alerted) twice.
 */

/** Records read back at start at most (newest windows first would need more; this bounds the start). */
const maxReplayRecords = 2_000_000;

export class WindowBook {
  readonly #open = new Map<string, { model: string; version: number; stats: WindowStats }>();

  constructor(
    private readonly config: MonitorConfig,
    private readonly store: RecordStore,
    private readonly references: ReferenceBook,
    private readonly alerts: AlertBook,
    private readonly logger: Logger,
  ) {}

  /** Counts newly stored records (Predictor records only; the Proxy's and batch's ran no model). */
  add(records: Iterable<IngestedRecord>, nowMs: number): void {
    const { windowMs, graceMs, sampleRows } = this.config;
    for (const record of records) {
      if (record.source !== 1) continue;
      const startMs = Math.floor(record.timeMs / windowMs) * windowMs;
      if (startMs + windowMs + graceMs <= nowMs) {
        lateRecords.inc();
        continue;
      }
      const key = `${record.model}\u0000${record.version}\u0000${startMs}`;
      let window = this.#open.get(key);
      if (window === undefined) {
        window = { model: record.model, version: record.version, stats: new WindowStats(startMs, sampleRows) };
        this.#open.set(key, window);
      }
      window.stats.add(record);
    }
  }

  /** Reads back the records of windows that may still be open, or closed while the monitor was down. */
  async replay(nowMs: number, decode: (bytes: Uint8Array) => IngestedRecord): Promise<number> {
    const { windowMs, graceMs } = this.config;
    const sinceMs = Math.floor((nowMs - 2 * windowMs - graceMs) / windowMs) * windowMs;
    let count = 0;
    for await (const page of this.store.predictorRecordsSince(sinceMs, maxReplayRecords)) {
      // Counted as if it were the moment they were stored: none is late.
      for (const bytes of page) this.add([decode(bytes)], Number.NEGATIVE_INFINITY);
      count += page.length;
    }
    return count;
  }

  /** Closes the windows whose grace has passed, oldest first. */
  async closeDue(nowMs: number): Promise<void> {
    const { windowMs, graceMs } = this.config;
    const due = [...this.#open.entries()].filter(([, w]) => w.stats.startMs + windowMs + graceMs <= nowMs).sort((a, b) => a[1].stats.startMs - b[1].stats.startMs);
    for (const [key, window] of due) {
      this.#open.delete(key);
      try {
        await this.#close(window.model, window.version, window.stats, nowMs);
      } catch (err) {
        this.logger.error({ model: window.model, version: window.version, windowStart: new Date(window.stats.startMs).toISOString(), err: (err as Error).message }, "cannot close a drift window");
      }
    }
  }

  async #close(model: string, version: number, stats: WindowStats, nowMs: number): Promise<void> {
    await this.references.refresh(model, version);
    const report = stats.report(this.references.profile(model, version), false);
    if (!(await this.store.insertWindow(model, version, report))) return; // stored before a restart
    const labels = { model, version: String(version) };
    windowRequests.set(labels, report.requests);
    windowRows.set(labels, report.rows);
    outlierRate.set(labels, report.outlierRate);
    for (const f of report.features) {
      featurePsi.set({ ...labels, feature: f.feature }, f.psi);
      featureKs.set({ ...labels, feature: f.feature }, f.ks);
      featureMeanShift.set({ ...labels, feature: f.feature }, f.meanShift);
    }
    if (report.labels !== undefined) labelShift.set(labels, report.labels.maxShift);
    await this.alerts.evaluate(model, version, report, this.references.thresholds(model), nowMs);
  }

  /** The open windows of a model version, oldest first, as partial reports. */
  openReports(model: string, version: number): WindowReport[] {
    return [...this.#open.values()]
      .filter((w) => w.model === model && w.version === version)
      .sort((a, b) => a.stats.startMs - b.stats.startMs)
      .map((w) => w.stats.report(this.references.profile(model, version), true));
  }

  /** The highest version of a model with an open window; 0 for none. */
  latestOpenVersion(model: string): number {
    let latest = 0;
    for (const w of this.#open.values()) if (w.model === model && w.version > latest) latest = w.version;
    return latest;
  }
}
