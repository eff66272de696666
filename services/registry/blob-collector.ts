import type { Logger } from "../runtime/observability/logger.js";
import type { ArtifactStore } from "./artifact-store.js";

/** What one collection did. */
export interface Collection {
  readonly examined: number;
  readonly removed: readonly string[];
}

/**
 * Removes blobs that no model version names, once they are older than a grace period: what an
 * upload leaves when it stored its blob but not its version (the registry killed in between, the
 * database unreachable, the version refused). The grace period covers an upload in progress: a
 * blob is stored before its version's row is written, and a second upload of the same bytes
 * stores it again (renewing its date), so a blob a version is about to name is never old. The
 * referenced digests are read before the blobs are listed, so a version written meanwhile only
 * keeps more. Every registry replica may collect: removing a blob twice is harmless.
 */
export class BlobCollector {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(
    private readonly store: Pick<ArtifactStore, "list" | "remove">,
    private readonly referenced: () => Promise<ReadonlySet<string>>,
    private readonly settings: { readonly graceMs: number; readonly intervalMs: number },
    private readonly logger: Logger,
  ) {}

  /** One collection: the unreferenced blobs older than the grace period are removed. */
  async collect(nowMs = Date.now()): Promise<Collection> {
    const keep = await this.referenced();
    let examined = 0;
    const removed: string[] = [];
    for await (const blob of this.store.list()) {
      examined++;
      if (keep.has(blob.sha256) || nowMs - blob.storedAtMs < this.settings.graceMs) continue;
      await this.store.remove(blob.sha256);
      removed.push(blob.sha256);
    }
    if (removed.length > 0) this.logger.info({ examined, removed }, "unreferenced artifact blobs removed");
    return { examined, removed };
  }

  /** Collects now and then every interval; a failed collection is logged and tried again later. */
  start(): void {
    const tick = () => {
      this.running = this.collect()
        .catch((err: unknown) => this.logger.warn({ err }, "artifact blob collection failed; retrying at the next interval"))
        .finally(() => {
          this.running = undefined;
          if (this.timer !== undefined) this.timer = setTimeout(tick, this.settings.intervalMs).unref();
        });
    };
    this.timer = setTimeout(tick, 0).unref();
  }

  /** Stops collecting; resolves once a collection under way has finished. */
  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
