/**
 * Reads kept in memory and never stale, even with several registry processes on one database.
 *
 * Every write that can change a cached read raises the database's read generation in its own
 * transaction (store.ts). Before answering from memory, a read learns the current generation
 * from the database and uses an entry only if it was loaded at that generation. So an answer
 * always reflects every write committed before the read began, whichever process made it: a
 * Predictor that saw SetModelVersionAlias succeed on one replica reads the new version on any.
 *
 * What makes it cheap is that the generation read is shared: the reads that arrive while one is
 * under way wait for the next, which starts after they arrived (a later read is never answered
 * by an earlier query). Under load one small query serves dozens of lookups, instead of each
 * lookup's own joins through Prisma.
 */
export class ReadCache<V> {
  #entries = new Map<string, { generation: bigint; value: V }>();
  #running: Promise<bigint> | undefined;
  #queued: Promise<bigint> | undefined;

  constructor(
    private readonly readGeneration: () => Promise<bigint>,
    private readonly maxEntries = 10_000,
  ) {}

  /** The value under `key`: from memory when loaded at the current generation, else load()ed. */
  async get(key: string, load: () => Promise<V>): Promise<V> {
    const generation = await this.currentGeneration();
    const entry = this.#entries.get(key);
    if (entry !== undefined && entry.generation === generation) return entry.value;
    const value = await load();
    if (this.#entries.size >= this.maxEntries) this.#entries.clear();
    this.#entries.set(key, { generation, value });
    return value;
  }

  /** A write committed in this process: forget everything now (the generation has moved on anyway). */
  invalidate(): void {
    this.#entries.clear();
  }

  /** A generation read that starts after this call. */
  private currentGeneration(): Promise<bigint> {
    if (this.#running === undefined) return this.startRead();
    this.#queued ??= this.#running
      .catch(() => undefined)
      .then(() => {
        this.#queued = undefined;
        return this.startRead();
      });
    return this.#queued;
  }

  private startRead(): Promise<bigint> {
    const read = this.readGeneration().finally(() => {
      if (this.#running === read) this.#running = undefined;
    });
    this.#running = read;
    return read;
  }
}
