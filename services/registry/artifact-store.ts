import { createHash, randomUUID } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readdir, rename, rm, stat, type FileHandle } from "node:fs/promises";
import { dirname, join } from "node:path";

/**
 * Where model artifacts live, by the SHA-256 of their bytes (content-addressed: the same file
 * uploaded twice is stored once, and a stored blob never changes). One narrow interface, so
 * that an object store (S3-compatible: a PUT to a staging key, then a copy to the digest's
 * key) can be a second implementation beside the local directory.
 */
export interface ArtifactStore {
  /** Starts a blob; its bytes are hashed as they are written. */
  begin(): Promise<BlobWriter>;
  /** The bytes of a stored blob, in chunks of at most `chunkBytes`. */
  read(sha256: string, chunkBytes: number): AsyncIterable<Uint8Array>;
  /** Whether a blob is stored. */
  has(sha256: string): Promise<boolean>;
  /** Every stored blob, with when it was last stored (a second upload of the same bytes renews it). */
  list(): AsyncIterable<StoredBlob>;
  /** Removes a blob (the collector's: blob-collector.ts); nothing when it is not there. */
  remove(sha256: string): Promise<void>;
}

/** A blob in the store, and when it was last stored (epoch ms). */
export interface StoredBlob {
  readonly sha256: string;
  readonly storedAtMs: number;
}

/** A blob being written: nothing is visible under its digest until commit. */
export interface BlobWriter {
  /** Bytes written so far. */
  readonly size: number;
  write(chunk: Uint8Array): Promise<void>;
  /** SHA-256 of the bytes written so far (hex). */
  digest(): string;
  /** The bytes written so far, read back (to check a model before it is committed). */
  contents(): Promise<Buffer>;
  /** Stores the blob under its digest, atomically and durably; returns the digest. */
  commit(): Promise<string>;
  /** Drops the blob. Safe to call after commit (then it does nothing). */
  abort(): Promise<void>;
}

/**
 * The default store: a local directory (ARTIFACT_DIR). Blobs are written to staging/, flushed
 * to disk, then renamed to sha256/<first two hex>/<digest> — a rename within one filesystem is
 * atomic, so a reader sees a whole blob or none, even after a crash.
 */
export class LocalArtifactStore implements ArtifactStore {
  constructor(private readonly dir: string) {}

  /** Creates the folders and removes staging files a crash may have left. */
  async open(): Promise<this> {
    await mkdir(join(this.dir, "staging"), { recursive: true });
    await mkdir(join(this.dir, "sha256"), { recursive: true });
    for (const leftover of await readdir(join(this.dir, "staging"))) await rm(join(this.dir, "staging", leftover), { force: true });
    return this;
  }

  async begin(): Promise<BlobWriter> {
    return StagedBlobWriter.create(join(this.dir, "staging"), async (stagedPath, file, sha256) => {
      await file.sync();
      await file.close();
      const target = this.pathOf(sha256);
      await mkdir(dirname(target), { recursive: true });
      await rename(stagedPath, target); // an existing blob with this digest has the same bytes
      const folder = await open(dirname(target), "r");
      try {
        await folder.sync(); // the rename itself survives a crash
      } finally {
        await folder.close();
      }
    });
  }

  async *read(sha256: string, chunkBytes: number): AsyncIterable<Uint8Array> {
    yield* createReadStream(this.pathOf(sha256), { highWaterMark: chunkBytes });
  }

  async has(sha256: string): Promise<boolean> {
    try {
      await stat(this.pathOf(sha256));
      return true;
    } catch {
      return false;
    }
  }

  async *list(): AsyncIterable<StoredBlob> {
    for (const folder of await readdir(join(this.dir, "sha256"))) {
      for (const name of await readdir(join(this.dir, "sha256", folder)).catch(() => [] as string[])) {
        if (!/^[0-9a-f]{64}$/.test(name)) continue;
        const info = await stat(join(this.dir, "sha256", folder, name)).catch(() => undefined);
        if (info !== undefined) yield { sha256: name, storedAtMs: info.mtimeMs };
      }
    }
  }

  async remove(sha256: string): Promise<void> {
    await rm(this.pathOf(sha256), { force: true });
  }

  private pathOf(sha256: string): string {
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new Error(`"${sha256}" is not a SHA-256`);
    return join(this.dir, "sha256", sha256.slice(0, 2), sha256);
  }
}

/**
 * Stores a staged blob under its digest: the staged file (open, all bytes written) becomes the
 * blob, or is copied to where the blob lives. Called once; the writer removes the staged file
 * afterwards if it is still there.
 */
export type PublishBlob = (stagedPath: string, file: FileHandle, sha256: string) => Promise<void>;

/**
 * A blob written to a local staging file and hashed as it is written; commit hands it to the
 * store's `publish`. Both stores stage locally: a model is checked (contents) before it is stored.
 */
export class StagedBlobWriter implements BlobWriter {
  size = 0;
  readonly #hash = createHash("sha256");
  #done = false;

  private constructor(
    private readonly file: FileHandle,
    private readonly stagedPath: string,
    private readonly publish: PublishBlob,
  ) {}

  static async create(stagingDir: string, publish: PublishBlob): Promise<StagedBlobWriter> {
    const stagedPath = join(stagingDir, randomUUID());
    return new StagedBlobWriter(await open(stagedPath, "wx+"), stagedPath, publish);
  }

  async write(chunk: Uint8Array): Promise<void> {
    await this.file.write(chunk);
    this.#hash.update(chunk);
    this.size += chunk.length;
  }

  digest(): string {
    return this.#hash.copy().digest("hex");
  }

  async contents(): Promise<Buffer> {
    const bytes = Buffer.allocUnsafe(this.size);
    await this.file.read(bytes, 0, this.size, 0);
    return bytes;
  }

  async commit(): Promise<string> {
    const sha256 = this.digest();
    await this.publish(this.stagedPath, this.file, sha256);
    this.#done = true;
    await this.file.close().catch(() => undefined); // closed already where publish closed it
    await rm(this.stagedPath, { force: true }); // gone already where publish renamed it
    return sha256;
  }

  async abort(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    await this.file.close().catch(() => undefined);
    await rm(this.stagedPath, { force: true });
  }
}
