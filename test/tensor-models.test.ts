// Any ONNX graph as a model version: the bundled tensor models (a regressor, a model with a
// string input, the digits image model) and a test model with one input of every element type,
// served by real Predictor processes and called with tritonclient (gRPC and HTTP), a Connect
// client and curl-like fetches; the registry records their signatures from the graphs.
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GRPCInferenceService } from "../gen/inference/open_inference_pb.js";
import { ModelKind, PredictorService } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { ModelRegistryService, SignatureKind } from "../gen/mlmesh/registry/v1/registry_pb.js";
import { pushModelFolder, registryClient, resolveModel } from "../services/cli/model-push.js";
import { checkHealth, ServingStatus } from "../services/runtime/client/health-client.js";
import { clientFor, failure } from "./support/clients.js";
import { freshDatabase, type TestDatabase } from "./support/databases.js";
import { repoRoot, run, startService, type ServiceProcess } from "./support/service-process.js";

const python = join(repoRoot, ".tools/venv-clients/bin/python");
const fixtures = JSON.parse(await readFile(join(repoRoot, "test/fixtures/tensor-models.json"), "utf8")) as {
  diabetes_regressor: { measurements: number[][]; progression: number[]; r2: number };
  diabetes_high_risk: { sex: string[]; measurements: number[][]; label: number[]; probabilities: number[][] };
  digits_image: { levels: number; accuracy: number; images: { pixels: number[]; label: string }[] };
};
const metadataOf = async (model: string) => JSON.parse(await readFile(join(repoRoot, "models", model, "1/metadata.json"), "utf8")) as { metrics: Record<string, number> };

let predictor: ServiceProcess;
let dtypesPredictor: ServiceProcess;
let oip: Client<typeof GRPCInferenceService>;
let scratch: string;

/** The held-out digits as 8x8 grey PNG files (levels 0..16 scaled to 0..255), made with sharp. */
async function digitPngs(): Promise<{ png: Buffer; label: string }[]> {
  const { levels, images } = fixtures.digits_image;
  return Promise.all(
    images.map(async ({ pixels, label }) => ({
      png: await sharp(Buffer.from(pixels.map((v) => Math.round((v * 255) / levels))), { raw: { width: 8, height: 8, channels: 1 } }).png().toBuffer(),
      label,
    })),
  );
}

beforeAll(async () => {
  predictor = await startService("predictor");
  // A repository with the all-dtypes test model only.
  scratch = await mkdtemp(join(tmpdir(), "mlmesh-tensor-models-"));
  await symlink(join(repoRoot, "test/fixtures/models/all_dtypes"), join(scratch, "all_dtypes"));
  dtypesPredictor = await startService("predictor", { MODEL_DIR: scratch });
  oip = createClient(GRPCInferenceService, createGrpcTransport({ baseUrl: predictor.baseUrl }));
});
afterAll(async () => {
  await Promise.all([predictor?.stop(), dtypesPredictor?.stop()]);
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

describe("tensor models through the Open Inference Protocol", () => {
  it("tritonclient (gRPC, HTTP JSON, HTTP binary) gets scikit-learn's answers, the digits' held-out accuracy, and every element type back", async () => {
    const pngs = join(scratch, "digit-pngs.json");
    await writeFile(pngs, JSON.stringify((await digitPngs()).map((d) => ({ png: d.png.toString("base64"), label: d.label }))));
    const result = await run(python, [join(repoRoot, "test/python/tensor_model_checks.py"), predictor.address, dtypesPredictor.address, join(repoRoot, "test/fixtures/tensor-models.json"), pngs], {
      timeoutMs: 120_000,
    });
    expect(result.code, result.stderr).toBe(0);
    const checks = JSON.parse(result.stdout) as Record<string, any>;
    const digitsAccuracy = (await metadataOf("digits_image")).metrics.test_accuracy;
    expect(digitsAccuracy).toBe(fixtures.digits_image.accuracy);
    for (const [protocol, c] of Object.entries(checks)) {
      c.regressor.forEach((v: number, i: number) => expect(v, `${protocol} regressor ${i}`).toBeCloseTo(fixtures.diabetes_regressor.progression[i], 2));
      expect(c.high_risk.label, protocol).toEqual(fixtures.diabetes_high_risk.label);
      c.high_risk.probabilities.flat().forEach((p: number, i: number) => expect(p, `${protocol} probability ${i}`).toBeCloseTo(fixtures.diabetes_high_risk.probabilities.flat()[i], 4));
      // The training script's held-out accuracy, reproduced through the Predictor.
      expect(c.digits_accuracy, protocol).toBeCloseTo(digitsAccuracy, 6);
      // From PNG files: decoded and preprocessed by the Predictor (0..255 grey levels round the dataset's 0..16).
      expect(c.digits_png_accuracy, protocol).toBeGreaterThanOrEqual(digitsAccuracy - 0.01);
      expect(c.high_risk_inputs, protocol).toEqual([
        ["sex", "BYTES"],
        ["measurements", "FP32"],
      ]);
      expect(c.echo, protocol).toEqual(Object.fromEntries(["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool", "string"].map((d) => [d, true])));
      const invalid = protocol === "grpc" ? "StatusCode.INVALID_ARGUMENT" : "400";
      expect(c.errors.wrong_dtype, protocol).toEqual({ status: invalid, message: 'input "measurements" of model "diabetes_regressor" v1 is FP32[N, 10]; the request says FP64' });
      expect(c.errors.wrong_layout, protocol).toEqual({ status: invalid, message: 'input "image" has shape [1, 8, 8, 1]; model "digits_image" v1 takes [N, 1, 8, 8]: dimension 1 must be 1' });
      expect(c.errors.missing_input, protocol).toEqual({ status: invalid, message: 'model "diabetes_high_risk" v1 takes inputs sex, measurements; the request lacks measurements' });
    }
  }, 150_000);

  it("says FAILED_PRECONDITION to native Predict on a tensor model, and describes its tensors in the Predictor's metadata", async () => {
    const predictorClient = clientFor(PredictorService, predictor.baseUrl, "grpc");
    const refused = await failure(predictorClient.predict({ model: "diabetes_regressor", rows: [{ values: [1, 2, 3] }] }));
    expect([refused.code, refused.rawMessage]).toEqual([
      Code.FailedPrecondition,
      'model "diabetes_regressor" v1 is a tensor model (inputs: measurements float32[N, 10]), not a classifier of feature rows: call ModelInfer (the Open Inference Protocol) instead',
    ]);
    expect((await failure(predictorClient.predictSample({ model: "digits_image" }))).code).toBe(Code.FailedPrecondition);
    const { metadata } = await predictorClient.getModelMetadata({ model: "diabetes_high_risk" });
    expect(metadata!.kind).toBe(ModelKind.TENSOR);
    expect(metadata!.inputs.map((i) => [i.name, i.dtype, i.shape.map(Number)])).toEqual([
      ["sex", "string", [-1, 1]],
      ["measurements", "float32", [-1, 9]],
    ]);
    expect(metadata!.labels).toEqual(["low", "high"]);
    const iris = (await predictorClient.getModelMetadata({ model: "iris_svc" })).metadata!;
    expect([iris.kind, iris.input?.name, iris.inputs.map((i) => i.name)]).toEqual([ModelKind.CLASSIFIER, "input", ["input"]]);
  });

  it("refuses bad tensors precisely, reads no buffer it was not promised, and stays SERVING", async () => {
    const sexTensor = { name: "sex", datatype: "BYTES", shape: [1n, 1n] };
    const measurements = { name: "measurements", datatype: "FP32", shape: [1n, 9n] };
    const nine = new Uint8Array(new Float32Array(9).buffer);
    const lengthPrefixed = (...parts: Uint8Array[]) => Buffer.concat(parts);
    const u32 = (n: number) => {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(n);
      return b;
    };
    const cases: [string, Parameters<typeof oip.modelInfer>[0], Code, string][] = [
      [
        "shape product overflows",
        { modelName: "diabetes_regressor", inputs: [{ name: "measurements", datatype: "FP32", shape: [2n ** 62n, 10n] }], rawInputContents: [new Uint8Array(4)] },
        Code.ResourceExhausted,
        'input "measurements" has shape [4611686018427387904, 10]: more than 67108864 elements in one input',
      ],
      [
        "BYTES length prefix longer than the bytes",
        { modelName: "diabetes_high_risk", inputs: [sexTensor, measurements], rawInputContents: [lengthPrefixed(u32(50), Buffer.from("1")), nine] },
        Code.InvalidArgument,
        'input "sex": raw BYTES element 0 says 50 bytes, 1 are left',
      ],
      [
        "BYTES cut inside a length prefix",
        { modelName: "diabetes_high_risk", inputs: [sexTensor, measurements], rawInputContents: [Buffer.from([1, 0]), nine] },
        Code.InvalidArgument,
        'input "sex": raw BYTES element 0 has a broken length prefix (2 bytes left, 4 needed)',
      ],
      [
        "more BYTES elements than the shape",
        { modelName: "diabetes_high_risk", inputs: [sexTensor, measurements], rawInputContents: [lengthPrefixed(u32(1), Buffer.from("1"), u32(1), Buffer.from("2")), nine] },
        Code.InvalidArgument,
        'input "sex": raw BYTES hold more than the shape\'s 1 elements',
      ],
      [
        "a huge string",
        { modelName: "diabetes_high_risk", inputs: [sexTensor, measurements], rawInputContents: [lengthPrefixed(u32(2 * 1024 * 1024), Buffer.alloc(2 * 1024 * 1024)), nine] },
        Code.ResourceExhausted,
        'input "sex": BYTES element 0 has 2097152 bytes; at most 1048576',
      ],
      [
        "a NUL byte in a string",
        { modelName: "diabetes_high_risk", inputs: [sexTensor, measurements], rawInputContents: [lengthPrefixed(u32(2), Buffer.from([0x31, 0])), nine] },
        Code.InvalidArgument,
        'input "sex": BYTES element 0 holds a NUL byte, which ONNX string tensors cannot carry',
      ],
      [
        "bytes that are not UTF-8",
        { modelName: "diabetes_high_risk", inputs: [sexTensor, measurements], rawInputContents: [lengthPrefixed(u32(1), Buffer.from([0xff])), nine] },
        Code.InvalidArgument,
        'input "sex": BYTES element 0 is not UTF-8 text, which ONNX string tensors hold',
      ],
      [
        "typed contents in another type's field",
        { modelName: "diabetes_regressor", inputs: [{ name: "measurements", datatype: "FP32", shape: [1n, 10n], contents: { int64Contents: Array(10).fill(1n) } }] },
        Code.InvalidArgument,
        'input "measurements" is FP32: its contents go in fp32_contents, not int64_contents',
      ],
      [
        "an unknown input",
        { modelName: "diabetes_regressor", inputs: [{ name: "features", datatype: "FP32", shape: [1n, 10n], contents: { fp32Contents: Array(10).fill(0) } }] },
        Code.InvalidArgument,
        'model "diabetes_regressor" v1 has no input "features"; its inputs: measurements',
      ],
      [
        "FP16 in typed contents",
        { modelName: "all_dtypes", inputs: [{ name: "x_float16", datatype: "FP16", shape: [1n, 3n], contents: { fp32Contents: [1, 2, 3] } }] },
        Code.InvalidArgument,
        'input "x_float16" is FP16, which travels as raw contents only',
      ],
    ];
    for (const [what, request, code, message] of cases) {
      const target = request.modelName === "all_dtypes" ? createClient(GRPCInferenceService, createGrpcTransport({ baseUrl: dtypesPredictor.baseUrl })) : oip;
      const error = await failure(target.modelInfer(request));
      expect([error.code, error.rawMessage], what).toEqual([code, message]);
    }
    // An INT8 value out of range, as JSON over REST.
    const int8 = await fetch(`${dtypesPredictor.baseUrl}/v2/models/all_dtypes/infer`, {
      method: "POST",
      body: JSON.stringify({ inputs: [{ name: "x_int8", datatype: "INT8", shape: [1, 3], data: [1, 2, 300] }] }),
    });
    expect([int8.status, ((await int8.json()) as { error: string }).error]).toEqual([400, 'input "x_int8" element 2 is 300; INT8 elements are from -128 to 127']);
    for (const p of [predictor, dtypesPredictor]) expect(await checkHealth(p.address, "", 1000)).toBe(ServingStatus.SERVING);
  });
});

describe("image models: preprocessing beside the model", () => {
  it("answers ClassifyImages with the top labels of PNG, JPEG and WebP files, batched, as accurate as the tensors", async () => {
    const predictorClient = clientFor(PredictorService, predictor.baseUrl, "grpc");
    const digits = await digitPngs();
    let correct = 0;
    for (let start = 0; start < digits.length; start += 64) {
      const batch = digits.slice(start, start + 64);
      const { results, model, version } = await predictorClient.classifyImages({ model: "digits_image", images: batch.map((d) => d.png), topK: 3 });
      expect([model, version]).toEqual(["digits_image", 1]);
      results.forEach((r, i) => {
        expect(r.top).toHaveLength(3);
        expect(r.top[0].score).toBeGreaterThanOrEqual(r.top[1].score);
        if (r.top[0].label === batch[i].label) correct++;
      });
    }
    expect(correct / digits.length).toBeGreaterThanOrEqual(fixtures.digits_image.accuracy - 0.01);
    // The same digit in each format, larger and in colour: decoded, made grey and resized by the steps.
    const big = await sharp(digits[1].png).resize(64, 64, { kernel: "nearest" }).toColourspace("srgb").toBuffer();
    const formats = await Promise.all([sharp(big).png().toBuffer(), sharp(big).jpeg({ quality: 95 }).toBuffer(), sharp(big).webp({ lossless: true }).toBuffer()]);
    const { results } = await predictorClient.classifyImages({ model: "digits_image", images: formats, topK: 1 });
    expect(results.map((r) => r.top[0].label)).toEqual(Array(3).fill(results[0].top[0].label));
    const metadata = (await predictorClient.getModelMetadata({ model: "digits_image" })).metadata!;
    expect(metadata.kind).toBe(ModelKind.IMAGE);
    // Concurrent one-image calls share runs (the statistics count runs per batch size); 16 is
    // the per-client limit of expensive calls in flight.
    await Promise.all(digits.slice(0, 16).map((d) => predictorClient.classifyImages({ model: "digits_image", images: [d.png] })));
    const [stats] = (await oip.modelStatistics({ name: "digits_image", version: "1" })).modelStats;
    expect(Math.max(...stats.batchStats.map((b) => Number(b.batchSize)))).toBeGreaterThan(1);
  });

  it("refuses a truncated, an unsupported and an oversized image precisely, before decoding a bomb, and stays SERVING", async () => {
    const predictorClient = clientFor(PredictorService, predictor.baseUrl, "grpc");
    const jpeg = await sharp({ create: { width: 64, height: 64, channels: 3, background: "#808080" } }).jpeg().toBuffer();
    const gif = await sharp({ create: { width: 8, height: 8, channels: 3, background: "#000" } }).gif().toBuffer();
    // 100 megapixels of one colour: a small file that would need 300 MB decoded.
    const bomb = await sharp({ create: { width: 10_000, height: 10_000, channels: 3, background: "#000" } }).png({ compressionLevel: 9 }).toBuffer();
    expect(bomb.length).toBeLessThan(1024 * 1024);
    const cases: [string, Uint8Array, Code, RegExp][] = [
      ["a truncated JPEG", jpeg.subarray(0, jpeg.length / 2), Code.InvalidArgument, /^image 0 could not be (read as an image|decoded)\b.*: \S/],
      ["a GIF", gif, Code.InvalidArgument, /^image 0 is gif; an image model takes PNG, JPEG or WebP$/],
      ["no image at all", Buffer.from("hello"), Code.InvalidArgument, /^image 0 could not be read as an image \(PNG, JPEG or WebP expected\): /],
      ["a 100-megapixel PNG", bomb, Code.ResourceExhausted, /^image 0 is 10000x10000 pixels; at most 40000000 are decoded$/],
    ];
    const rssBefore = await rssOf(predictor);
    for (const [what, image, code, message] of cases) {
      const error = await failure(predictorClient.classifyImages({ model: "digits_image", images: [image] }));
      expect([error.code, error.rawMessage], what).toEqual([code, expect.stringMatching(message)]);
    }
    // The bomb was refused from its header: the process did not grow by its decoded size.
    expect((await rssOf(predictor)) - rssBefore).toBeLessThan(100 * 1024 * 1024);
    const notImage = await failure(predictorClient.classifyImages({ model: "iris_svc", images: [jpeg] }));
    expect([notImage.code, notImage.rawMessage]).toEqual([Code.FailedPrecondition, 'model "iris_svc" v1 is not an image model (its metadata.json declares no preprocessing)']);
    // An image model asked with a tensor of the wrong layout (NHWC for NCHW).
    const layout = await failure(
      oip.modelInfer({ modelName: "digits_image", inputs: [{ name: "image", datatype: "FP32", shape: [1n, 8n, 8n, 1n], contents: { fp32Contents: Array(64).fill(0) } }] }),
    );
    expect([layout.code, layout.rawMessage]).toEqual([Code.InvalidArgument, 'input "image" has shape [1, 8, 8, 1]; model "digits_image" v1 takes [N, 1, 8, 8]: dimension 1 must be 1']);
    expect(await checkHealth(predictor.address, "", 1000)).toBe(ServingStatus.SERVING);
  });
});

/** The resident memory of a service process, from its /metrics. */
async function rssOf(service: ServiceProcess): Promise<number> {
  const text = await (await fetch(`${service.baseUrl}/metrics`)).text();
  return Number(/^process_resident_memory_bytes (\S+)$/m.exec(text)![1]);
}

describe("tensor models in the registry", () => {
  let database: TestDatabase;
  let registry: ServiceProcess;
  beforeAll(async () => {
    database = await freshDatabase("sqlite");
    registry = await startService("registry", { DATABASE_URL: database.url, ARTIFACT_DIR: join(scratch, "artifacts") });
  });
  afterAll(async () => {
    await registry?.stop();
    await database?.drop();
  });

  it("takes a version with no metadata.json, records its signature from the graph, and finds it by search", async () => {
    const client = registryClient(registry.address, "tensor-test");
    const regressor = await resolveModel(client, { project: "diabetes", name: "diabetes_regressor" }, true);
    const pushed = await pushModelFolder(client, join(repoRoot, "models/diabetes_regressor/1"), { modelId: regressor.id, modelName: "diabetes_regressor", alias: "production" });
    expect(pushed.files.map((f) => f.name)).toEqual(["model.onnx"]);
    expect(pushed.signature!.kind).toBe(SignatureKind.TENSOR);
    expect(pushed.signature!.inputs.map((i) => [i.name, i.dtype, i.shape.map(Number)])).toEqual([["measurements", "float32", [-1, 10]]]);
    expect(pushed.signature!.outputs.map((o) => [o.name, o.dtype, o.shape.map(Number)])).toEqual([["progression", "float32", [-1, 1]]]);
    const risk = await resolveModel(client, { project: "diabetes", name: "diabetes_high_risk" }, true);
    const withStrings = await pushModelFolder(client, join(repoRoot, "models/diabetes_high_risk/1"), { modelId: risk.id, modelName: "diabetes_high_risk" });
    expect(withStrings.signature!.inputs.map((i) => i.dtype)).toEqual(["string", "float32"]);
    expect(withStrings.signature!.labels).toEqual(["low", "high"]);
    const search = clientFor(ModelRegistryService, registry.baseUrl, "grpc");
    const { results } = await search.searchModelVersions({ projectName: "diabetes" });
    expect(results.map((r) => [r.model!.name, r.modelVersion!.signature!.kind])).toEqual([
      ["diabetes_regressor", SignatureKind.TENSOR],
      ["diabetes_high_risk", SignatureKind.TENSOR],
    ]);
    // A Predictor following this registry serves them as a folder-less tensor model.
    const follower = await startService("predictor", { REGISTRY_ADDRESS: registry.address });
    try {
      const oipClient = createClient(GRPCInferenceService, createGrpcTransport({ baseUrl: follower.baseUrl }));
      const request = {
        modelName: "diabetes_regressor",
        modelVersion: "production",
        inputs: [{ name: "measurements", datatype: "FP32", shape: [1n, 10n], contents: { fp32Contents: fixtures.diabetes_regressor.measurements[0] } }],
      };
      // The follower loads the registry's versions within seconds of starting.
      await expect.poll(() => oipClient.modelInfer(request).then(() => true, () => false), { timeout: 20_000 }).toBe(true);
      const response = await oipClient.modelInfer(request);
      expect(response.outputs[0].contents!.fp32Contents[0]).toBeCloseTo(fixtures.diabetes_regressor.progression[0], 2);
    } finally {
      await follower.stop();
    }
  });

  it("runs a tensor model's sample input at upload: one the graph cannot run is refused, naming why", async () => {
    const client = registryClient(registry.address, "tensor-test");
    const model = await resolveModel(client, { project: "diabetes", name: "diabetes_regressor" }, true);
    // The regressor with a sample of the wrong width: the registry runs it, onnxruntime refuses it.
    const folder = join(scratch, "bad-sample");
    await mkdir(folder, { recursive: true });
    await writeFile(join(folder, "model.onnx"), await readFile(join(repoRoot, "models/diabetes_regressor/1/model.onnx")));
    await writeFile(join(folder, "metadata.json"), JSON.stringify({ sample_inputs: { measurements: { shape: [1, 3], data: [1, 2, 3] } } }));
    const sampleRefused = await failure(pushModelFolder(client, folder, { modelId: model.id, modelName: "diabetes_regressor" }));
    expect(sampleRefused.code).toBe(Code.InvalidArgument);
    expect(sampleRefused.rawMessage).toMatch(/^model.onnx failed its sample run: .*dimensions/i);
    await writeFile(join(folder, "metadata.json"), JSON.stringify({ sample_inputs: { measurements: { shape: [1, 10], data: Array(10).fill(0) } } }));
    expect((await pushModelFolder(client, folder, { modelId: model.id, modelName: "diabetes_regressor" })).version).toBe(2);
  });

  it("refuses a graph that does not load, naming why", async () => {
    const client = registryClient(registry.address, "tensor-test");
    const model = await resolveModel(client, { project: "diabetes", name: "broken" }, true);
    const broken = await failure(
      client.uploadModelVersion(
        (async function* () {
          const bytes = Buffer.from("not an onnx graph");
          const { createHash } = await import("node:crypto");
          yield { content: { case: "header" as const, value: { modelId: model.id, files: [{ name: "model.onnx", sizeBytes: BigInt(bytes.length), sha256: createHash("sha256").update(bytes).digest("hex") }] } } };
          yield { content: { case: "chunk" as const, value: { file: "model.onnx", data: bytes } } };
        })(),
      ),
    );
    expect(broken.code).toBe(Code.InvalidArgument);
    expect(broken.rawMessage).toMatch(/^model.onnx does not load in onnxruntime: /);
  });
});
