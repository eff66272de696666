// The Proxy's coalescer (services/proxy/coalescer.ts) with a fake backend call: what is sent
// at once, what waits and shares a call, and that each request keeps its own deadline and
// cancellation.
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { Coalescer } from "../services/proxy/coalescer.js";
import { packRows, type PackedRows } from "../services/model/wire/predict-wire.js";

/** A backend whose calls stay open until the test ends them; its answer is the rows' first values. */
function fakeBackend(maxInFlight = 1, maxRows = 100) {
  const calls: { parts: readonly PackedRows[]; deadlineMs: number; signal: AbortSignal; answer(): void; fail(e: Error): void }[] = [];
  const coalescer = new Coalescer<number[]>(
    (parts, options) =>
      new Promise((resolve, reject) => {
        calls.push({
          parts,
          ...options,
          answer: () => resolve(parts.flatMap((p) => Array.from({ length: p.rowCount }, (_, i) => p.features[p.offsets[i]]))),
          fail: reject,
        });
      }),
    (answer, first, count) => answer.slice(first, first + count),
    maxInFlight,
    maxRows,
  );
  return { coalescer, calls };
}

const rows = (...firsts: number[]) => packRows(firsts.map((v) => ({ values: [v, 0, 0, 0] })));
const options = (ms = 1000, signal = new AbortController().signal) => ({ deadlineMs: Date.now() + ms, signal });
const tick = () => new Promise((resolve) => setTimeout(resolve, 5));

describe("Proxy coalescer", () => {
  it("sends a request at once when the backend is idle, with the caller's deadline", async () => {
    const { coalescer, calls } = fakeBackend();
    const opts = options();
    const answer = coalescer.call(rows(1, 2), opts);
    expect(calls).toHaveLength(1);
    expect(calls[0].deadlineMs).toBe(opts.deadlineMs);
    calls[0].answer();
    expect(await answer).toEqual([1, 2]);
  });

  it("queues requests while calls are in flight and sends them together, each getting its own rows", async () => {
    const { coalescer, calls } = fakeBackend();
    const first = coalescer.call(rows(1), options());
    const waiting = [coalescer.call(rows(2, 3), options()), coalescer.call(rows(4), options()), coalescer.call(rows(5), options(2000))];
    expect(calls).toHaveLength(1);
    calls[0].answer();
    expect(await first).toEqual([1]);
    await tick();
    expect(calls).toHaveLength(2);
    expect(calls[1].parts.map((p) => p.rowCount)).toEqual([2, 1, 1]);
    expect(calls[1].deadlineMs).toBeGreaterThan(Date.now() + 1500); // the most patient request's
    calls[1].answer();
    expect(await Promise.all(waiting)).toEqual([[2, 3], [4], [5]]);
  });

  it("merges only requests whose rows have the same width, and at most maxRows rows", async () => {
    const { coalescer, calls } = fakeBackend(1, 3);
    void coalescer.call(rows(1), options());
    const wide = packRows([{ values: [9, 0, 0, 0, 0] }]);
    const answers = [coalescer.call(rows(2, 3), options()), coalescer.call(wide, options()), coalescer.call(rows(4), options()), coalescer.call(rows(5), options())];
    calls[0].answer();
    await tick();
    expect(calls[1].parts.map((p) => p.rowCount)).toEqual([2, 1]); // 3 rows: the last must wait
    calls[1].answer();
    await tick();
    expect(calls[2].parts).toEqual([wide]);
    calls[2].answer();
    await tick();
    calls[3].answer();
    expect(await Promise.all(answers)).toEqual([[2, 3], [9], [4], [5]]);
  });

  it("fails a waiting request alone at its deadline or when its caller cancels; the shared call goes on", async () => {
    const { coalescer, calls } = fakeBackend();
    void coalescer.call(rows(1), options());
    const hurried = coalescer.call(rows(2), options(20));
    const cancel = new AbortController();
    const cancelled = coalescer.call(rows(3), options(1000, cancel.signal));
    const patient = coalescer.call(rows(4), options());
    cancel.abort();
    await expect(cancelled).rejects.toMatchObject({ code: Code.Canceled });
    await expect(hurried).rejects.toMatchObject({ code: Code.DeadlineExceeded });
    calls[0].answer();
    await tick();
    expect(calls[1].parts.map((p) => p.features[0])).toEqual([4]);
    calls[1].answer();
    expect(await patient).toEqual([4]);
  });

  it("cancels a shared call once every request waiting for it was cancelled", async () => {
    const { coalescer, calls } = fakeBackend();
    void coalescer.call(rows(1), options());
    const a = new AbortController();
    const b = new AbortController();
    const answers = [coalescer.call(rows(2), options(1000, a.signal)), coalescer.call(rows(3), options(1000, b.signal))].map((p) => p.catch((e: unknown) => e));
    calls[0].answer();
    await tick();
    a.abort();
    expect(calls[1].signal.aborted).toBe(false);
    b.abort();
    expect(calls[1].signal.aborted).toBe(true);
    expect((await Promise.all(answers)).map((e) => (e as ConnectError).code)).toEqual([Code.Canceled, Code.Canceled]);
  });

  it("gives every request of a failed shared call the backend's error", async () => {
    const { coalescer, calls } = fakeBackend();
    void coalescer.call(rows(1), options());
    const answers = [coalescer.call(rows(2), options()), coalescer.call(rows(3), options())].map((p) => p.catch((e: unknown) => e));
    calls[0].answer();
    await tick();
    calls[1].fail(new ConnectError("rows[0] has 4 values; m v1 takes 3", Code.InvalidArgument));
    for (const error of await Promise.all(answers)) expect(error).toMatchObject({ code: Code.InvalidArgument, rawMessage: "rows[0] has 4 values; m v1 takes 3" });
  });
});
