import { Code, ConnectError } from "@connectrpc/connect";
import type { PackedRows } from "../runtime/wire/predict-wire.js";

/** Sends one backend call for the rows of several requests, in order; resolves to a per-row answer source. */
export type SendRows<R> = (parts: readonly PackedRows[], options: { deadlineMs: number; signal: AbortSignal; traceparent?: string }) => Promise<R>;

/** Cuts a shared answer into one request's share: its rows are [firstRow, firstRow + rowCount). */
export type SliceAnswer<R> = (answer: R, firstRow: number, rowCount: number) => R;

interface Member<R> {
  readonly rows: PackedRows;
  /** Values per row when every row has as many, else -1 (such a request is never merged). */
  readonly width: number;
  readonly deadlineMs: number;
  readonly signal: AbortSignal;
  readonly traceparent: string | undefined;
  settled: boolean;
  resolve(answer: R): void;
  reject(error: ConnectError): void;
  /** Stops the member's own deadline timer and cancel listener. */
  release(): void;
}

/**
 * Coalesces concurrent calls to one backend, as the Predictor's InferenceBatcher coalesces
 * onnxruntime runs: while `maxInFlight` calls are under way, the requests that arrive wait, and
 * go together as the next call (up to `maxRows` rows). An idle backend gets each request at
 * once, so nothing waits at low load; under load the Proxy makes a few large calls instead of
 * three small ones per request, which is what an HTTP/2 client call costs most for
 * (docs/benchmarks.md).
 *
 * Only requests whose rows all have the same number of values are merged, so a backend's
 * answer about the rows ("rows[0] has 3 values; ... takes 4") is true of each of them. Each
 * request keeps its own deadline and cancellation: it fails alone (DEADLINE_EXCEEDED,
 * CANCELLED) while the shared call goes on for the others, and a shared call is cancelled
 * once no request is waiting for it.
 */
export class Coalescer<R> {
  private inFlight = 0;
  private queue: Member<R>[] = [];

  constructor(
    private readonly send: SendRows<R>,
    private readonly slice: SliceAnswer<R>,
    private readonly maxInFlight: number,
    private readonly maxRows: number,
  ) {}

  call(rows: PackedRows, options: { deadlineMs: number; signal: AbortSignal; traceparent?: string }): Promise<R> {
    // The common case at low load: straight through, with the caller's own deadline and signal.
    if (this.inFlight < this.maxInFlight && this.queue.length === 0) {
      this.inFlight++;
      return this.send([rows], options).finally(() => this.done());
    }
    return new Promise<R>((resolve, reject) => {
      const member = this.member(rows, options, resolve, reject);
      if (!member.settled) this.queue.push(member);
    });
  }

  private member(rows: PackedRows, options: { deadlineMs: number; signal: AbortSignal; traceparent?: string }, resolve: (answer: R) => void, reject: (error: ConnectError) => void): Member<R> {
    const { deadlineMs, signal } = options;
    const fail = (error: ConnectError) => {
      if (member.settled) return;
      member.settled = true;
      member.release();
      this.queue = this.queue.filter((m) => m !== member);
      reject(error);
    };
    const onAbort = () => fail(new ConnectError("the call was cancelled", Code.Canceled));
    const timer = setTimeout(() => fail(new ConnectError("the deadline was exceeded", Code.DeadlineExceeded)), Math.max(0, deadlineMs - Date.now()));
    const member: Member<R> = {
      rows,
      width: uniformWidth(rows),
      deadlineMs,
      signal,
      traceparent: options.traceparent,
      settled: false,
      resolve: (answer) => {
        if (member.settled) return;
        member.settled = true;
        member.release();
        resolve(answer);
      },
      reject: fail,
      release: () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
      },
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
    return member;
  }

  private done(): void {
    this.inFlight--;
    while (this.inFlight < this.maxInFlight && this.queue.length > 0) this.sendNext();
  }

  /** Sends the oldest waiting request with the ones after it that can share its call. */
  private sendNext(): void {
    const first = this.queue[0];
    const batch = [first];
    let rows = first.rows.rowCount;
    if (first.width >= 0) {
      for (const m of this.queue.slice(1)) {
        if (m.width === first.width && rows + m.rows.rowCount <= this.maxRows) {
          batch.push(m);
          rows += m.rows.rowCount;
        }
      }
    }
    const taken = new Set(batch);
    this.queue = this.queue.filter((m) => !taken.has(m));

    const controller = new AbortController();
    // The shared call lasts as long as its most patient request, and stops when none waits.
    const cancelWhenAbandoned = () => {
      if (batch.every((m) => m.settled)) controller.abort();
    };
    for (const m of batch) m.signal.addEventListener("abort", cancelWhenAbandoned, { once: true });
    const deadlineMs = Math.max(...batch.map((m) => m.deadlineMs));
    this.inFlight++;
    this.send(
      batch.map((m) => m.rows),
      { deadlineMs, signal: controller.signal, traceparent: first.traceparent },
    )
      .then(
        (answer) => {
          let firstRow = 0;
          for (const m of batch) {
            m.resolve(batch.length === 1 ? answer : this.slice(answer, firstRow, m.rows.rowCount));
            firstRow += m.rows.rowCount;
          }
        },
        (error: unknown) => {
          const connectError = ConnectError.from(error);
          for (const m of batch) m.reject(connectError);
        },
      )
      .finally(() => {
        for (const m of batch) m.signal.removeEventListener("abort", cancelWhenAbandoned);
        this.done();
      });
  }
}

/** The number of values of every row, or -1 when rows differ. */
function uniformWidth({ offsets, rowCount }: PackedRows): number {
  const width = offsets[1] - offsets[0];
  for (let i = 1; i < rowCount; i++) if (offsets[i + 1] - offsets[i] !== width) return -1;
  return width;
}
