// InferenceBatcher with a fake inference function: no model, no server.
import { describe, expect, it } from "vitest";
import { InferenceBatcher } from "../services/predictor/inference-batcher.js";

/** A fake 2-feature, 2-class model: probabilities [x0, x1] per row; records each run's size. */
function fakeModel() {
  const runs: number[] = [];
  let release: () => void = () => {};
  let gate = Promise.resolve();
  const run = async (features: Float32Array, rowCount: number) => {
    runs.push(rowCount);
    await gate;
    return Float32Array.from(features);
  };
  const hold = () => {
    gate = new Promise<void>((resolve) => (release = resolve));
  };
  return { runs, run, hold, release: () => release() };
}

const rows = (...values: number[][]) => Float32Array.from(values.flat());

describe("InferenceBatcher", () => {
  it("runs a request at once when idle, and coalesces the requests that arrive during a run", async () => {
    const model = fakeModel();
    const batcher = new InferenceBatcher(model.run, 2, 2, 100);
    model.hold();
    const first = batcher.classify(rows([1, 2]), 1);
    const queued = [batcher.classify(rows([3, 4], [5, 6]), 2), batcher.classify(rows([7, 8]), 1)];
    expect(model.runs).toEqual([1]);
    model.release();
    expect(await first).toEqual(rows([1, 2]));
    const [second, third] = await Promise.all(queued);
    expect(model.runs).toEqual([1, 3]);
    expect(second).toEqual(rows([3, 4], [5, 6]));
    expect(third).toEqual(rows([7, 8]));
  });

  it("never puts more than maxRows rows in one run, except a single larger request", async () => {
    const model = fakeModel();
    const batcher = new InferenceBatcher(model.run, 2, 2, 3);
    model.hold();
    const calls = [
      batcher.classify(rows([0, 0]), 1),
      batcher.classify(rows([1, 1], [1, 1]), 2),
      batcher.classify(rows([2, 2], [2, 2]), 2),
      batcher.classify(rows([3, 3], [3, 3], [3, 3], [3, 3]), 4),
    ];
    model.release();
    await Promise.all(calls);
    expect(model.runs).toEqual([1, 2, 2, 4]);
  });

  it("rejects every request of a failed run and keeps serving", async () => {
    const model = fakeModel();
    let runs = 0;
    const batcher = new InferenceBatcher(
      async (features, rowCount) => {
        runs++;
        const result = await model.run(features, rowCount);
        if (runs === 2) throw new Error("boom");
        return result;
      },
      1,
      1,
      10,
    );
    model.hold();
    const first = batcher.classify(rows([1]), 1);
    const failing = [batcher.classify(rows([2]), 1), batcher.classify(rows([3]), 1)];
    model.release();
    await expect(first).resolves.toEqual(rows([1]));
    await expect(failing[0]).rejects.toThrow("boom");
    await expect(failing[1]).rejects.toThrow("boom");
    await expect(batcher.classify(rows([4]), 1)).resolves.toEqual(rows([4]));
    expect(model.runs).toEqual([1, 2, 1]);
  });
});
