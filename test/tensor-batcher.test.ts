// TensorBatcher with a fake graph (each output echoes its input): no model, no server.
import { describe, expect, it } from "vitest";
import type { HostTensor } from "../services/model/tensors.js";
import { batchable, TensorBatcher } from "../services/predictor/tensor-batcher.js";

/** A fake graph echoing "x" as "y" (and "s" as "t" when given); records each run's entries. */
function fakeGraph() {
  const runs: number[] = [];
  let release: () => void = () => {};
  let gate = Promise.resolve();
  const run = async (feeds: Readonly<Record<string, HostTensor>>) => {
    runs.push(feeds.x.dims[0]);
    await gate;
    const outputs: Record<string, HostTensor> = { y: { ...feeds.x } };
    if (feeds.s) outputs.t = { ...feeds.s };
    return outputs;
  };
  const hold = () => {
    gate = new Promise<void>((resolve) => (release = resolve));
  };
  return { runs, run, hold, release: () => release() };
}

const floats = (rows: number[][]): HostTensor => ({ dtype: "float32", dims: [rows.length, rows[0].length], data: Float32Array.from(rows.flat()) });

describe("TensorBatcher", () => {
  it("runs an idle request at once, joins the ones that arrive during a run along the first dimension, and answers each its own slice", async () => {
    const graph = fakeGraph();
    const batcher = new TensorBatcher(graph.run, { maxRows: 100, delayMs: 0 });
    graph.hold();
    const first = batcher.submit({ x: floats([[1, 2]]) }, ["y"]);
    const strings = (values: string[]): HostTensor => ({ dtype: "string", dims: [values.length, 1], data: values });
    const joined = [
      batcher.submit({ x: floats([[3, 4], [5, 6]]), s: strings(["a", "b"]) }, ["y", "t"]),
      batcher.submit({ x: floats([[7, 8]]), s: strings(["c"]) }, ["y", "t"]),
    ];
    // Other trailing dimensions: its own run.
    const wider = batcher.submit({ x: floats([[9, 9, 9]]) }, ["y"]);
    expect(graph.runs).toEqual([1]);
    graph.release();
    expect(Array.from((await first).y.data as Float32Array)).toEqual([1, 2]);
    const [a, b] = await Promise.all(joined);
    expect([a.y.dims, Array.from(a.y.data as Float32Array), a.t.data]).toEqual([[2, 2], [3, 4, 5, 6], ["a", "b"]]);
    expect([b.y.dims, Array.from(b.y.data as Float32Array), b.t.data]).toEqual([[1, 2], [7, 8], ["c"]]);
    expect(Array.from((await wider).y.data as Float32Array)).toEqual([9, 9, 9]);
    expect(graph.runs).toEqual([1, 3, 1]);
  });

  it("waits batch_delay_ms for company when idle, never past max_batch, and fails every request of a failed run", async () => {
    const graph = fakeGraph();
    const batcher = new TensorBatcher(graph.run, { maxRows: 3, delayMs: 30 });
    const answers = Promise.all([1, 2, 3, 4].map((v) => batcher.submit({ x: floats([[v]]) }, ["y"])));
    expect(graph.runs).toEqual([]);
    await answers;
    expect(graph.runs).toEqual([3, 1]);

    const failing = new TensorBatcher(async () => Promise.reject(new Error("boom")), { maxRows: 10, delayMs: 5 });
    const results = await Promise.allSettled([failing.submit({ x: floats([[1]]) }, ["y"]), failing.submit({ x: floats([[2]]) }, ["y"])]);
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected"]);
  });

  it("batches only graphs whose every input and output is dynamic in its first dimension", () => {
    const spec = (shape: number[]) => ({ name: "t", dtype: "float32" as const, shape });
    expect(batchable({ inputs: [spec([-1, 4])], outputs: [spec([-1])] })).toBe(true);
    expect(batchable({ inputs: [spec([1, 4])], outputs: [spec([-1])] })).toBe(false);
    expect(batchable({ inputs: [spec([-1, 4])], outputs: [spec([])] })).toBe(false);
  });
});
