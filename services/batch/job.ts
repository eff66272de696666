import { Code, ConnectError } from "@connectrpc/connect";
import { PredictorService } from "../../gen/mlmesh/predictor/v1/predictor_pb.js";
import type { GrpcClient } from "../runtime/grpc-client.js";
import type { TraceSpan } from "../runtime/observability/tracing.js";
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
}

/** A finished run, and why its record could not be stored when it could not. */
export interface JobRunOutcome {
  readonly run: JobRun;
  readonly recordError?: string;
}

/**
 * One run of the batch job: claims pending items in chunks of claimSize until none is left,
 * predicts each chunk with rowsPerRequest rows per Predict call and `parallelism` calls in
 * flight, and stores each chunk's results in one transaction. An item the model rejects (for
 * example the wrong number of values) is marked failed with the reason while the rest of its
 * request is retried; when the Predictor is unavailable the chunk is released, left pending
 * for the next run, and the run stops. When the database fails (busy, unreachable) the run
 * stops with the reason: a chunk whose results could not be stored is released if the
 * database allows, else its lease runs out, and the next run predicts it again. Never throws:
 * the outcome says what happened, including whether the run's record was stored.
 */
export async function runBatchJob(deps: BatchJobDeps): Promise<JobRunOutcome> {
  const { store, config, worker } = deps;
  const startedAt = new Date();
  const totals = { claimed: 0, predicted: 0, failed: 0, released: 0, error: "" };
  try {
    for (;;) {
      const claimed = await store.claim(worker, config.claimSize, config.leaseMs);
      if (claimed.length === 0) break;
      totals.claimed += claimed.length;
      const chunks = chunk(claimed, config.rowsPerRequest);
      const outcomes = await mapConcurrent(chunks, config.parallelism, (items) => predictChunk(deps, items));
      const results = outcomes.flatMap((o) => o.results);
      const failures = outcomes.flatMap((o) => o.failures);
      const unavailable = outcomes.flatMap((o) => o.unpredicted);
      let stored: { predicted: number; failed: number };
      try {
        stored = await store.complete(worker, results, failures);
      } catch (err) {
        totals.released += await releaseIfPossible(deps, claimed);
        throw err;
      }
      totals.predicted += stored.predicted;
      totals.failed += stored.failed;
      if (unavailable.length > 0) {
        totals.released += await store.release(worker, unavailable.map((i) => i.id));
        totals.error = outcomes.find((o) => o.error)?.error ?? "the Predictor did not answer";
        break;
      }
    }
  } catch (err) {
    totals.error = (err as Error).message;
  }
  const run = { worker, startedAt, endedAt: new Date(), ...totals };
  // A scheduled run that found nothing to do is not worth a row.
  const worthStoring = totals.claimed > 0 || totals.error !== "";
  try {
    return { run: await store.recordRun(run, worthStoring) };
  } catch (err) {
    return { run: { id: "", ...run }, recordError: (err as Error).message };
  }
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
  /** Items not predicted because the Predictor failed (not the item): released for retry. */
  unpredicted: ClaimedItem[];
  error?: string;
}

/** Predicts one request's worth of items; splits off items the model rejects, one by one. */
async function predictChunk(deps: BatchJobDeps, items: ClaimedItem[]): Promise<ChunkOutcome> {
  const outcome: ChunkOutcome = { results: [], failures: [], unpredicted: [] };
  let remaining = items;
  while (remaining.length > 0) {
    const span = deps.trace?.child("Predict");
    try {
      const response = await deps.predictor.unary(
        PredictorService.method.predict,
        { model: deps.config.model, version: deps.config.modelVersion, rows: remaining.map((i) => ({ values: i.values })) },
        { deadlineMs: Date.now() + (deps.requestTimeoutMs ?? 30_000), traceparent: span?.traceparent },
      );
      span?.end();
      response.predictions.forEach((p, i) => {
        outcome.results.push({
          id: remaining[i].id,
          probabilities: p.probabilities,
          labels: response.labels,
          label: p.label,
          model: response.model,
          modelVersion: response.version,
        });
      });
      return outcome;
    } catch (err) {
      const error = ConnectError.from(err);
      span?.end({ code: Code[error.code], message: error.rawMessage });
      const row = error.code === Code.InvalidArgument ? /rows\[(\d+)\]/.exec(error.rawMessage) : null;
      if (row === null) {
        // Not about one item: the Predictor is down, overloaded, or lacks the model.
        outcome.unpredicted.push(...remaining);
        outcome.error = `Predictor: ${Code[error.code]}: ${error.rawMessage}`;
        return outcome;
      }
      const bad = Number(row[1]);
      outcome.failures.push({ id: remaining[bad].id, reason: error.rawMessage.replace(/^rows\[\d+\] has/, "the item has") });
      remaining = remaining.filter((_, i) => i !== bad);
    }
  }
  return outcome;
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
