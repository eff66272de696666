// The deployment loop (issue 10) with real processes, on SQLite and PostgreSQL: versions
// pushed to the registry, a Predictor in registry mode following "production" under load
// with no failed call, a registry that goes away and comes back, uploads the registry must
// refuse, and sessions released after alias moves.
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PredictorService } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { pushModelFolder, registryClient, resolveModel, type RegistryClient } from "../services/cli/model-push.js";
import { sha256Hex } from "../services/model/onnx-model.js";
import { checkHealth, ServingStatus } from "../services/runtime/client/health-client.js";
import { failure } from "./support/clients.js";
import { freshDatabase, type TestDatabase } from "./support/databases.js";
import { repoRoot, startService, tools, type ServiceProcess } from "./support/service-process.js";

const v1Folder = join(repoRoot, "models/iris_svc/1");
const v2Folder = join(repoRoot, "test/fixtures/models/iris_svc/2");
const row = { values: [5.9, 3.0, 4.2, 1.5] };

/** One Predict answered (or not) during a load, with when it was sent and answered. */
interface Sample {
  readonly sentAt: number;
  readonly doneAt: number;
  readonly version: number;
  readonly error?: string;
}

/**
 * Sends Predict(iris_svc@production) with `concurrency` calls in flight until stopped, and
 * records which version answered each call.
 */
function sampler(address: string, concurrency: number) {
  const client = createClient(PredictorService, createGrpcTransport({ baseUrl: `http://${address}` }));
  const samples: Sample[] = [];
  let running = true;
  const lanes = Array.from({ length: concurrency }, async () => {
    while (running) {
      const sentAt = Date.now();
      try {
        const response = await client.predict({ model: "iris_svc@production", rows: [row] });
        samples.push({ sentAt, doneAt: Date.now(), version: response.version });
      } catch (err) {
        samples.push({ sentAt, doneAt: Date.now(), version: 0, error: ConnectError.from(err).message });
      }
    }
  });
  return {
    samples,
    async stop() {
      running = false;
      await Promise.all(lanes);
      return samples;
    },
  };
}

/** The first answer from `version` after `since`, and every answer that broke the order. */
function switchOf(samples: readonly Sample[], since: number, from: number, to: number) {
  const first = samples.filter((s) => s.doneAt >= since && s.version === to).sort((a, b) => a.doneAt - b.doneAt)[0];
  expect(first, `no answer from version ${to} after the move`).toBeDefined();
  return {
    visibleAfterMs: first.doneAt - since,
    // Sent before the move started: the old version must answer; sent after the first answer
    // from the new version: the new one must.
    early: samples.filter((s) => s.doneAt < since && s.version !== from),
    late: samples.filter((s) => s.sentAt > first.doneAt && s.version !== to),
  };
}

const rssMiB = async (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${pid}/status`, "utf8"))![1]) / 1024;

describe.each(["sqlite", "postgresql"] as const)("the deployment loop on %s", (dialect) => {
  let database: TestDatabase;
  let artifactDir: string;
  let registry: ServiceProcess;
  let registryPort: string;
  let predictor: ServiceProcess;
  let client: RegistryClient;
  let modelId: string;
  const registryEnv = () => ({ DATABASE_URL: database.url, ARTIFACT_DIR: artifactDir, ARTIFACT_MAX_BYTES: "8192" });

  beforeAll(async () => {
    database = await freshDatabase(dialect);
    artifactDir = await mkdtemp(join(tmpdir(), "mlmesh-artifacts-"));
    registry = await startService("registry", registryEnv());
    registryPort = registry.address.split(":")[1];
    client = registryClient(registry.address, "deployment-test");
    modelId = (await resolveModel(client, { project: "iris", name: "iris_svc" }, true)).id;
    await pushModelFolder(client, v1Folder, { modelId, modelName: "iris_svc", alias: "production" });
    await pushModelFolder(client, v2Folder, { modelId, modelName: "iris_svc" });
    predictor = await startService("predictor", { REGISTRY_ADDRESS: registry.address, PREDICTOR_MODELS: "iris/*" });
    const deadline = Date.now() + 20_000;
    while ((await checkHealth(predictor.address, "mlmesh.predictor.v1.PredictorService", 1000)) !== ServingStatus.SERVING) {
      if (Date.now() > deadline) throw new Error("the Predictor did not load the registry's models within 20 s");
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  });
  afterAll(async () => {
    await predictor?.stop();
    await registry?.stop();
    await database?.drop();
    if (artifactDir) await rm(artifactDir, { recursive: true, force: true });
  });

  it("moves production from v1 to v2 and back under load at concurrency 50 with no failed call, each switch visible within 2 s", async () => {
    const ghz = promisify(execFile)(
      tools.ghz,
      ["--insecure", "--call", "mlmesh.predictor.v1.PredictorService/Predict", "-d", JSON.stringify({ model: "iris_svc@production", rows: [row] }),
        "--concurrency", "50", "--connections", "1", "--total", "30000", "--timeout", "10s", "--format", "json", predictor.address],
      { maxBuffer: 64 * 1024 * 1024 },
    );
    const ghzEndedAt = ghz.then(() => Date.now());
    const load = sampler(predictor.address, 4);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const movedAt = Date.now();
    await client.setModelVersionAlias({ modelId, alias: "production", version: 2 });
    await expect.poll(() => load.samples.some((s) => s.doneAt > movedAt && s.version === 2), { timeout: 5000, interval: 20 }).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const rolledBackAt = Date.now();
    await client.rollbackModelVersionAlias({ modelId, alias: "production" });
    await expect.poll(() => load.samples.some((s) => s.doneAt > rolledBackAt && s.version === 1), { timeout: 5000, interval: 20 }).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const samples = await load.stop();
    const report = JSON.parse((await ghz).stdout) as { count: number; statusCodeDistribution: Record<string, number> };

    expect(samples.filter((s) => s.error !== undefined)).toEqual([]);
    expect(report.statusCodeDistribution).toEqual({ OK: 30000 });
    expect(await ghzEndedAt, "ghz's 30,000 calls must span both moves").toBeGreaterThan(rolledBackAt);
    const forward = switchOf(samples.filter((s) => s.sentAt < rolledBackAt), movedAt, 1, 2);
    expect(forward.early).toEqual([]);
    expect(forward.late).toEqual([]);
    expect(forward.visibleAfterMs).toBeLessThan(2000);
    const back = switchOf(samples, rolledBackAt, 2, 1);
    expect(back.early.filter((s) => s.sentAt > forward.visibleAfterMs + movedAt)).toEqual([]);
    expect(back.late).toEqual([]);
    expect(back.visibleAfterMs).toBeLessThan(2000);

    const { changes } = await client.listAliasHistory({ modelId, alias: "production" });
    expect(changes.slice(0, 3).map((c) => [c.previousVersion, c.version, c.actor])).toEqual([
      [2, 1, "deployment-test"],
      [1, 2, "deployment-test"],
      [0, 1, "deployment-test"],
    ]);
    const listed = (await client.listModelVersions({ modelId })).modelVersions;
    expect(listed.map((v) => [v.version, v.aliases, v.serving.map((s) => s.predictor)])).toEqual([
      [1, ["production"], [predictor.address]],
      [2, [], [predictor.address]],
    ]);
  }, 60_000);

  it("keeps serving while the registry is down, and catches up when it returns", async () => {
    const load = sampler(predictor.address, 8);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await registry.stop("SIGKILL")).toBe("SIGKILL");
    await new Promise((resolve) => setTimeout(resolve, 2500));
    expect(await checkHealth(predictor.address, "mlmesh.predictor.v1.PredictorService", 1000)).toBe(ServingStatus.SERVING);
    registry = await startService("registry", { ...registryEnv(), REGISTRY_PORT: registryPort });
    client = registryClient(registry.address, "deployment-test");
    const movedAt = Date.now();
    await client.setModelVersionAlias({ modelId, alias: "production", version: 2 });
    await expect.poll(() => load.samples.some((s) => s.doneAt > movedAt && s.version === 2), { timeout: 15_000, interval: 50 }).toBe(true);
    const samples = await load.stop();
    expect(samples.filter((s) => s.error !== undefined)).toEqual([]);
    expect(samples.filter((s) => s.version === 1).length).toBeGreaterThan(0);
    expect(predictor.logs.some((l) => l.msg === "registry watch lost; serving what is loaded")).toBe(true);
    await client.setModelVersionAlias({ modelId, alias: "production", version: 1 });
  }, 60_000);

  it("refuses a corrupt, an oversized, a partial and an inconsistent upload, and stores nothing of them", async () => {
    const blobsBefore = await blobs(artifactDir);
    const versionsBefore = (await client.listModelVersions({ modelId })).modelVersions.length;
    const onnx = await readFile(join(v1Folder, "model.onnx"));
    const metadata = await readFile(join(v1Folder, "metadata.json"));
    const header = (files: [string, Buffer][], sizes?: number[]) => ({
      content: {
        case: "header" as const,
        value: { modelId, files: files.map(([name, bytes], i) => ({ name, sizeBytes: BigInt(sizes?.[i] ?? bytes.length), sha256: sha256Hex(bytes) })) },
      },
    });
    const chunk = (file: string, data: Uint8Array) => ({ content: { case: "chunk" as const, value: { file, data } } });
    async function* stream(...messages: object[]) {
      for (const m of messages) yield m as never;
    }

    // Corrupt: a byte changed on the way.
    const flipped = Buffer.from(onnx);
    flipped[100] ^= 0xff;
    let error = await failure(client.uploadModelVersion(stream(header([["model.onnx", onnx], ["metadata.json", metadata]]), chunk("model.onnx", flipped), chunk("metadata.json", metadata))));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toMatch(/^model\.onnx: the received bytes have SHA-256 [0-9a-f]{64}, the header says [0-9a-f]{64}$/);

    // Oversized: declared, and sent beyond what the header said.
    error = await failure(client.uploadModelVersion(stream(header([["model.onnx", onnx], ["metadata.json", metadata]], [9000, metadata.length]))));
    expect(error.code).toBe(Code.ResourceExhausted);
    expect(error.rawMessage).toBe(`the upload is ${9000 + metadata.length} bytes; ARTIFACT_MAX_BYTES allows 8192`);
    error = await failure(
      client.uploadModelVersion(stream(header([["model.onnx", onnx], ["metadata.json", metadata]]), chunk("model.onnx", Buffer.alloc(9000)))),
    );
    expect(error.code).toBe(Code.ResourceExhausted);

    // Partial: the stream ends early.
    error = await failure(client.uploadModelVersion(stream(header([["model.onnx", onnx], ["metadata.json", metadata]]), chunk("model.onnx", onnx.subarray(0, 500)))));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toBe(`model.onnx: 500 of ${onnx.length} bytes arrived; the upload is incomplete`);

    // Inconsistent: metadata that disagrees with the graph.
    const mismatched = (change: (m: Record<string, unknown>) => void) => {
      const parsed = JSON.parse(metadata.toString("utf8")) as Record<string, unknown>;
      change(parsed);
      return Buffer.from(JSON.stringify(parsed));
    };
    for (const [bad, expected] of [
      [mismatched((m) => (m.labels = ["a", "b", "c", "d"])), /output "probabilities" is float32 \[-1, 3\]; with 4 labels it must be float32 \[-1, 4\]/],
      [mismatched((m) => ((m.input as { name: string }).name = "features")), /the ONNX graph has no input "features" \(it has input\)/],
      [mismatched((m) => ((m.outputs as { dtype: string }[])[0].dtype = "float32")), /output "label" is int64 in the ONNX graph, metadata.json says float32/],
      [mismatched((m) => (m.name = "iris_svc_setosa")), /metadata\.json: name is "iris_svc_setosa", expected "iris_svc"/],
    ] as const) {
      error = await failure(client.uploadModelVersion(stream(header([["model.onnx", onnx], ["metadata.json", bad]]), chunk("model.onnx", onnx), chunk("metadata.json", bad))));
      expect(error.code, error.message).toBe(Code.InvalidArgument);
      expect(error.rawMessage).toMatch(expected);
    }

    expect((await client.listModelVersions({ modelId })).modelVersions).toHaveLength(versionsBefore);
    expect(await blobs(artifactDir)).toEqual(blobsBefore);
    expect(await readdir(join(artifactDir, "staging"))).toEqual([]);
  });

  it("releases the old session after each of 20 alias moves: loaded versions and memory return to where they were", async () => {
    const lean = await startService("predictor", { REGISTRY_ADDRESS: registry.address, PREDICTOR_MODELS: "iris/iris_svc", PREDICTOR_LATEST_VERSIONS: "0" });
    try {
      const predict = createClient(PredictorService, createGrpcTransport({ baseUrl: lean.baseUrl }));
      const serves = async (version: number) =>
        expect.poll(async () => (await predict.predict({ model: "iris_svc@production", rows: [row] })).version, { timeout: 10_000, interval: 25 }).toBe(version);
      const move = async (version: number) => {
        await client.setModelVersionAlias({ modelId, alias: "production", version });
        await serves(version);
      };
      await serves(1);
      const unloads = () => lean.logs.filter((l) => l.msg === "model versions unloaded after their last call").length;
      for (const version of [2, 1, 2, 1]) await move(version); // warm the allocator
      // A version is released after its last call, a moment after the switch: count from
      // when the warm-up's four releases have all happened.
      await expect.poll(unloads).toBe(4);
      const baseline = await rssMiB(lean.child.pid!);
      for (let i = 0; i < 20; i++) await move(i % 2 === 0 ? 2 : 1);
      await expect.poll(unloads).toBe(4 + 20);
      const listed = await predict.listModels({});
      expect(listed.models.map((m) => `${m.name}@${m.version}:${m.aliases.join()}`)).toEqual(["iris_svc@1:production"]);
      expect(await rssMiB(lean.child.pid!)).toBeLessThan(baseline + 24);
    } finally {
      await lean.stop();
    }
  }, 90_000);
});

/** Every blob in the artifact store. */
async function blobs(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const prefix of await readdir(join(dir, "sha256"))) found.push(...(await readdir(join(dir, "sha256", prefix))));
  return found.sort();
}
