// ResNet-50 (the architecture with random weights: pretrained weights cannot be downloaded here;
// scripts/make-resnet50.sh builds it into .cache/models) served beside the iris models: through
// tritonclient as tensors and as a JPEG, through ClassifyImages, and without holding up health
// checks or a small model while it computes.
import { access, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PredictorService } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { checkHealth, ServingStatus } from "../services/runtime/client/health-client.js";
import { clientFor } from "./support/clients.js";
import { repoRoot, run, startService, type ServiceProcess } from "./support/service-process.js";

const resnet = join(repoRoot, ".cache/models/resnet50");
const python = join(repoRoot, ".tools/venv-clients/bin/python");

describe("ResNet-50 beside the small models", () => {
  let predictor: ServiceProcess;
  let scratch: string;
  let jpeg: Buffer;

  beforeAll(async () => {
    // Made by scripts/install-test-deps.sh; missing, the test fails here saying how to make it.
    await access(join(resnet, "1/model.onnx")).catch(() => {
      throw new Error(`${resnet} is missing: run scripts/make-resnet50.sh (npm test runs it)`);
    });
    scratch = await mkdtemp(join(tmpdir(), "mlmesh-resnet50-"));
    await symlink(resnet, join(scratch, "resnet50"));
    await symlink(join(repoRoot, "models/iris_svc"), join(scratch, "iris_svc"));
    predictor = await startService("predictor", { MODEL_DIR: scratch });
    // A photo-sized colour JPEG: resized (shorter side 256), centre-cropped to 224 and normalised by the Predictor.
    jpeg = await sharp({ create: { width: 640, height: 480, channels: 3, background: { r: 200, g: 120, b: 40 } } }).jpeg().toBuffer();
  }, 120_000);
  afterAll(async () => {
    await predictor?.stop();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it("answers tritonclient (gRPC and HTTP) with [N, 1000] probabilities, from tensors and from a JPEG", async () => {
    const image = join(scratch, "photo.jpg");
    await writeFile(image, jpeg);
    const result = await run(python, [join(repoRoot, "test/python/resnet50_checks.py"), predictor.address, image], { timeoutMs: 120_000 });
    expect(result.code, result.stderr).toBe(0);
    const checks = JSON.parse(result.stdout) as Record<string, { tensor_shape: number[]; tensor_sums: number[]; jpeg_shape: number[]; jpeg_sum: number }>;
    for (const [protocol, c] of Object.entries(checks)) {
      expect(c, protocol).toEqual({ tensor_shape: [2, 1000], tensor_sums: [1, 1], jpeg_shape: [1, 1000], jpeg_sum: 1 });
    }
  }, 120_000);

  it("keeps health checks and a small model answering while ResNet-50 computes a batch", async () => {
    const client = clientFor(PredictorService, predictor.baseUrl, "grpc");
    const done: string[] = [];
    const heavy = client.classifyImages({ model: "resnet50", images: Array(16).fill(jpeg), topK: 5 }).then((r) => {
      done.push("resnet50");
      return r;
    });
    await new Promise((resolve) => setTimeout(resolve, 100)); // the batch is decoding or running now
    const health = checkHealth(predictor.address, "", 5000).then((s) => (done.push("health"), s));
    const iris = client.predict({ model: "iris_svc", rows: [{ values: [5.1, 3.5, 1.4, 0.2] }] }).then((r) => (done.push("iris"), r));
    expect(await health).toBe(ServingStatus.SERVING);
    expect((await iris).predictions[0].label).toBe("setosa");
    const { results } = await heavy;
    expect(results).toHaveLength(16);
    expect(results[0].top.map((t) => t.label.startsWith("class_"))).toEqual([true, true, true, true, true]);
    // Neither waited for the heavy model (they race each other): onnxruntime and the image
    // decoder run off the event loop.
    expect(done.at(-1)).toBe("resnet50");
    expect([...done].sort()).toEqual(["health", "iris", "resnet50"]);
  }, 120_000);
});
