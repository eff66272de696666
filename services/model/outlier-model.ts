import * as ort from "onnxruntime-node";
import { ModelArtifactError } from "./metadata.js";

/*
 * A version's outlier model (outlier.onnx, a companion file of its artifact): an ONNX graph
 * taking the classifier's rows (float32 [N, features]) and giving one score per row with
 * scikit-learn's decision-function sign, negative outside the training data (models/train.py
 * exports a One-Class SVM on the iris features). mlmesh reports the negated score, so that
 * above 0 means an outlier: "how far outside".
 */

export interface OutlierModel {
  /** Per row, how far outside the training data it lies (above 0: an outlier). */
  score(features: Float32Array, rowCount: number): Promise<Float32Array>;
  release(): Promise<void>;
}

/** Opens outlier.onnx for a classifier of `featureCount` features; ModelArtifactError when it does not fit. */
export async function openOutlierModel(onnx: Uint8Array, featureCount: number): Promise<OutlierModel> {
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(onnx, { executionProviders: ["cpu"], intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: "all" });
  } catch (err) {
    throw new ModelArtifactError(`outlier.onnx does not load in onnxruntime: ${(err as Error).message}`);
  }
  try {
    const inputs = session.inputMetadata;
    const input = inputs[0];
    const width = input?.isTensor ? input.shape[1] : undefined;
    if (inputs.length !== 1 || !input.isTensor || input.type !== "float32" || input.shape.length !== 2 || (typeof width === "number" && width !== featureCount)) {
      throw new ModelArtifactError(`outlier.onnx must take one float32 [N, ${featureCount}] input, as the model does`);
    }
    const floatOutputs = session.outputMetadata.filter((m) => m.isTensor && m.type === "float32");
    const output = floatOutputs.find((m) => m.name === "scores") ?? floatOutputs[0];
    if (output === undefined) throw new ModelArtifactError("outlier.onnx must give a float32 output of one score per row (\"scores\")");
    const run = async (features: Float32Array, rowCount: number): Promise<Float32Array> => {
      const results = await session.run({ [input.name]: new ort.Tensor("float32", features, [rowCount, featureCount]) }, [output.name]);
      const scores = results[output.name].data as Float32Array;
      if (scores.length !== rowCount) throw new ModelArtifactError(`outlier.onnx gave ${scores.length} scores for ${rowCount} rows`);
      const negated = new Float32Array(rowCount);
      for (let i = 0; i < rowCount; i++) negated[i] = -scores[i];
      return negated;
    };
    await run(new Float32Array(featureCount * 2), 2); // the graph must answer one score per row
    return { score: run, release: () => session.release() };
  } catch (err) {
    await session.release();
    if (err instanceof ModelArtifactError) throw err;
    throw new ModelArtifactError(`outlier.onnx failed its probe run: ${(err as Error).message}`);
  }
}
