import { Code, ConnectError } from "@connectrpc/connect";
import { uniformWidth, type PackedRows } from "../model/wire/predict-wire.js";
import type { TraceSpan } from "../runtime/observability/tracing.js";

/** A call's options: its deadline, cancellation, trace, and the request it is made for (the prediction log's link). */
export interface SendOptions {
  readonly deadlineMs: number;
  readonly signal: AbortSignal;
  /** The asking request's span: the call's span is its child. */
  readonly trace?: TraceSpan;
  readonly parentRequestId?: string;
}

/**
 * Sends one backend call for the rows of several requests, in order, asking what `key` names
 * (the models: every request of a call has the same key); resolves to a per-row answer source.
 */
export type SendRows<R> = (parts: readonly PackedRows[], options: SendOptions, key: string) => Promise<R>;

/** Cuts a shared answer into one request's share: its rows are [firstRow, firstRow + rowCount). */
export type SliceAnswer<R> = (answer: R, firstRow: number, rowCount: number) => R;

/**
 * Coalesces concurrent calls to one backend, as the Predictor's InferenceBatcher coalesces
 * onnxruntime runs: while `maxInFlight` calls are under way, the requests that arrive wait, and
 * go together as the next call (up to `maxRows` rows). An idle backend gets each request at
 * once, so nothing waits at low load; under load the Proxy makes a few large calls instead of
 * three small ones per request, which is what an HTTP/2 client call costs most for
 * (docs/benchmarks.md).
 *
 * Only requests with the same key (what they ask of the backend: which models) whose rows all
 * have the same number of values are merged, so a backend's
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

  call(rows: PackedRows, options: SendOptions, key = ""): Promise<R> {
    // The common case at low load: straight through, with the caller's own deadline and signal.
    if (this.inFlight < this.maxInFlight && this.queue.length === 0) {
      this.inFlight++;
      return this.send([rows], options, key).finally(() => this.done());
    }
    return new Promise<R>((resolve, reject) => {
      const member = new Member<R>(rows, options, key, resolve, reject, (m) => {
        this.queue = this.queue.filter((waiting) => waiting !== m);
      });
      if (!member.settled) this.queue.push(member);
    });
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
        if (m.key === first.key && m.width === first.width && rows + m.rows.rowCount <= this.maxRows) {
          batch.push(m);
          rows += m.rows.rowCount;
        }
      }
    }
    const taken = new Set(batch);
    this.queue = this.queue.filter((m) => !taken.has(m));

    const controller = new AbortController();
    // The shared call lasts as long as its most patient request, and stops when none waits.
    for (const m of batch) m.onSettled = () => batch.every((other) => other.settled) && controller.abort();
    const deadlineMs = Math.max(...batch.map((m) => m.deadlineMs));
    this.inFlight++;
    this.send(
      batch.map((m) => m.rows),
      // A shared call carries the first request's trace and id (one parent per call).
      { deadlineMs, signal: controller.signal, trace: first.trace, parentRequestId: first.parentRequestId },
      first.key,
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
      .finally(() => this.done());
  }
}

/**
 * A request waiting for a shared call, with its own deadline and cancellation. (A class rather
 * than closures: the services run under tsx, which names every closure bound to a variable
 * with Object.defineProperty — per request, on this path.)
 */
class Member<R> {
  settled = false;
  /** Values per row when every row has as many, else -1 (such a request is never merged). */
  readonly width: number;
  readonly deadlineMs: number;
  readonly signal: AbortSignal;
  readonly trace: TraceSpan | undefined;
  readonly parentRequestId: string | undefined;
  /** Told when this request gives up early (the shared call may be abandoned). */
  onSettled: (() => void) | undefined;
  private readonly timer: NodeJS.Timeout;
  private readonly onAbort: () => void;

  constructor(
    readonly rows: PackedRows,
    options: SendOptions,
    /** What the request asks (SendRows): only requests with the same key share a call. */
    readonly key: string,
    private readonly settleResolve: (answer: R) => void,
    private readonly settleReject: (error: ConnectError) => void,
    private readonly leaveQueue: (member: Member<R>) => void,
  ) {
    this.width = uniformWidth(rows);
    this.deadlineMs = options.deadlineMs;
    this.signal = options.signal;
    this.trace = options.trace;
    this.parentRequestId = options.parentRequestId;
    this.onAbort = () => this.reject(new ConnectError("the call was cancelled", Code.Canceled));
    this.timer = setTimeout(() => this.reject(new ConnectError("the deadline was exceeded", Code.DeadlineExceeded)), Math.max(0, this.deadlineMs - Date.now()));
    if (this.signal.aborted) this.onAbort();
    else this.signal.addEventListener("abort", this.onAbort, { once: true });
  }

  resolve(answer: R): void {
    if (this.settle()) this.settleResolve(answer);
  }

  reject(error: ConnectError): void {
    if (!this.settle()) return;
    this.leaveQueue(this);
    this.settleReject(error);
    this.onSettled?.();
  }

  private settle(): boolean {
    if (this.settled) return false;
    this.settled = true;
    clearTimeout(this.timer);
    this.signal.removeEventListener("abort", this.onAbort);
    return true;
  }
}
