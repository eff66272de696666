import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { InvalidRows, PredictorService } from "../../gen/mlmesh/predictor/v1/predictor_pb.js";
import type { GrpcClient } from "../runtime/client/grpc-client.js";
import type { TraceSpan } from "../runtime/observability/tracing.js";
import { RecordSource, type PredictionLog } from "../runtime/prediction-log/prediction-log.js";
import type { BatchConfig } from "./config.js";
import type { ClaimedItem, ItemResult, ItemStore, JobRun } from "./item-store.js";

/** What one run of the batch job needs (narrow, so tests can give it fakes). */
export interface BatchJobDeps {
  readonly store: Pick<ItemStore, "claim" | "complete" | "release" | "recordRun">;
  readonly predictor: Pick<GrpcClient, "unary">;
  readonly config: Pick<BatchConfig, "model" | "modelVersion" | "claimSize" | "rowsPerRequest" | "parallelism" | "leaseMs">;
  /** Names this worker in claims and job runs (host:pid:...). */
  readonly worker: string;
  /** Per Predict request. */
  readonly requestTimeoutMs?: number;
  /** The span the run belongs to (RunJobNow's, or a scheduled run's root): each Predict is a child. */
  readonly trace?: TraceSpan;
  /** Where each stored item's prediction is recorded (MONITOR_ADDRESS); undefined: not recorded. */
  readonly predictionLog?: PredictionLog;
}

/** A finished run, and why its record could not be stored when it could not. */
export interface JobRunOutcome {
  readonly run: JobRun;
  readonly recordError?: string;
}

/**
 * One run of the batch job: claims pending items in chunks of claimSize until none is left,
 * predicts each chunk with rowsPerRequest rows per Predict call and `parallelism` calls in
 * flight, and stores each chunk's results in one transaction, while the next chunk is claimed
 * and predicted. An item the model rejects (for
 * example the wrong number of values) is marked failed with its own reason in the same call
 * that predicts the rest of its request; when the Predictor is unavailable the chunk is released, left pending
 * for the next run, and the run stops. When the database fails (busy, unreachable) the run
 * stops with the reason: a chunk whose results could not be stored (and the chunk claimed after
 * it) is released if the database allows, else its lease runs out, and the next run predicts it again. Never throws:
 * the outcome says what happened, including whether the run's record was stored.
 */
export async function runBatchJob(deps: BatchJobDeps): Promise<JobRunOutcome> {
  const { store, config, worker } = deps;
  const startedAt = new Date();
  const totals: Totals = { claimed: 0, predicted: 0, failed: 0, released: 0, error: "" };
  // A chunk's results are stored while the next chunk is claimed and predicted (the database
  // and the Predictor work at once; on SQLite the claim takes the connection after the store's
  // transaction, runtime/storage/sqlite-adapter.ts); chunks are stored one at a time, in claim order.
  let storing: Promise<void> = Promise.resolve();
  let unstored: ClaimedItem[] = [];
  try {
    for (;;) {
      unstored = await store.claim(worker, config.claimSize, config.leaseMs);
      if (unstored.length === 0) break;
      totals.claimed += unstored.length;
      const chunks = chunk(unstored, config.rowsPerRequest);
      const outcomes = await mapConcurrent(chunks, config.parallelism, (items) => predictChunk(deps, items));
      await storing; // a failure to store the previous chunk ends the run here
      storing = storeChunk(deps, totals, unstored, outcomes);
      storing.catch(() => undefined); // awaited below; marked handled meanwhile
      unstored = [];
      const unavailable = outcomes.flatMap((o) => o.unpredicted);
      if (unavailable.length > 0) {
        await storing;
        totals.released += await store.release(worker, unavailable.map((i) => i.id));
        totals.error = outcomes.find((o) => o.error)?.error ?? "the Predictor did not answer";
        break;
      }
    }
    await storing;
  } catch (err) {
    await storing.catch(() => undefined);
    // A chunk claimed after one whose results could not be stored goes back too.
    if (unstored.length > 0) totals.released += await releaseIfPossible(deps, unstored);
    totals.error = (err as Error).message;
  }
  const run = { worker, startedAt, endedAt: new Date(), ...totals };
  const worthStoring = totals.claimed > 0 || totals.error !== "";
  try {
    return { run: await store.recordRun(run, worthStoring) };
  } catch (err) {
    return { run: { id: "", ...run }, recordError: (err as Error).message };
  }
}

/** A run's counts so far, and why it stopped. */
interface Totals {
  claimed: number;
  predicted: number;
  failed: number;
  released: number;
  error: string;
}

/**
 * Stores one chunk's predictions and failures in one transaction and counts them; when that
 * fails, gives the chunk back (if the database allows) and rejects with the reason.
 */
async function storeChunk(deps: BatchJobDeps, totals: Totals, claimed: readonly ClaimedItem[], outcomes: readonly ChunkOutcome[]): Promise<void> {
  let stored: { predicted: number; failed: number };
  try {
    stored = await deps.store.complete(
      deps.worker,
      outcomes.flatMap((o) => o.results),
      outcomes.flatMap((o) => o.failures),
    );
  } catch (err) {
    totals.released += await releaseIfPossible(deps, claimed);
    throw err;
  }
  totals.predicted += stored.predicted;
  totals.failed += stored.failed;
  if (deps.predictionLog !== undefined) for (const o of outcomes) recordItems(deps.predictionLog, o, deps.config.model.split("@")[0]);
}

/** Gives back claimed items after a failed store; 0 when the database refuses that too (the leases then run out). */
async function releaseIfPossible(deps: BatchJobDeps, items: readonly ClaimedItem[]): Promise<number> {
  try {
    return await deps.store.release(deps.worker, items.map((i) => i.id));
  } catch {
    return 0;
  }
}

interface ChunkOutcome {
  results: ItemResult[];
  failures: { id: string; reason: string }[];
  /** The Predict call's request id (each item's record links to it), the items by id, and the call's latency. */
  callId: string;
  items: ReadonlyMap<string, ClaimedItem>;
  latencyMs: number;
  /** Items not predicted because the Predictor failed (not the item): released for retry. */
  unpredicted: ClaimedItem[];
  error?: string;
}

/**
 * Predicts one request's worth of items in one Predict call. Rows the model cannot take are
 * left out by the Predictor (INVALID_ROWS_SKIP) and listed as structured field violations
 * ("rows[i]", with the reason): those items fail with their own reason, the others are
 * predicted, and nothing is sent twice.
 */
async function predictChunk(deps: BatchJobDeps, items: ClaimedItem[]): Promise<ChunkOutcome> {
  const callId = `batch-${randomUUID()}`;
  const outcome: ChunkOutcome = { results: [], failures: [], unpredicted: [], callId, items: new Map(items.map((i) => [i.id, i])), latencyMs: 0 };
  const span = deps.trace?.child("Predict");
  const started = performance.now();
  let response;
  try {
    response = await deps.predictor.unary(
      PredictorService.method.predict,
      { model: deps.config.model, version: deps.config.modelVersion, rows: items.map((i) => ({ values: i.values })), invalidRows: InvalidRows.SKIP },
      { deadlineMs: Date.now() + (deps.requestTimeoutMs ?? 30_000), traceparent: span?.traceparent, requestId: callId },
    );
    outcome.latencyMs = performance.now() - started;
    span?.end();
  } catch (err) {
    const error = ConnectError.from(err);
    span?.end({ code: Code[error.code], message: error.rawMessage });
    // Not about one item (the Predictor is down, overloaded, or lacks the model): retried later.
    outcome.unpredicted.push(...items);
    outcome.error = `Predictor: ${Code[error.code]}: ${error.rawMessage}`;
    return outcome;
  }
  const rejected = rejectedRowsOf(response.rejectedRows?.fieldViolations ?? [], items.length);
  for (const [row, reason] of rejected) outcome.failures.push({ id: items[row].id, reason });
  let next = 0;
  for (let row = 0; row < items.length; row++) {
    if (rejected.has(row)) continue;
    const p = response.predictions[next++];
    if (p === undefined) {
      // Fewer predictions than accepted rows: not an answer to trust for the rest.
      outcome.unpredicted.push(items[row]);
      outcome.error = `Predictor: answered ${response.predictions.length} predictions for ${items.length - rejected.size} accepted rows`;
      continue;
    }
    outcome.results.push({ id: items[row].id, probabilities: p.probabilities, labels: response.labels, label: p.label, model: response.model, modelVersion: response.version });
  }
  return outcome;
}

/**
 * Records each item of a stored chunk: its id as the request id, linked to the Predict call
 * that predicted it (whose own record the Predictor wrote); failed items with their reason.
 */
function recordItems(log: PredictionLog, outcome: ChunkOutcome, configuredModel: string): void {
  const common = { parentRequestId: outcome.callId, source: RecordSource.batch, api: "batch", timeMs: Date.now(), latencyMs: outcome.latencyMs, rowCount: 1 };
  for (const r of outcome.results) {
    if (!log.sampled(r.model)) continue;
    const values = outcome.items.get(r.id)?.values ?? [];
    log.append({
      ...common,
      requestId: r.id,
      model: r.model,
      version: r.modelVersion,
      status: 0,
      rows: { width: values.length, values: Float32Array.from(values) },
      classification: { labels: r.labels, probabilities: Float32Array.from(r.probabilities) },
    });
  }
  const model = outcome.results[0]?.model ?? configuredModel;
  for (const f of outcome.failures) {
    if (!log.sampled(model)) continue;
    const values = outcome.items.get(f.id)?.values ?? [];
    log.append({ ...common, requestId: f.id, model, version: outcome.results[0]?.modelVersion ?? 0, status: Code.InvalidArgument, error: f.reason, rows: { width: values.length, values: Float32Array.from(values) } });
  }
}

/** Row index -> the reason, from the field violations of rejected rows ("rows[i]"). */
function rejectedRowsOf(violations: readonly { field: string; description: string }[], rowCount: number): Map<number, string> {
  const rejected = new Map<number, string>();
  for (const v of violations) {
    const match = /^rows\[(\d+)\]/.exec(v.field);
    const row = match === null ? -1 : Number(match[1]);
    if (row < 0 || row >= rowCount) continue;
    rejected.set(row, `the item ${v.description}`);
  }
  return rejected;
}

function chunk<T>(items: readonly T[], size: number): T[][] {
  const chunks: T[][] = [];
  for (let i = 0; i < items.length; i += size) chunks.push(items.slice(i, i + size));
  return chunks;
}

/** Maps with at most `limit` calls in flight; results in input order. */
async function mapConcurrent<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index]);
    }
  });
  await Promise.all(lanes);
  return results;
}
