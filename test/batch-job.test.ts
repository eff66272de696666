// One run of the batch job (services/batch/job.ts) with an in-memory item store and a fake
// Predictor: the run's rules without a scheduler, a database or a network. test/batch.test.ts
// runs the same job in the real services, on SQLite and PostgreSQL.
import { create, type DescMethodUnary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { InvalidRows, PredictResponseSchema, type PredictRequest } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { runBatchJob, type BatchJobDeps } from "../services/batch/job.js";
import type { ClaimedItem, ItemResult, JobRun } from "../services/batch/item-store.js";

const config = { model: "iris_svc", modelVersion: 0, claimSize: 10, rowsPerRequest: 4, parallelism: 2, leaseMs: 60_000 };

/** Pending items; claims hand them out claimSize at a time, as the real store does. */
function memoryStore(items: ClaimedItem[], failing: { complete?: Error; release?: Error; recordRun?: Error } = {}) {
  const pending = [...items];
  const state = { predicted: [] as ItemResult[], failed: [] as { id: string; reason: string }[], released: [] as string[], runs: [] as JobRun[], claims: 0, completing: 0, claimsDuringStore: 0 };
  const store: BatchJobDeps["store"] = {
    async claim(_worker, limit) {
      if (state.completing > 0) state.claimsDuringStore++;
      state.claims++;
      return pending.splice(0, limit);
    },
    async complete(_worker, results, failures) {
      state.completing++;
      await new Promise((resolve) => setTimeout(resolve, 5));
      state.completing--;
      if (failing.complete) throw failing.complete;
      state.predicted.push(...results);
      state.failed.push(...failures);
      return { predicted: results.length, failed: failures.length };
    },
    async release(_worker, ids) {
      if (failing.release) throw failing.release;
      state.released.push(...ids);
      return ids.length;
    },
    async recordRun(run, stored) {
      if (failing.recordRun) throw failing.recordRun;
      const record = { id: `run-${state.runs.length}`, ...run };
      if (stored) state.runs.push(record);
      return record;
    },
  };
  return { store, state };
}

/**
 * A Predictor that labels rows "setosa" and treats rows of 3 values as the real one does: with
 * INVALID_ROWS_SKIP it leaves them out and lists each as a field violation "rows[i]"; without,
 * it refuses the call (INVALID_ARGUMENT). Or it fails every call with `down`.
 */
function fakePredictor(down?: Code) {
  const calls = { rows: [] as number[], inFlight: 0, maxInFlight: 0 };
  const predictor: BatchJobDeps["predictor"] = {
    async unary<I extends DescMethodUnary>(_method: I, request: unknown) {
      const { rows } = request as PredictRequest;
      calls.rows.push(rows.length);
      calls.inFlight++;
      calls.maxInFlight = Math.max(calls.maxInFlight, calls.inFlight);
      await new Promise((resolve) => setTimeout(resolve, 5));
      calls.inFlight--;
      if (down !== undefined) throw new ConnectError("backend unavailable", down);
      const bad = rows.flatMap((r, i) => (r.values.length !== 4 ? [{ field: `rows[${i}]`, description: `has ${r.values.length} values; iris_svc v1 takes 4`, reason: "ROW_WIDTH" }] : []));
      if (bad.length > 0 && (request as PredictRequest).invalidRows !== InvalidRows.SKIP) throw new ConnectError(`${bad[0].field} ${bad[0].description}`, Code.InvalidArgument);
      return create(PredictResponseSchema, {
        model: "iris_svc",
        version: 1,
        labels: ["setosa", "versicolor", "virginica"],
        predictions: rows.filter((r) => r.values.length === 4).map(() => ({ probabilities: [0.9, 0.05, 0.05], label: "setosa" })),
        rejectedRows: bad.length > 0 ? { fieldViolations: bad } : undefined,
      }) as never; // the generic return type is the method's output: a PredictResponse here
    },
  };
  return { predictor, calls };
}

const items = (count: number, badIndexes: number[] = []) =>
  Array.from({ length: count }, (_, i) => ({ id: `item-${i}`, values: badIndexes.includes(i) ? [1, 2, 3] : [5.1, 3.5, 1.4, 0.2] }));

describe("one run of the batch job", () => {
  it("predicts every claimed item in requests of rowsPerRequest rows, at most `parallelism` in flight", async () => {
    const { store, state } = memoryStore(items(25));
    const { predictor, calls } = fakePredictor();
    const { run } = await runBatchJob({ store, predictor, config, worker: "test" });
    expect(state.predicted.map((r) => r.id).sort()).toEqual(items(25).map((i) => i.id).sort());
    expect(state.predicted[0]).toMatchObject({ label: "setosa", model: "iris_svc", modelVersion: 1 });
    expect(Math.max(...calls.rows)).toBeLessThanOrEqual(config.rowsPerRequest);
    expect(calls.maxInFlight).toBeLessThanOrEqual(config.parallelism);
    expect(calls.maxInFlight).toBeGreaterThan(1);
    expect(run).toMatchObject({ claimed: 25, predicted: 25, failed: 0, released: 0, error: "" });
    expect(state.runs).toHaveLength(1);
  });

  it("marks each bad item failed with its reason and predicts the rest of its request in the same call", async () => {
    const { store, state } = memoryStore(items(10, [2, 7]));
    const { predictor, calls } = fakePredictor();
    const { run } = await runBatchJob({ store, predictor, config, worker: "test" });
    expect(calls.rows).toEqual([4, 4, 2]); // 10 items, 4 rows per request: nothing sent twice
    expect(state.failed).toEqual([
      { id: "item-2", reason: "the item has 3 values; iris_svc v1 takes 4" },
      { id: "item-7", reason: "the item has 3 values; iris_svc v1 takes 4" },
    ]);
    expect(state.predicted).toHaveLength(8);
    expect(run).toMatchObject({ claimed: 10, predicted: 8, failed: 2, released: 0 });
  });

  it("releases the claimed items and stops when the Predictor is unavailable", async () => {
    const { store, state } = memoryStore(items(25));
    const { predictor } = fakePredictor(Code.Unavailable);
    const { run } = await runBatchJob({ store, predictor, config, worker: "test" });
    expect(state.predicted).toEqual([]);
    expect(state.failed).toEqual([]);
    expect(state.released).toHaveLength(config.claimSize); // the first claim only: the run stopped
    expect(state.claims).toBe(1);
    expect(run).toMatchObject({ claimed: 10, released: 10, error: "Predictor: Unavailable: backend unavailable" });
    expect(state.runs).toHaveLength(1);
  });

  it("records no run when there was nothing to do", async () => {
    const { store, state } = memoryStore([]);
    const { predictor, calls } = fakePredictor();
    const { run } = await runBatchJob({ store, predictor, config, worker: "test" });
    expect(run).toMatchObject({ claimed: 0, error: "" });
    expect(calls.rows).toEqual([]);
    expect(state.runs).toEqual([]);
  });

  it("stops with the reason when its results cannot be stored, and gives back that chunk and the one claimed after it", async () => {
    const busy = new ConnectError("the batch database is busy (locked by another writer); retry later", Code.Unavailable);
    const { store, state } = memoryStore(items(25), { complete: busy });
    const { predictor } = fakePredictor();
    const { run, recordError } = await runBatchJob({ store, predictor, config, worker: "test" });
    // The second chunk was claimed and predicted while the first was being stored.
    expect(run).toMatchObject({ claimed: 20, predicted: 0, released: 20, error: busy.message });
    expect(state.released).toEqual(items(20).map((i) => i.id));
    expect(state.claims).toBe(2);
    expect(state.runs).toHaveLength(1);
    expect(recordError).toBeUndefined();
  });

  it("leaves the chunk to its lease when the database refuses the release too", async () => {
    const busy = new ConnectError("the batch database is busy (locked by another writer); retry later", Code.Unavailable);
    const { store, state } = memoryStore(items(5), { complete: busy, release: busy });
    const { predictor } = fakePredictor();
    const { run } = await runBatchJob({ store, predictor, config, worker: "test" });
    expect(run).toMatchObject({ claimed: 5, released: 0, error: busy.message });
    expect(state.runs).toHaveLength(1);
  });

  it("says when the run's record could not be stored, instead of throwing", async () => {
    const down = new ConnectError("the batch database is unavailable; retry later", Code.Unavailable);
    const { store, state } = memoryStore(items(5), { recordRun: down });
    const { predictor } = fakePredictor();
    const outcome = await runBatchJob({ store, predictor, config, worker: "test" });
    expect(outcome.run).toMatchObject({ claimed: 5, predicted: 5, error: "" });
    expect(outcome.recordError).toBe(down.message);
    expect(state.predicted).toHaveLength(5);
  });

  it("claims and predicts the next chunk while a chunk is stored, storing chunks in claim order", async () => {
    const { store, state } = memoryStore(items(25));
    const { predictor } = fakePredictor();
    const { run } = await runBatchJob({ store, predictor, config, worker: "test" });
    expect(run).toMatchObject({ claimed: 25, predicted: 25, failed: 0, released: 0, error: "" });
    expect(state.predicted.map((r) => r.id)).toEqual(items(25).map((i) => i.id));
    expect(state.claimsDuringStore).toBeGreaterThan(0);
  });
});
