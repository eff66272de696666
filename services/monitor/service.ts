import { fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs, timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { AlertSchema, DriftWindowSchema, PredictionRecordSchema, type MonitorService } from "../../gen/mlmesh/monitor/v1/monitor_pb.js";
import { invalidArgument } from "../runtime/serve/errors.js";
import { decodePageToken, defaultPageSize, encodePageToken } from "../runtime/serve/pagination.js";
import type { PartialServiceImpl } from "../runtime/serve/registration.js";
import type { AlertBook } from "./alerts.js";
import type { MonitorConfig } from "./config.js";
import type { WindowReport } from "./drift.js";
import { recordsIngested } from "./metrics.js";
import type { AlertRow, RecordStore } from "./record-store.js";
import { ingestedRecords, type IngestedRecord } from "./record-wire.js";
import type { ReferenceBook } from "./references.js";
import type { WindowBook } from "./windows.js";
import type { TrafficBook } from "./traffic.js";

/** What the handlers work on. */
export interface MonitorDeps {
  readonly config: MonitorConfig;
  readonly store: RecordStore;
  readonly windows: WindowBook;
  readonly traffic: TrafficBook;
  readonly alerts: AlertBook;
  readonly references: ReferenceBook;
  /** Aborts when the server stops: watch streams end. */
  readonly stopping: AbortSignal;
}

/** Messages of one IngestRecords stream being stored at once. */
const maxStoringPerStream = 8;

/** Records linked to one request id that GetPrediction returns at most. */
const maxLinked = 100;
const hourMs = 3_600_000;
/** The largest time a JavaScript Date holds (beyond it no ISO string can name it). */
const maxTimeMs = 8.64e15;

/** A Duration of fractional (possibly negative) milliseconds: whole nanoseconds, seconds and nanos of one sign. */
function exactDuration(ms: number) {
  const seconds = Math.trunc(ms / 1000);
  return { seconds: BigInt(seconds), nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

/** The MonitorService handlers. Contract rules (lengths, page sizes) are checked before they run. */
export function createMonitorService(deps: MonitorDeps): PartialServiceImpl<typeof MonitorService> {
  const { store, windows, traffic, alerts, references, config } = deps;
  return {
    async ingestRecords(requests) {
      let accepted = 0;
      let duplicates = 0;
      const store1 = async (records: readonly IngestedRecord[]) => {
        const inserted = await store.insert(records);
        accepted += inserted.size;
        duplicates += records.length - inserted.size;
        const stored = inserted.size === records.length ? records : records.filter((r) => inserted.has(r.requestId));
        windows.add(stored, Date.now());
        traffic.add(stored);
        recordsIngested.inc({ outcome: "stored" }, inserted.size);
        if (records.length > inserted.size) recordsIngested.inc({ outcome: "duplicate" }, records.length - inserted.size);
      };
      // Messages are read while earlier ones are being stored (they share group commits), up
      // to a few at a time per stream; the answer waits for all of them.
      const storing = new Set<Promise<void>>();
      let failure: unknown;
      try {
        for await (const request of requests) {
          if (failure !== undefined) throw failure;
          const done: Promise<void> = store1(ingestedRecords(request))
            .catch((err: unknown) => void (failure ??= err))
            .finally(() => storing.delete(done));
          storing.add(done);
          if (storing.size >= maxStoringPerStream) await Promise.race(storing);
        }
      } finally {
        await Promise.all(storing);
      }
      if (failure !== undefined) throw failure;
      return { accepted: BigInt(accepted), duplicates: BigInt(duplicates) };
    },

    async listPredictions(request) {
      const { startMs, endMs } = timeRange(request.startTime, request.endTime, Date.now() - config.retentionMs);
      const pageSize = request.pageSize || defaultPageSize;
      const cursor = request.pageToken === "" ? undefined : cursorOf(decodePageToken(request.pageToken));
      if (cursor === undefined && !(await store.hasModel(request.model))) throw unknownModel(request.model);
      const query = { model: request.model, version: request.version, startMs, endMs, outliersOnly: request.outliersOnly, source: request.source };
      const rows = await store.list(query, pageSize, cursor);
      const page = rows.slice(0, pageSize);
      const last = page[page.length - 1];
      return {
        records: page.map((r) => fromBinary(PredictionRecordSchema, r.record)),
        nextPageToken: rows.length > pageSize ? encodePageToken(JSON.stringify([last.timeMs, last.requestId])) : "",
      };
    },

    async getPrediction(request) {
      const found = await store.get(request.requestId);
      if (found === undefined) throw new ConnectError(`no prediction record has request id "${request.requestId}" (never recorded, sampled out, or older than the retention)`, Code.NotFound);
      const linked: Uint8Array[] = [];
      if (found.parentRequestId !== undefined) {
        const parent = await store.get(found.parentRequestId);
        if (parent !== undefined) linked.push(parent.record);
      }
      linked.push(...(await store.children(request.requestId, maxLinked)));
      return { record: fromBinary(PredictionRecordSchema, found.record), linked: linked.map((bytes) => fromBinary(PredictionRecordSchema, bytes)) };
    },

    async getDriftReport(request) {
      const now = Date.now();
      const { startMs, endMs } = timeRange(request.startTime, request.endTime, now - hourMs);
      const model = request.model;
      let version = request.version;
      if (version === 0) {
        version = Math.max(windows.latestOpenVersion(model), await store.latestWindowVersion(model), await store.latestVersion(model, now - config.retentionMs));
        if (version === 0) throw unknownModel(model);
      }
      await references.refresh(model, version);
      const reports = await store.windows(model, version, startMs, endMs);
      if (request.includeOpenWindow) reports.push(...windows.openReports(model, version).filter((w) => w.startMs >= startMs && w.startMs < endMs));
      if (reports.length === 0 && !(await store.hasModel(model))) throw unknownModel(model);
      const t = references.thresholds(model);
      return {
        model,
        version,
        window: durationFromMs(config.windowMs),
        hasReference: references.profile(model, version) !== undefined,
        thresholds: { psi: t.psi, ks: t.ks, meanShift: t.meanShift, labelShift: t.labelShift, outlierRate: t.outlierRate, minRows: BigInt(t.minRows) },
        windows: reports.map(windowOut),
      };
    },

    getTrafficStats(request) {
      const endMs = request.endTime === undefined ? Date.now() : timestampMs(request.endTime);
      const startMs = request.startTime === undefined ? 0 : timestampMs(request.startTime);
      if (startMs >= endMs) throw new ConnectError("start_time must be before end_time", Code.InvalidArgument);
      const summary = traffic.summary(request.model, startMs, endMs);
      return {
        versions: summary.versions.map((v) => ({ version: v.version, requests: BigInt(v.requests), errors: BigInt(v.errors), p50Latency: exactDuration(v.p50Ms), p99Latency: exactDuration(v.p99Ms) })),
        shadows: summary.shadows.map((s) => ({
          primaryVersion: s.primaryVersion,
          shadowVersion: s.shadowVersion,
          calls: BigInt(s.calls),
          failed: BigInt(s.failed),
          rows: BigInt(s.rows),
          agreeingRows: BigInt(s.agreeingRows),
          meanAbsDifference: Number.isNaN(s.meanAbsDifference) ? undefined : s.meanAbsDifference,
          meanLatencyDifference: exactDuration(s.meanLatencyDifferenceMs),
        })),
        heldSince: timestampFromMs(summary.heldSinceMs),
      };
    },

    async listAlerts(request) {
      const pageSize = request.pageSize || defaultPageSize;
      const cursor = request.pageToken === "" ? undefined : alertCursorOf(decodePageToken(request.pageToken));
      const rows = await store.alerts({ model: request.model, state: request.state }, pageSize, cursor);
      const page = rows.slice(0, pageSize);
      const last = page[page.length - 1];
      return { alerts: page.map(alertOut), nextPageToken: rows.length > pageSize ? encodePageToken(JSON.stringify([last.firedAtMs, last.id])) : "" };
    },

    async *watchAlerts(request, ctx) {
      const signal = AbortSignal.any([ctx.signal, deps.stopping]);
      const wanted = (a: AlertRow) => request.model === "" || a.model === request.model;
      const queue: AlertRow[] = [];
      let wake: (() => void) | undefined;
      const unsubscribe = alerts.subscribe((alert) => {
        if (!wanted(alert)) return;
        queue.push(alert);
        wake?.();
      });
      const onAbort = () => wake?.();
      signal.addEventListener("abort", onAbort);
      try {
        for (const alert of alerts.firing().filter(wanted)) yield { alert: alertOut(alert) };
        while (!signal.aborted) {
          const next = queue.shift();
          if (next !== undefined) {
            yield { alert: alertOut(next) };
            continue;
          }
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
        }
      } finally {
        unsubscribe();
        signal.removeEventListener("abort", onAbort);
      }
    },
  };
}

/** The range asked for, checked: unset start is `defaultStartMs`, unset end is now. */
function timeRange(start: Timestamp | undefined, end: Timestamp | undefined, defaultStartMs: number): { startMs: number; endMs: number } {
  const startMs = start === undefined ? defaultStartMs : timestampMs(start);
  const endMs = end === undefined ? Date.now() + 1 : timestampMs(end);
  if (!(Math.abs(startMs) <= maxTimeMs) || !(Math.abs(endMs) <= maxTimeMs)) throw invalidArgument("start_time and end_time must be valid timestamps", [{ field: "start_time", description: "not a valid timestamp" }]);
  if (endMs <= startMs) {
    const description = `the time range ends (${new Date(endMs).toISOString()}) before it starts (${new Date(startMs).toISOString()})`;
    throw invalidArgument(description, [{ field: "end_time", description, reason: "RANGE" }]);
  }
  return { startMs, endMs };
}

function unknownModel(model: string): ConnectError {
  return new ConnectError(`no prediction of model "${model}" is recorded (never served with the prediction log on, or older than the retention)`, Code.NotFound);
}

function cursorOf(key: string): { timeMs: number; requestId: string } {
  const parsed = JSON.parse(key) as unknown;
  if (!Array.isArray(parsed) || typeof parsed[0] !== "number" || typeof parsed[1] !== "string") throw invalidArgument("page_token was not made by this service", [{ field: "page_token", description: "not a token of this service" }]);
  return { timeMs: parsed[0], requestId: parsed[1] };
}

function alertCursorOf(key: string): { firedAtMs: number; id: string } {
  const { timeMs, requestId } = cursorOf(key);
  return { firedAtMs: timeMs, id: requestId };
}

function windowOut(w: WindowReport): MessageInitShape<typeof DriftWindowSchema> {
  return {
    startTime: timestampFromMs(w.startMs),
    partial: w.partial,
    requests: BigInt(w.requests),
    rows: BigInt(w.rows),
    errors: BigInt(w.errors),
    scoredRows: BigInt(w.scoredRows),
    outlierRows: BigInt(w.outlierRows),
    outlierRate: w.outlierRate,
    features: w.features.map((f) => ({ feature: f.feature, psi: f.psi, ks: f.ks, mean: f.mean, referenceMean: f.referenceMean, meanShift: f.meanShift })),
    labels: w.labels && { shares: w.labels.shares, maxShift: w.labels.maxShift, psi: w.labels.psi },
    latencyP50Ms: w.latencyP50Ms,
  };
}

function alertOut(a: AlertRow): MessageInitShape<typeof AlertSchema> {
  return {
    id: a.id,
    kind: a.kind,
    state: a.state,
    model: a.model,
    version: a.version,
    feature: a.feature,
    statistic: a.statistic,
    value: a.value,
    threshold: a.threshold,
    windowStart: timestampFromMs(a.windowStartMs),
    fireTime: timestampFromMs(a.firedAtMs),
    resolveTime: a.resolvedAtMs === undefined ? undefined : timestampFromMs(a.resolvedAtMs),
    summary: a.summary,
  };
}
