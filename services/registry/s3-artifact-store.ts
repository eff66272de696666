import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, NotFound, S3Client, S3ServiceException } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { Code, ConnectError } from "@connectrpc/connect";
import { StagedBlobWriter, type ArtifactStore, type BlobWriter, type StoredBlob } from "./artifact-store.js";

/** Where the S3-compatible store is, and how to reach it (registry config: ARTIFACT_S3_*). */
export interface S3StoreSettings {
  /** The endpoint of an S3-compatible server (SeaweedFS, MinIO, Ceph); unset: AWS S3. */
  readonly endpoint?: string;
  readonly region: string;
  readonly bucket: string;
  /** Keys start with this ("artifacts/"). */
  readonly prefix: string;
  /** Path-style URLs (bucket in the path), which most S3-compatible servers need. */
  readonly forcePathStyle: boolean;
  /** Where blobs are staged before they are uploaded (a local folder of this replica). */
  readonly stagingDir: string;
}

/** Parts of a multipart upload: 8 MiB, 4 in flight (a model of 100 MB goes as 13 parts). */
const partBytes = 8 * 1024 * 1024;
const partsInFlight = 4;

/**
 * Artifacts in an S3-compatible bucket, shared by every registry replica, under
 * <prefix>sha256/<first two hex>/<digest>. A blob is staged on local disk (hashed as it is
 * written, so a model is checked before it is stored), then uploaded, in parts above 8 MiB, with
 * its digest in the object's metadata; an object is only ever created whole (S3 makes a PUT or a
 * completed multipart upload visible at once), so a reader sees a whole blob or none. Reads
 * are checked end to end: the bytes served are hashed and a download whose digest differs fails.
 * Credentials come from the AWS SDK's usual chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY,
 * a profile, or the pod's role).
 */
export class S3ArtifactStore implements ArtifactStore {
  private readonly client: S3Client;

  constructor(private readonly settings: S3StoreSettings) {
    this.client = new S3Client({ endpoint: settings.endpoint, region: settings.region, forcePathStyle: settings.forcePathStyle });
  }

  /** Creates the staging folder (removing what a crash left) and checks the bucket answers. */
  async open(): Promise<this> {
    await mkdir(this.settings.stagingDir, { recursive: true });
    for (const leftover of await readdir(this.settings.stagingDir)) await rm(join(this.settings.stagingDir, leftover), { force: true });
    await this.has("0".repeat(64)); // fails now, naming the bucket, when it cannot be reached
    return this;
  }

  async begin(): Promise<BlobWriter> {
    return StagedBlobWriter.create(this.settings.stagingDir, async (stagedPath, file, sha256) => {
      await file.close();
      // Uploaded even when the bytes are stored already: the object's new date keeps the blob
      // collector (blob-collector.ts) from removing it before this version's row is written.
      const upload = new Upload({
        client: this.client,
        params: { Bucket: this.settings.bucket, Key: this.keyOf(sha256), Body: createReadStream(stagedPath), Metadata: { sha256 } },
        partSize: partBytes,
        queueSize: partsInFlight,
        leavePartsOnError: false, // a failed upload is aborted: no orphan parts
      });
      await this.guard(() => upload.done(), `uploading ${sha256}`);
    });
  }

  async *read(sha256: string, chunkBytes: number): AsyncIterable<Uint8Array> {
    const object = await this.guard(() => this.client.send(new GetObjectCommand({ Bucket: this.settings.bucket, Key: this.keyOf(sha256) })), `reading ${sha256}`);
    const hash = createHash("sha256");
    for await (const data of object.Body as Readable) {
      const bytes = data as Buffer;
      hash.update(bytes);
      for (let at = 0; at < bytes.length; at += chunkBytes) yield bytes.subarray(at, at + chunkBytes);
    }
    const got = hash.digest("hex");
    if (got !== sha256) throw new ConnectError(`artifact ${sha256} in bucket ${this.settings.bucket} has changed: its bytes hash to ${got}`, Code.DataLoss);
  }

  async has(sha256: string): Promise<boolean> {
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.settings.bucket, Key: this.keyOf(sha256) }));
      return true;
    } catch (err) {
      if (err instanceof NotFound || (err instanceof S3ServiceException && err.$metadata.httpStatusCode === 404)) return false;
      throw this.unreachable(err, `looking up ${sha256}`);
    }
  }

  async *list(): AsyncIterable<StoredBlob> {
    const prefix = `${this.settings.prefix}sha256/`;
    let token: string | undefined;
    do {
      const page = await this.guard(
        () => this.client.send(new ListObjectsV2Command({ Bucket: this.settings.bucket, Prefix: prefix, ContinuationToken: token })),
        "listing blobs",
      );
      for (const object of page.Contents ?? []) {
        const sha256 = object.Key?.slice(object.Key.lastIndexOf("/") + 1) ?? "";
        if (/^[0-9a-f]{64}$/.test(sha256)) yield { sha256, storedAtMs: object.LastModified?.getTime() ?? Date.now() };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  async remove(sha256: string): Promise<void> {
    await this.guard(() => this.client.send(new DeleteObjectCommand({ Bucket: this.settings.bucket, Key: this.keyOf(sha256) })), `removing ${sha256}`);
  }

  close(): void {
    this.client.destroy();
  }

  private keyOf(sha256: string): string {
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new Error(`"${sha256}" is not a SHA-256`);
    return `${this.settings.prefix}sha256/${sha256.slice(0, 2)}/${sha256}`;
  }

  private async guard<T>(run: () => Promise<T>, what: string): Promise<T> {
    try {
      return await run();
    } catch (err) {
      throw this.unreachable(err, what);
    }
  }

  /** UNAVAILABLE naming the store and what failed (the call may be retried). */
  private unreachable(err: unknown, what: string): ConnectError {
    const reason = err instanceof Error ? err.message : String(err);
    return new ConnectError(`artifact store s3://${this.settings.bucket}${this.settings.endpoint ? ` at ${this.settings.endpoint}` : ""}: ${what}: ${reason}`, Code.Unavailable);
  }
}
