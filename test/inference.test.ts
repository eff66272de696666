// The Predictor's one inference path (services/predictor/inference.ts) over the bundled models,
// in memory: native Predict and the Open Inference Protocol's ModelInfer both reach the
// observers (where the prediction log and shadow comparisons hang) with the same event, and an
// observer can neither fail nor change a call. Real processes cover the same handlers in
// test/predictor.test.ts and test/open-inference.test.ts.
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelInferRequestSchema } from "../gen/inference/open_inference_pb.js";
import { InvalidRows, PredictRequestSchema } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { createLogger } from "../services/runtime/observability/logger.js";
import { readModelFolder } from "../services/predictor/folder-source.js";
import { Inference, type InferenceEvent } from "../services/predictor/inference.js";
import { ModelLoader } from "../services/predictor/model-loader.js";
import { createInferenceService } from "../services/predictor/oip-service.js";
import { createPredictorService } from "../services/predictor/service.js";
import { ServingTable } from "../services/predictor/serving-table.js";
import { repoRoot } from "./support/service-process.js";

const setosa = [5.1, 3.5, 1.4, 0.2];
const virginica = [6.3, 3.3, 6.0, 2.5];
const ctx = {} as HandlerContext; // the handlers read nothing of it

describe("one inference path", () => {
  const table = new ServingTable();
  const inference = new Inference(table);
  const predictor = createPredictorService(inference);
  const oip = createInferenceService(inference, () => true);
  const events: InferenceEvent[] = [];
  let stopObserving: () => void;

  beforeAll(async () => {
    const folder = await readModelFolder(join(repoRoot, "models"));
    const imageLimits = { maxBytes: 1024 * 1024, maxPixels: 1_000_000 };
    await new ModelLoader(table, { session: { intraOpThreads: 1 }, imageLimits, logger: createLogger("inference-test", "silent"), scoreOutliers: () => true }).apply(folder.models, folder.failures);
    stopObserving = inference.observe((event) => events.push(event));
  });
  afterAll(async () => {
    stopObserving();
    await table.close();
  });

  it("tells the observers of a native Predict and of a ModelInfer alike: model, version, rows and probabilities", async () => {
    events.length = 0;
    const predicted = await predictor.predict!(create(PredictRequestSchema, { model: "iris_svc@latest", rows: [{ values: setosa }, { values: virginica }] }), ctx);
    const inferred = await oip.modelInfer!(
      create(ModelInferRequestSchema, { modelName: "iris_svc", inputs: [{ name: "input", datatype: "FP32", shape: [1n, 4n], contents: { fp32Contents: setosa } }] }),
      ctx,
    );
    expect(events.map((e) => [e.kind, e.model, e.version, e.input?.rowCount, e.probabilities?.length, e.error])).toEqual([
      ["predict", "iris_svc", 1, 2, 6, undefined],
      ["oip", "iris_svc", 1, 1, 3, undefined],
    ]);
    // The event's probabilities are the answer's.
    expect(Array.from(events[0].probabilities!.subarray(0, 3))).toEqual(predicted.predictions![0].probabilities);
    expect(Array.from(events[1].input!.features)).toEqual(Array.from(Float32Array.from(setosa)));
    expect(inferred.modelVersion).toBe("1");
  });

  it("tells them of a failed request too, once its version is resolved", async () => {
    events.length = 0;
    const error = await Promise.resolve(predictor.predict!(create(PredictRequestSchema, { model: "iris_svc", rows: [{ values: [1, 2, 3] }] }), ctx)).catch((e: unknown) => ConnectError.from(e));
    expect((error as ConnectError).code).toBe(Code.InvalidArgument);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ kind: "predict", model: "iris_svc", version: 1 });
    expect(ConnectError.from(events[0].error).code).toBe(Code.InvalidArgument);
    // A model that is not served never reaches the path: nothing to observe.
    await expect(Promise.resolve(predictor.predict!(create(PredictRequestSchema, { model: "nope", rows: [{ values: setosa }] }), ctx))).rejects.toThrow(/not found/);
    expect(events).toHaveLength(1);
  });

  it("answers whatever an observer does: one that throws is ignored, and a removed one hears nothing more", async () => {
    const stopThrowing = inference.observe(() => {
      throw new Error("an observer's own failure");
    });
    let heard = 0;
    const stopCounting = inference.observe(() => heard++);
    const answer = await predictor.predict!(create(PredictRequestSchema, { model: "iris_svc", rows: [{ values: setosa }] }), ctx);
    expect(answer.predictions![0].label).toBe("setosa");
    expect(heard).toBe(1);
    stopThrowing();
    stopCounting();
    await predictor.predict!(create(PredictRequestSchema, { model: "iris_svc", rows: [{ values: setosa }] }), ctx);
    expect(heard).toBe(1);
  });

  it("skipped rows: the observers see the rows the model ran on, in request order", async () => {
    events.length = 0;
    const answer = await predictor.predict!(
      create(PredictRequestSchema, { model: "iris_svc", rows: [{ values: [1] }, { values: virginica }, { values: setosa }], invalidRows: InvalidRows.SKIP }),
      ctx,
    );
    expect(answer.predictions!.map((p) => p.label)).toEqual(["virginica", "setosa"]);
    expect(events[0].input?.rowCount).toBe(2);
    expect(Array.from(events[0].input!.features)).toEqual([...Float32Array.from(virginica), ...Float32Array.from(setosa)]);
  });
});
