// The Predictor as a real process over the bundled model repository (models/), called with
// real clients. A second set of tests builds model repositories in a temp directory to check
// versions, broken models and configuration errors.
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { BadRequestSchema } from "../gen/google/rpc/error_details_pb.js";
import { InvalidRows, PredictorService } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { clientFor, failure, protocols } from "./support/clients.js";
import { repoRoot, run, startService, tools, type ServiceProcess } from "./support/service-process.js";

interface IrisSet {
  labels: string[];
  rows: { values: number[]; label: string }[];
}
const iris = JSON.parse(await readFile(join(repoRoot, "test/fixtures/iris.json"), "utf8")) as IrisSet;
const knownRows = [
  { values: [5.1, 3.5, 1.4, 0.2], label: "setosa" },
  { values: [6.3, 3.3, 6.0, 2.5], label: "virginica" },
  { values: [5.9, 3.0, 4.2, 1.5], label: "versicolor" },
];

async function codeOf(promise: Promise<unknown>): Promise<{ code: Code; message: string }> {
  try {
    await promise;
  } catch (err) {
    const e = ConnectError.from(err);
    return { code: e.code, message: e.rawMessage };
  }
  throw new Error("expected the call to fail");
}

describe("Predictor over the bundled models", () => {
  let predictor: ServiceProcess;
  let client: Client<typeof PredictorService>;

  beforeAll(async () => {
    predictor = await startService("predictor");
    client = clientFor(PredictorService, predictor.baseUrl, "grpc");
  });
  afterAll(async () => {
    await predictor?.stop();
  });

  it("is SERVING once all the bundled models are loaded", async () => {
    const health = clientFor(Health, predictor.baseUrl, "grpc");
    expect((await health.check({ service: PredictorService.typeName })).status).toBe(ServingStatus.SERVING);
    const { models, failures } = await client.listModels({});
    expect(models.map((m) => `${m.name}@${m.version}`)).toEqual([
      "diabetes_high_risk@1",
      "diabetes_regressor@1",
      "digits_image@1",
      "iris_svc@1",
      "iris_svc_setosa@1",
      "iris_svc_versicolor@1",
      "iris_svc_virginica@1",
    ]);
    expect(failures).toEqual([]);
  });

  it.each(protocols)("PredictModels (%s) answers each model as Predict would, one failing model failing only its part", async (protocol) => {
    const over = clientFor(PredictorService, predictor.baseUrl, protocol);
    const rows = iris.rows.slice(0, 20).map(({ values }) => ({ values }));
    const models = [{ model: "iris_svc_setosa@production" }, { model: "iris_svc", version: 1 }, { model: "no_such_model" }, { model: "diabetes_regressor" }];
    const { predictions } = await over.predictModels({ models, rows });
    expect(predictions.map((p) => [p.model?.model, p.status?.code])).toEqual([
      ["iris_svc_setosa@production", 0],
      ["iris_svc", 0],
      ["no_such_model", Code.NotFound],
      ["diabetes_regressor", Code.FailedPrecondition],
    ]);
    for (const [i, { model, version }] of models.slice(0, 2).entries()) {
      const alone = await over.predict({ model, version, rows });
      expect(predictions[i].response).toEqual(alone);
    }
    expect(predictions[2].status?.message).toMatch(/"no_such_model" not found; loaded models: .*iris_svc/);
    expect(predictions[2].response).toBeUndefined();
    // Packed in and out, as Predict.
    const packed = await over.predictModels({ models: models.slice(0, 2), packedValues: rows.flatMap((r) => r.values), rowWidth: 4, packedResponse: true });
    expect(packed.predictions[1].response?.packedProbabilities).toEqual(predictions[1].response?.predictions.flatMap((p) => p.probabilities));
    // Rows a model cannot take: that model's INVALID_ARGUMENT with every bad row, as Predict's details.
    const short = await over.predictModels({ models: models.slice(0, 1), rows: [{ values: [1, 2, 3, 4] }, { values: [1, 2, 3] }] });
    expect(short.predictions[0].status).toMatchObject({ code: Code.InvalidArgument, message: expect.stringMatching(/^rows\[1\] has 3 values; iris_svc_setosa v1 takes 4/) });
    expect(short.predictions[0].status?.badRequest?.fieldViolations.map((v) => v.field)).toEqual(["rows[1]"]);
    // A request breaking the contract fails the call itself.
    for (const bad of [{ models: [], rows }, { models: Array(17).fill(models[0]), rows }, { models: [{ model: "bad name" }], rows }, { models: models.slice(0, 1) }]) {
      expect((await failure(over.predictModels(bad))).code).toBe(Code.InvalidArgument);
    }
  });

  it.each(protocols)("labels the known iris rows over %s, probabilities summing to 1", async (protocol) => {
    const response = await clientFor(PredictorService, predictor.baseUrl, protocol).predict({
      model: "iris_svc",
      rows: knownRows.map(({ values }) => ({ values })),
    });
    expect(response).toMatchObject({ model: "iris_svc", version: 1, labels: ["setosa", "versicolor", "virginica"] });
    expect(response.predictions.map((p) => p.label)).toEqual(knownRows.map((r) => r.label));
    for (const p of response.predictions) {
      expect(p.probabilities.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
      expect(p.probability).toBe(Math.max(...p.probabilities));
      expect(p.label).toBe(response.labels[p.labelIndex]);
    }
  });

  it.each(protocols)("takes packed rows and answers packed probabilities on request (%s), as it answers rows", async (protocol) => {
    const over = clientFor(PredictorService, predictor.baseUrl, protocol);
    const rows = iris.rows.map(({ values }) => ({ values }));
    const packedValues = rows.flatMap((row) => row.values);
    const byRows = await over.predict({ model: "iris_svc", rows });
    const packedIn = await over.predict({ model: "iris_svc", packedValues, rowWidth: 4 });
    expect(packedIn.predictions).toEqual(byRows.predictions);
    expect(packedIn.packedProbabilities).toEqual([]);
    const packedOut = await over.predict({ model: "iris_svc", packedValues, rowWidth: 4, packedResponse: true });
    expect(packedOut).toMatchObject({ model: "iris_svc", version: 1, labels: byRows.labels, predictions: [] });
    expect(packedOut.packedProbabilities).toEqual(byRows.predictions.flatMap((p) => p.probabilities));
    // Row messages in, packed probabilities out, too.
    expect((await over.predict({ model: "iris_svc", rows, packedResponse: true })).packedProbabilities).toEqual(packedOut.packedProbabilities);
  });

  it("classifies the whole iris set in one request with accuracy >= 0.95", async () => {
    const response = await client.predict({ model: "iris_svc", rows: iris.rows.map(({ values }) => ({ values })) });
    expect(response.predictions).toHaveLength(150);
    const correct = response.predictions.filter((p, i) => p.label === iris.rows[i].label).length;
    expect(correct / 150).toBeGreaterThanOrEqual(0.95);
  });

  it("one-vs-rest models: the highest P(target) agrees with the 3-class model", async () => {
    const rows = iris.rows.map(({ values }) => ({ values }));
    const [multi, ...binary] = await Promise.all(
      ["iris_svc", "iris_svc_setosa", "iris_svc_versicolor", "iris_svc_virginica"].map((model) => client.predict({ model, rows })),
    );
    binary.forEach((response, k) => {
      expect(response.labels).toEqual([iris.labels[k], `not_${iris.labels[k]}`]);
    });
    let agree = 0;
    for (let i = 0; i < rows.length; i++) {
      const targets = binary.map((response) => response.predictions[i].probabilities[0]);
      if (iris.labels[targets.indexOf(Math.max(...targets))] === multi.predictions[i].label) agree++;
    }
    // Separately trained models disagree only on a few versicolor/virginica border rows.
    expect(agree / rows.length).toBeGreaterThanOrEqual(0.97);
    // The setosa model is exact: P(setosa) > 0.5 exactly where the 3-class model says setosa.
    binary[0].predictions.forEach((p, i) => {
      expect(p.probabilities[0] > 0.5, `row ${i}`).toBe(multi.predictions[i].label === "setosa");
    });
  });

  it("describes a model: tensors, labels, sample input, metrics, sha256", async () => {
    const { metadata } = await client.getModelMetadata({ model: "iris_svc" });
    expect(metadata).toMatchObject({
      name: "iris_svc",
      version: 1,
      labels: ["setosa", "versicolor", "virginica"],
      featureNames: ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"],
      input: { name: "input", dtype: "float32", shape: [-1n, 4n] },
    });
    expect(metadata!.outputs.map((o) => o.name)).toEqual(["label", "probabilities"]);
    expect(metadata!.metrics.iris_accuracy).toBeGreaterThanOrEqual(0.95);
    expect(metadata!.sha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it("PredictSample classifies the bundled sample rows", async () => {
    const sample = await client.predictSample({ model: "iris_svc" });
    expect(sample.rows.length).toBeGreaterThan(0);
    expect(sample.response!.predictions.map((p) => p.label)).toEqual(["setosa", "versicolor", "virginica"]);
  });

  it("pages through ListModels without overlap or gaps", async () => {
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await client.listModels({ pageSize: 1, pageToken });
      expect(page.models).toHaveLength(1);
      seen.push(page.models[0].name);
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(seen).toEqual(["diabetes_high_risk", "diabetes_regressor", "digits_image", "iris_svc", "iris_svc_setosa", "iris_svc_versicolor", "iris_svc_virginica"]);
    expect((await codeOf(client.listModels({ pageToken: "garbage" }))).code).toBe(Code.InvalidArgument);
  });

  it("answers bad input with a precise status and a message naming the problem", async () => {
    const row = (values: number[]) => ({ values });
    const cases: [string, () => Promise<unknown>, Code, RegExp][] = [
      ["unknown model", () => client.predict({ model: "iris_cnn", rows: [row([1, 2, 3, 4])] }), Code.NotFound, /model "iris_cnn" not found; loaded models: diabetes_high_risk, diabetes_regressor, digits_image, iris_svc/],
      ["unknown version", () => client.predict({ model: "iris_svc", version: 9, rows: [row([1, 2, 3, 4])] }), Code.NotFound, /has no version 9; loaded versions: 1/],
      ["wrong feature count", () => client.predict({ model: "iris_svc", rows: [row([1, 2, 3, 4]), row([1, 2, 3])] }), Code.InvalidArgument, /rows\[1\] has 3 values; iris_svc v1 takes 4/],
      ["NaN", () => client.predict({ model: "iris_svc", rows: [row([1, 2, 3, 4]), row([1, NaN, 3, 4])] }), Code.InvalidArgument, /rows\[1\]\.values\[1\]: must be finite/],
      ["Infinity", () => client.predict({ model: "iris_svc", rows: [row([Infinity, 2, 3, 4])] }), Code.InvalidArgument, /rows\[0\]\.values\[0\]: must be finite/],
      ["no rows", () => client.predict({ model: "iris_svc", rows: [] }), Code.InvalidArgument, /give the rows either as rows or as packed_values with row_width, not both and not neither/],
      ["packed, wrong width", () => client.predict({ model: "iris_svc", packedValues: [1, 2, 3, 4, 5, 6], rowWidth: 3 }), Code.InvalidArgument, /^row_width is 3; iris_svc v1 takes 4 \(sepal_length_cm/],
      ["packed, no whole rows", () => client.predict({ model: "iris_svc", packedValues: [1, 2, 3, 4, 5], rowWidth: 4 }), Code.InvalidArgument, /packed_values must hold whole rows/],
      ["empty row", () => client.predict({ model: "iris_svc", rows: [row([])] }), Code.InvalidArgument, /rows\[0\]\.values: must contain at least 1 item/],
      ["too many rows", () => client.predict({ model: "iris_svc", rows: Array.from({ length: 10_001 }, () => row([1, 2, 3, 4])) }), Code.InvalidArgument, /rows: must contain no more than 10000 item/],
      ["empty model name", () => client.predict({ model: "", rows: [row([1, 2, 3, 4])] }), Code.InvalidArgument, /model: must be at least 1 character/],
      ["unknown model metadata", () => client.getModelMetadata({ model: "nope" }), Code.NotFound, /model "nope" not found/],
    ];
    for (const [name, call, code, message] of cases) {
      const outcome = await codeOf(call());
      expect(outcome.code, name).toBe(code);
      expect(outcome.message, name).toMatch(message);
    }
    // Still serving.
    expect((await client.predict({ model: "iris_svc", rows: [row([5.1, 3.5, 1.4, 0.2])] })).predictions[0].label).toBe("setosa");
  });

  it.each(protocols)("lists every bad row as a google.rpc.BadRequest field violation (%s), or skips them on request", async (protocol) => {
    const over = clientFor(PredictorService, predictor.baseUrl, protocol);
    const rows = [[5.1, 3.5, 1.4, 0.2], [1, 2, 3], [6.3, 3.3, 6.0, 2.5], [1, 2, 3, 4, 5], [5.9, 3.0, 4.2, 1.5], [1]].map((values) => ({ values }));
    const error = await failure(over.predict({ model: "iris_svc", rows }));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toMatch(/^rows\[1\] has 3 values; iris_svc v1 takes 4 .*; and 2 more rows of the wrong width/);
    const violations = error.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
    expect(violations.map((v) => [v.field, v.reason, v.description])).toEqual([
      ["rows[1]", "ROW_WIDTH", "has 3 values; iris_svc v1 takes 4 (sepal_length_cm, sepal_width_cm, petal_length_cm, petal_width_cm)"],
      ["rows[3]", "ROW_WIDTH", "has 5 values; iris_svc v1 takes 4 (sepal_length_cm, sepal_width_cm, petal_length_cm, petal_width_cm)"],
      ["rows[5]", "ROW_WIDTH", "has 1 values; iris_svc v1 takes 4 (sepal_length_cm, sepal_width_cm, petal_length_cm, petal_width_cm)"],
    ]);
    // Rule violations (protovalidate) carry the same details: every non-finite value.
    const nan = await failure(over.predict({ model: "iris_svc", rows: [{ values: [1, NaN, 3, 4] }, { values: [Infinity, 2, 3, 4] }] }));
    expect(nan.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations).map((v) => [v.field, v.reason])).toEqual([
      ["rows[0].values[1]", "float.finite"],
      ["rows[1].values[0]", "float.finite"],
    ]);

    const skipped = await over.predict({ model: "iris_svc", rows, invalidRows: InvalidRows.SKIP });
    expect(skipped.predictions.map((p) => p.label)).toEqual(["setosa", "virginica", "versicolor"]);
    expect(skipped.rejectedRows?.fieldViolations.map((v) => v.field)).toEqual(["rows[1]", "rows[3]", "rows[5]"]);
    const clean = await over.predict({ model: "iris_svc", rows: [rows[0]], invalidRows: InvalidRows.SKIP });
    expect(clean.rejectedRows).toBeUndefined();
  });

  it("accepts the maximum batch of 10,000 rows, each answered as if alone", async () => {
    const single = await client.predict({ model: "iris_svc", rows: iris.rows.map(({ values }) => ({ values })) });
    const rows = Array.from({ length: 10_000 }, (_, i) => ({ values: iris.rows[i % 150].values }));
    const response = await client.predict({ model: "iris_svc", rows });
    expect(response.predictions.map((p) => p.label)).toEqual(rows.map((_, i) => single.predictions[i % 150].label));
  });

  it("answers grpcurl as the README shows", async () => {
    const result = await run(tools.grpcurl, [
      "-plaintext",
      "-d",
      '{"model":"iris_svc","rows":[{"values":[5.1,3.5,1.4,0.2]}]}',
      predictor.address,
      "mlmesh.predictor.v1.PredictorService/Predict",
    ]);
    expect(result.code, result.stderr).toBe(0);
    const body = JSON.parse(result.stdout) as { predictions: { label: string }[] };
    expect(body.predictions[0].label).toBe("setosa");
  });
});

describe("Predictor over other model repositories", () => {
  const dirs: string[] = [];
  afterAll(async () => {
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });

  /** A repository with iris_svc v1 and v2 (a copy), and a tampered iris_svc_setosa. */
  async function makeRepository(): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), "mlmesh-models-"));
    dirs.push(dir);
    const models = join(repoRoot, "models");
    await cp(join(models, "iris_svc/1"), join(dir, "iris_svc/1"), { recursive: true });
    await cp(join(models, "iris_svc/1"), join(dir, "iris_svc/2"), { recursive: true });
    const v2 = join(dir, "iris_svc/2/metadata.json");
    await writeFile(v2, JSON.stringify({ ...JSON.parse(await readFile(v2, "utf8")), version: 2 }));
    await cp(join(models, "iris_svc_setosa/1"), join(dir, "iris_svc_setosa/1"), { recursive: true });
    await writeFile(join(dir, "iris_svc_setosa/1/model.onnx"), "not an onnx model");
    return dir;
  }

  it("serves the highest version by default and any loaded version on request", async () => {
    const predictor = await startService("predictor", { MODEL_DIR: await makeRepository() });
    try {
      const client = clientFor(PredictorService, predictor.baseUrl, "grpc");
      const rows = [{ values: [5.1, 3.5, 1.4, 0.2] }];
      expect((await client.predict({ model: "iris_svc", rows })).version).toBe(2);
      expect((await client.predict({ model: "iris_svc", version: 1, rows })).version).toBe(1);
    } finally {
      await predictor.stop();
    }
  });

  it("reports a model that fails to load by name, and serves the others", async () => {
    const predictor = await startService("predictor", { MODEL_DIR: await makeRepository() });
    try {
      const client = clientFor(PredictorService, predictor.baseUrl, "grpc");
      const health = clientFor(Health, predictor.baseUrl, "grpc");
      expect((await health.check({ service: PredictorService.typeName })).status).toBe(ServingStatus.NOT_SERVING);
      const { failures } = await client.listModels({});
      expect(failures).toEqual([expect.objectContaining({ name: "iris_svc_setosa", version: 1 })]);
      expect(failures[0].reason).toMatch(/sha256/);
      const broken = await codeOf(client.predict({ model: "iris_svc_setosa", rows: [{ values: [1, 2, 3, 4] }] }));
      expect(broken.code).toBe(Code.FailedPrecondition);
      expect(broken.message).toMatch(/iris_svc_setosa" failed to load: model.onnx has sha256/);
      expect((await client.predict({ model: "iris_svc", rows: [{ values: [5.1, 3.5, 1.4, 0.2] }] })).predictions[0].label).toBe("setosa");
      expect(predictor.logs.some((l) => l.msg === "model failed to load" && l.name === "iris_svc_setosa")).toBe(true);
    } finally {
      await predictor.stop();
    }
  });

  it("exits 2 naming MODEL_DIR when it holds no models or does not exist", async () => {
    const empty = await mkdtemp(join(tmpdir(), "mlmesh-empty-"));
    dirs.push(empty);
    for (const modelDir of [empty, join(empty, "missing")]) {
      const result = await run(process.execPath, ["bin/mlmesh.js", "serve", "predictor"], {
        env: { MODEL_DIR: modelDir, PREDICTOR_PORT: "0" },
      });
      expect(result.code, result.stderr).toBe(2);
      expect(result.stderr).toContain("configuration error: MODEL_DIR:");
    }
  });
});
