// The registry's artifact stores. The S3-compatible one (services/registry/s3-artifact-store.ts)
// against a real S3 server on this machine: SeaweedFS (`weed mini`, built by
// scripts/install-tools.sh), never a mock. The store alone: multipart uploads, SHA-256 checked
// end to end, an unreachable store. Then two registry replicas on one PostgreSQL database and one
// bucket: a model pushed through one is downloaded through the other, seen by the other's watch
// stream, and served by a Predictor that follows the other. And on both stores, the blobs an
// upload leaves when the registry dies between storing them and writing their version are
// removed by the collector, and only those.
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HeadObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pushModelFolder, registryClient, resolveModel } from "../services/cli/model-push.js";
import { checkHealth, ServingStatus } from "../services/runtime/client/health-client.js";
import { S3ArtifactStore, type S3StoreSettings } from "../services/registry/s3-artifact-store.js";
import { freshDatabase, type TestDatabase } from "./support/databases.js";
import { repoRoot, startService, type ServiceProcess } from "./support/service-process.js";

const weed = join(repoRoot, ".tools/bin/weed");
const bucket = "mlmesh-artifacts";
const credentials = { AWS_ACCESS_KEY_ID: "mlmesh-test", AWS_SECRET_ACCESS_KEY: "mlmesh-test-secret" };
// The stores made in this process read their credentials as the registry does: from the
// environment, through the AWS SDK's default chain.
Object.assign(process.env, credentials);
const scratch = await mkdtemp(join(tmpdir(), "mlmesh-s3-"));
let server: ChildProcess | undefined;
let endpoint = "";

/** A port that is free, and whose +10000 (SeaweedFS's gRPC port beside each HTTP one) is too. */
async function freePortPair(): Promise<number> {
  const listenable = (port: number) =>
    new Promise<boolean>((resolve) => {
      const probe = createServer();
      probe.once("error", () => resolve(false));
      probe.listen(port, "127.0.0.1", () => probe.close(() => resolve(true)));
    });
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 30_000);
    if ((await listenable(port)) && (await listenable(port + 10_000))) return port;
  }
}

beforeAll(async () => {
  const config = join(scratch, "s3.json");
  const identity = { name: "mlmesh", credentials: [{ accessKey: credentials.AWS_ACCESS_KEY_ID, secretKey: credentials.AWS_SECRET_ACCESS_KEY }], actions: ["Admin", "Read", "Write", "List", "Tagging"] };
  await writeFile(config, JSON.stringify({ identities: [identity] }));
  const [master, volume, filer, s3, webdav, admin, debug] = [await freePortPair(), await freePortPair(), await freePortPair(), await freePortPair(), await freePortPair(), await freePortPair(), await freePortPair()];
  server = spawn(
    weed,
    [
      "mini",
      `-dir=${join(scratch, "data")}`,
      "-ip=127.0.0.1",
      "-ip.bind=127.0.0.1",
      `-bucket=${bucket}`,
      `-s3.config=${config}`,
      `-master.port=${master}`,
      `-volume.port=${volume}`,
      `-filer.port=${filer}`,
      `-s3.port=${s3}`,
      `-webdav.port=${webdav}`,
      `-admin.port=${admin}`,
      `-debug.port=${debug}`,
      "-master.telemetry=false",
      "-admin.ui=false",
      "-webdav=false",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  server.stderr!.on("data", (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));
  endpoint = `http://127.0.0.1:${s3}`;
  // Ready once the bucket answers a lookup through the store itself.
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const store = await new S3ArtifactStore(settings("probe")).open();
      store.close();
      break;
    } catch (err) {
      if (server.exitCode !== null || Date.now() > deadline) throw new Error(`SeaweedFS did not serve S3 on ${endpoint} within 60 s: ${(err as Error).message}\n${stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}, 90_000);

afterAll(async () => {
  if (server !== undefined && server.exitCode === null) {
    const exited = new Promise((resolve) => server!.once("exit", resolve));
    server.kill("SIGTERM");
    // SeaweedFS drains for a few seconds; past 10 s it is stopped outright.
    const timer = setTimeout(() => server!.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }
  await rm(scratch, { recursive: true, force: true });
}, 20_000);

function settings(name: string): S3StoreSettings {
  return { endpoint, region: "us-east-1", bucket, prefix: "artifacts/", forcePathStyle: true, stagingDir: join(scratch, `staging-${name}`) };
}

const s3Client = () => new S3Client({ endpoint, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: credentials.AWS_ACCESS_KEY_ID, secretAccessKey: credentials.AWS_SECRET_ACCESS_KEY } });

async function readAll(store: S3ArtifactStore, sha256: string): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of store.read(sha256, 1 << 20)) chunks.push(chunk);
  return Buffer.concat(chunks);
}

describe("S3-compatible artifact store (SeaweedFS)", () => {
  it("uploads a 20 MiB blob in parts under its digest, and reads back the same bytes in chunks of at most 1 MiB", async () => {
    const store = await new S3ArtifactStore(settings("multipart")).open();
    try {
      const bytes = randomBytes(20 * 1024 * 1024);
      const sha256 = createHash("sha256").update(bytes).digest("hex");
      expect(await store.has(sha256)).toBe(false);
      const writer = await store.begin();
      for (let at = 0; at < bytes.length; at += 3 << 20) await writer.write(bytes.subarray(at, at + (3 << 20)));
      expect((await writer.contents()).equals(bytes)).toBe(true);
      expect(await writer.commit()).toBe(sha256);
      expect(await store.has(sha256)).toBe(true);
      const head = await s3Client().send(new HeadObjectCommand({ Bucket: bucket, Key: `artifacts/sha256/${sha256.slice(0, 2)}/${sha256}` }));
      expect(head.ContentLength).toBe(bytes.length);
      expect(head.Metadata?.sha256).toBe(sha256);
      expect(head.ETag).toMatch(/-3"?$/); // a multipart upload of 3 parts (8 + 8 + 4 MiB)
      expect((await readAll(store, sha256)).equals(bytes)).toBe(true);
      // The same bytes again: the same key (content-addressed), stored anew so that the blob
      // collector sees it as new while its version is being written.
      const again = await store.begin();
      await again.write(bytes);
      expect(await again.commit()).toBe(sha256);
      expect((await readAll(store, sha256)).equals(bytes)).toBe(true);
    } finally {
      store.close();
    }
  }, 120_000);

  it("fails a read with DATA_LOSS when the stored bytes no longer hash to their key", async () => {
    const store = await new S3ArtifactStore(settings("tamper")).open();
    try {
      const writer = await store.begin();
      await writer.write(Buffer.from("the real model"));
      const sha256 = await writer.commit();
      await s3Client().send(new PutObjectCommand({ Bucket: bucket, Key: `artifacts/sha256/${sha256.slice(0, 2)}/${sha256}`, Body: "something else" }));
      const error = await readAll(store, sha256).then(() => undefined, (err: unknown) => ConnectError.from(err));
      expect(error?.code).toBe(Code.DataLoss);
      expect(error?.rawMessage).toContain(`artifact ${sha256} in bucket ${bucket} has changed`);
    } finally {
      store.close();
    }
  });

  it("refuses to open, UNAVAILABLE naming the bucket and the endpoint, when the store cannot be reached", async () => {
    const unreachable = { ...settings("down"), endpoint: "http://127.0.0.1:9" };
    const error = await new S3ArtifactStore(unreachable).open().then(() => undefined, (err: unknown) => ConnectError.from(err));
    expect(error?.code).toBe(Code.Unavailable);
    expect(error?.rawMessage).toContain(`artifact store s3://${bucket} at http://127.0.0.1:9`);
  });
});

describe("two registry replicas on one PostgreSQL and one S3 bucket", () => {
  let database: TestDatabase;
  const replicas: ServiceProcess[] = [];
  let predictor: ServiceProcess | undefined;
  let replicaPrefix = "";

  beforeAll(async () => {
    database = await freshDatabase("postgresql");
    replicaPrefix = `replicas-${database.url.split("/").pop()}/`;
    for (const name of ["a", "b"]) {
      replicas.push(
        await startService("registry", {
          ...credentials,
          DATABASE_URL: database.url,
          ARTIFACT_DIR: join(scratch, `registry-${name}`),
          ARTIFACT_S3_BUCKET: bucket,
          ARTIFACT_S3_ENDPOINT: endpoint,
          ARTIFACT_S3_PREFIX: replicaPrefix,
          REGISTRY_BLOB_GC_GRACE: "2s",
          REGISTRY_BLOB_GC_INTERVAL: "1s",
        }),
      );
    }
  }, 60_000);
  afterAll(async () => {
    await predictor?.stop();
    for (const replica of replicas) await replica.stop();
    await database?.drop();
  });

  it("serves through one what was pushed through the other: downloads, watch streams and a Predictor", async () => {
    const [a, b] = replicas.map((r) => registryClient(r.address, "s3-test"));
    // Watch both replicas before the push.
    const stop = new AbortController();
    const seen = { a: [] as string[], b: [] as string[] };
    for (const [name, client] of [["a", a], ["b", b]] as const) {
      void (async () => {
        for await (const { event } of client.watchModelEvents({ projectName: "shared" }, { signal: stop.signal })) if (event!.version > 0) seen[name].push(`${event!.modelName}@${event!.version}`);
      })().catch(() => undefined);
    }
    const folder = join(repoRoot, "models/iris_svc/1");
    const modelId = (await resolveModel(a, { project: "shared", name: "iris_svc" }, true)).id;
    const version = await pushModelFolder(a, folder, { modelId, modelName: "iris_svc", alias: "production" });

    // Downloaded through the other replica: the same bytes as the folder's.
    const files = new Map<string, Buffer[]>();
    for await (const message of b.downloadModelVersion({ modelId, version: version.version })) {
      if (message.content.case === "chunk") files.set(message.content.value.file, [...(files.get(message.content.value.file) ?? []), Buffer.from(message.content.value.data)]);
    }
    for (const name of ["model.onnx", "metadata.json"]) expect(Buffer.concat(files.get(name)!).equals(await readFile(join(folder, name))), name).toBe(true);
    // And the other way: a version pushed through b, its model file downloaded through a.
    const setosaId = (await resolveModel(b, { project: "shared", name: "iris_svc_setosa" }, true)).id;
    const second = await pushModelFolder(b, join(repoRoot, "models/iris_svc_setosa/1"), { modelId: setosaId, modelName: "iris_svc_setosa" });
    const fromA: Buffer[] = [];
    for await (const message of a.downloadModelVersion({ modelId: setosaId, version: second.version, files: ["model.onnx"] })) {
      if (message.content.case === "chunk") fromA.push(Buffer.from(message.content.value.data));
    }
    expect(Buffer.concat(fromA).equals(await readFile(join(repoRoot, "models/iris_svc_setosa/1/model.onnx")))).toBe(true);

    // Both replicas' watch streams saw the new version.
    const sawBoth = (v: string) => seen.a.includes(v) && seen.b.includes(v);
    await expect.poll(() => sawBoth(`iris_svc@${version.version}`) && sawBoth(`iris_svc_setosa@${second.version}`), { timeout: 10_000 }).toBe(true);
    stop.abort();

    // A blob as a registry killed between storing it and writing its version leaves it: the
    // replicas' collectors (grace 2 s) remove it, and keep every blob a version names.
    const orphanStore = await new S3ArtifactStore({ ...settings("orphan"), prefix: replicaPrefix }).open();
    const orphan = await orphanStore.begin();
    await orphan.write(randomBytes(1000));
    const orphanSha = await orphan.commit();
    await expect.poll(() => orphanStore.has(orphanSha), { timeout: 20_000, interval: 500 }).toBe(false);
    for (const file of [...version.files, ...second.files]) expect(await orphanStore.has(file.sha256), file.name).toBe(true);
    orphanStore.close();

    // A Predictor following replica b loads the version pushed through replica a.
    predictor = await startService("predictor", { REGISTRY_ADDRESS: replicas[1].address, PREDICTOR_MODELS: "shared/*" });
    await expect
      .poll(async () => await checkHealth(predictor!.address, "mlmesh.predictor.v1.PredictorService", 1000), { timeout: 30_000, interval: 200 })
      .toBe(ServingStatus.SERVING);
  }, 90_000);
});

describe("blob collection on the local store", () => {
  it("removes a blob no version names once past the grace period, and keeps the others", async () => {
    const database = await freshDatabase("sqlite");
    const artifactDir = join(scratch, "local-artifacts");
    const registry = await startService("registry", { DATABASE_URL: database.url, ARTIFACT_DIR: artifactDir, REGISTRY_BLOB_GC_GRACE: "1h", REGISTRY_BLOB_GC_INTERVAL: "1s" });
    try {
      const client = registryClient(registry.address, "gc-test");
      const modelId = (await resolveModel(client, { project: "gc", name: "iris_svc" }, true)).id;
      const version = await pushModelFolder(client, join(repoRoot, "models/iris_svc/1"), { modelId, modelName: "iris_svc" });
      // Two blobs as a registry killed after storing them leaves them: one two hours old, one new.
      const plant = async (bytes: Buffer, ageMs: number) => {
        const sha256 = createHash("sha256").update(bytes).digest("hex");
        const path = join(artifactDir, "sha256", sha256.slice(0, 2), sha256);
        await mkdir(join(artifactDir, "sha256", sha256.slice(0, 2)), { recursive: true });
        await writeFile(path, bytes);
        const when = new Date(Date.now() - ageMs);
        await utimes(path, when, when);
        return path;
      };
      const old = await plant(randomBytes(100), 2 * 3_600_000);
      const young = await plant(randomBytes(100), 0);
      await expect.poll(() => exists(old), { timeout: 10_000, interval: 200 }).toBe(false);
      expect(await exists(young)).toBe(true); // inside the grace: an upload may be about to name it
      for (const file of version.files) expect(await exists(join(artifactDir, "sha256", file.sha256.slice(0, 2), file.sha256)), file.name).toBe(true);
      expect(registry.logs.some((l) => l.msg === "unreferenced artifact blobs removed")).toBe(true);
    } finally {
      await registry.stop();
      await database.drop();
    }
  }, 60_000);
});

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
