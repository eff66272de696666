import { createHash } from "node:crypto";
import { Redis } from "ioredis";
import type { Logger } from "../runtime/observability/logger.js";
import type { LoadedVersion } from "./serving-table.js";
import { counter, gauge } from "../runtime/observability/metrics.js";

/*
 * The prediction_cache pattern: an answer kept for a while under a key made of the model
 * version's digest and a hash of the request's canonical input, so an alias move can never
 * answer from another version. Off by default; per model (PREDICTOR_CACHE_MODELS). In process:
 * bounded in bytes, least recently used out first, each entry with a TTL. Shared across
 * Predictor replicas through Redis when PREDICTOR_CACHE_REDIS_URL is set: a Redis that is down
 * or slow never fails a prediction nor slows it past PREDICTOR_CACHE_REDIS_TIMEOUT — the
 * Predictor computes instead. Concurrent identical requests share one inference.
 */

/** PREDICTOR_CACHE_*: which models, how much, how long, and the shared tier. */
export interface CacheSettings {
  /** Model names whose answers are cached; "*" for every model; empty: the cache is off. */
  readonly models: "*" | ReadonlySet<string>;
  readonly maxBytes: number;
  readonly ttlMs: number;
  readonly redisUrl: string | undefined;
  readonly redisTimeoutMs: number;
}

/** How one kind of request is cached: the parts of its canonical input, and its answer as bytes. */
export interface CacheCodec<Input, Answer> {
  /** The request's canonical input, in parts (hashed with the version's digest and the kind). */
  key(input: Input): readonly (Uint8Array | string)[];
  encode(answer: Answer): Uint8Array;
  /** An answer from its bytes (the shared tier), as the version `loaded` gives it. */
  decode(bytes: Uint8Array, loaded: LoadedVersion): Answer;
}

const lookups = counter({
  name: "mlmesh_predictor_cache_lookups_total",
  help: "Prediction cache lookups per model, by result: hit (in process), shared_hit (Redis), coalesced (an identical request was computing), miss.",
  labelNames: ["model", "result"],
});
const evictions = counter({ name: "mlmesh_predictor_cache_evictions_total", help: "Entries dropped from the in-process cache, by reason: size or ttl.", labelNames: ["reason"] });
const redisFailures = counter({
  name: "mlmesh_predictor_cache_redis_failures_total",
  help: "Shared cache (Redis) calls that failed or timed out; the Predictor computed instead.",
  labelNames: ["operation"],
});

/** What the in-process cache holds now (one cache per process), read at scrape time. */
let cacheBytes = 0;
gauge({
  name: "mlmesh_predictor_cache_bytes",
  help: "Bytes of answers the in-process prediction cache holds.",
  collect() {
    this.set(cacheBytes);
  },
});

interface Entry {
  readonly answer: unknown;
  readonly bytes: number;
  readonly expiresAt: number;
}

export class PredictionCache {
  /** Insertion order is recency: a hit moves its entry to the end. */
  readonly #entries = new Map<string, Entry>();
  readonly #computing = new Map<string, Promise<unknown>>();
  readonly #redis: Redis | undefined;
  #bytes = 0;

  constructor(
    private readonly settings: CacheSettings,
    private readonly logger: Logger,
  ) {
    this.#redis =
      settings.redisUrl === undefined
        ? undefined
        : new Redis(settings.redisUrl, {
            // Fail fast rather than queue: a prediction never waits for Redis to come back.
            enableOfflineQueue: false,
            maxRetriesPerRequest: 0,
            commandTimeout: settings.redisTimeoutMs,
            connectTimeout: 1000,
            lazyConnect: false,
          });
    this.#redis?.on("error", (err: Error) => this.logger.debug({ err: err.message }, "prediction cache: Redis unreachable"));
  }

  enabledFor(model: string): boolean {
    return this.settings.models === "*" || this.settings.models.has(model);
  }

  /**
   * The answer to `input` for the version `loaded`: from memory, from Redis, from an identical
   * request computing now, or computed (and kept).
   */
  async through<Input, Answer>(loaded: LoadedVersion, kind: string, codec: CacheCodec<Input, Answer>, input: Input, compute: () => Promise<Answer>): Promise<Answer> {
    const model = loaded.name;
    const hash = createHash("sha256").update(loaded.sha256).update("\0").update(kind);
    // Each part with its length first: parts cannot run into each other.
    for (const part of codec.key(input)) hash.update(`\0${typeof part === "string" ? `s${Buffer.byteLength(part)}` : `b${part.length}`}:`).update(part);
    const key = `mlmesh:prediction:${hash.digest("hex")}`;
    const now = Date.now();
    const entry = this.#entries.get(key);
    if (entry !== undefined && entry.expiresAt > now) {
      this.#entries.delete(key);
      this.#entries.set(key, entry);
      lookups.labels(model, "hit").inc();
      return entry.answer as Answer;
    }
    if (entry !== undefined) this.#drop(key, entry, "ttl");
    const computing = this.#computing.get(key);
    if (computing !== undefined) {
      lookups.labels(model, "coalesced").inc();
      return computing as Promise<Answer>;
    }
    const pending = this.#fill(loaded, key, codec, compute);
    this.#computing.set(key, pending);
    try {
      return await pending;
    } finally {
      this.#computing.delete(key);
    }
  }

  async #fill<Input, Answer>(loaded: LoadedVersion, key: string, codec: CacheCodec<Input, Answer>, compute: () => Promise<Answer>): Promise<Answer> {
    const model = loaded.name;
    const shared = await this.#sharedGet(key);
    if (shared !== undefined) {
      try {
        const answer = codec.decode(shared, loaded);
        lookups.labels(model, "shared_hit").inc();
        this.#keep(key, answer, shared.length);
        return answer;
      } catch (err) {
        this.logger.warn({ err: (err as Error).message }, "prediction cache: an entry in Redis did not decode; computing");
      }
    }
    lookups.labels(model, "miss").inc();
    const answer = await compute();
    const bytes = codec.encode(answer);
    this.#keep(key, answer, bytes.length);
    this.#sharedSet(key, bytes);
    return answer;
  }

  #keep(key: string, answer: unknown, bytes: number): void {
    if (bytes > this.settings.maxBytes) return;
    const old = this.#entries.get(key);
    if (old !== undefined) this.#drop(key, old, "size");
    this.#entries.set(key, { answer, bytes, expiresAt: Date.now() + this.settings.ttlMs });
    this.#bytes += bytes;
    // Least recently used first out, until the answers fit.
    for (const [oldest, entry] of this.#entries) {
      if (this.#bytes <= this.settings.maxBytes) break;
      this.#drop(oldest, entry, entry.expiresAt <= Date.now() ? "ttl" : "size");
    }
    cacheBytes = this.#bytes;
  }

  #drop(key: string, entry: Entry, reason: "size" | "ttl"): void {
    this.#entries.delete(key);
    this.#bytes -= entry.bytes;
    cacheBytes = this.#bytes;
    evictions.labels(reason).inc();
  }

  async #sharedGet(key: string): Promise<Buffer | undefined> {
    if (this.#redis === undefined || this.#redis.status !== "ready") {
      if (this.#redis !== undefined) redisFailures.labels("get").inc();
      return undefined;
    }
    try {
      return (await this.#redis.getBuffer(key)) ?? undefined;
    } catch {
      redisFailures.labels("get").inc();
      return undefined;
    }
  }

  #sharedSet(key: string, bytes: Uint8Array): void {
    if (this.#redis === undefined || this.#redis.status !== "ready") return;
    this.#redis.set(key, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), "PX", this.settings.ttlMs).catch(() => redisFailures.labels("set").inc());
  }

  close(): void {
    this.#redis?.disconnect();
  }
}

