import type { Item, ItemStore } from "./item-store.js";

type Waiter = (error: unknown, item: Item | undefined) => void;

/**
 * Polls the items that WatchItem streams are waiting on, for all streams of the process at
 * once: one query per tick for every watched item, not one per stream. The database is the
 * only place that sees the job's results (it may run in another process), so it is polled;
 * ticks happen only while some stream waits.
 */
export class ItemWatcher {
  private waiters = new Map<string, Waiter[]>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: Pick<ItemStore, "getMany">,
    private readonly pollMs: number,
  ) {}

  /**
   * The item as the next tick finds it (undefined when it no longer exists). Rejects with the
   * store's error (e.g. UNAVAILABLE) or when `signal` aborts.
   */
  nextPoll(id: string, signal: AbortSignal): Promise<Item | undefined> {
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      const onAbort = () => {
        const list = this.waiters.get(id);
        const left = list?.filter((w) => w !== waiter) ?? [];
        if (left.length > 0) this.waiters.set(id, left);
        else this.waiters.delete(id);
        reject(signal.reason);
      };
      const waiter: Waiter = (error, item) => {
        signal.removeEventListener("abort", onAbort);
        if (error !== undefined) reject(error);
        else resolve(item);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.waiters.set(id, [...(this.waiters.get(id) ?? []), waiter]);
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.timer !== undefined || this.waiters.size === 0) return;
    this.timer = setTimeout(() => void this.poll(), this.pollMs);
    this.timer.unref();
  }

  private async poll(): Promise<void> {
    const batch = this.waiters;
    this.waiters = new Map(); // streams that start waiting now are served by the next tick
    let found = new Map<string, Item>();
    let error: unknown;
    try {
      if (batch.size > 0) found = new Map((await this.store.getMany([...batch.keys()])).map((item) => [item.id, item]));
    } catch (err) {
      error = err;
    }
    for (const [id, list] of batch) for (const waiter of list) waiter(error, found.get(id));
    this.timer = undefined;
    this.schedule();
  }
}
