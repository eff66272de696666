/**
 * Wakes the WatchModelEvents streams of this process to read the event log again: every
 * `pollMs` (events committed by other registry processes sharing the database), and at once
 * when this process has committed one (notify). One timer for every stream, running only
 * while some stream waits.
 */
export class EventFeed {
  #waiters = new Set<() => void>();
  #timer: NodeJS.Timeout | undefined;

  constructor(private readonly pollMs: number) {}

  /** Resolves at the next tick or notify; rejects with the signal's reason when it aborts. */
  next(signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      const wake = () => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      };
      const onAbort = () => {
        this.#waiters.delete(wake);
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.#waiters.add(wake);
      this.#schedule();
    });
  }

  /** An event was committed here: every waiting stream reads now. */
  notify(): void {
    this.#wakeAll();
  }

  #schedule(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#wakeAll();
    }, this.pollMs);
    this.#timer.unref();
  }

  #wakeAll(): void {
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const wake of waiters) wake();
  }
}
