import { createHash, randomUUID } from "node:crypto";
import { ConnectError } from "@connectrpc/connect";
import { oipDatatypeOf, type HostTensor } from "../model/tensors.js";
import { parentRequestIdHeader } from "../runtime/client/grpc-client.js";
import { RecordSource, type PredictionLog, type RecordFacts, type RecordTensor } from "../runtime/prediction-log/prediction-log.js";
import { callIdentityOf } from "../runtime/serve/pipeline.js";
import type { Inference, InferenceEvent } from "./inference.js";
import type { ShadowComparison } from "./shadow-runner.js";
import { rawBytesOf } from "./open-inference.js";

/*
 * The Predictor's side of the prediction log: every inference (native Predict and
 * PredictSample, ClassifyImages, ModelInfer over gRPC and REST) that PREDICTION_LOG_SAMPLE
 * keeps becomes a record, queued by the runtime's PredictionLog off the call's path (the
 * observer runs after the answer is computed and returns at once).
 */

/** How each inference kind names its API in records. */
const apiOf: ReadonlyMap<string, string> = new Map([
  ["predict", "predict"],
  ["predict_models", "predict_models"],
  ["oip", "oip"],
  ["images", "classify_images"],
]);

/** Records every sampled inference of `inference` in `log`. */
export function recordPredictions(inference: Inference, log: PredictionLog): void {
  inference.observe((event) => {
    if (log.sampled(event.model)) log.append(recordOf(event));
  });
}

/**
 * A shadow's record (when the prediction log keeps the model's calls): its answer, linked to the
 * call it copied, with the comparison.
 */
export function recordShadow(log: PredictionLog, comparison: ShadowComparison, event: InferenceEvent): void {
  if (!log.sampled(event.model)) return;
  const primary = recordOf(event);
  log.append({
    ...primary,
    // Unique per shadow version, within the record's 128 characters.
    requestId: `${primary.requestId.slice(0, 100)}:shadow:v${comparison.shadowVersion}`,
    parentRequestId: primary.requestId,
    api: "shadow",
    version: comparison.shadowVersion,
    arm: "shadow",
    latencyMs: comparison.shadowMs,
    status: comparison.failure?.code ?? 0,
    error: comparison.failure?.message,
    classification: comparison.probabilities && comparison.labels && { labels: comparison.labels, probabilities: comparison.probabilities },
    outputTensors: comparison.outputs && tensorsOf(comparison.outputs),
    // The outlier scores are the primary's: the shadow is not scored.
    outlierScores: undefined,
    shadow: {
      primaryVersion: comparison.primaryVersion,
      rows: comparison.rows,
      agreeingRows: comparison.agreeingRows,
      meanAbsDifference: comparison.meanAbsDifference,
      latencyDifferenceMs: comparison.latencyDifferenceMs,
    },
  });
}

function recordOf(event: InferenceEvent): RecordFacts {
  const { call, loaded } = event;
  // From the String global: event.requested.indexOf took V8's generic property load (the names
  // arrive as many kinds of string).
  const at = String.prototype.indexOf.call(event.requested, "@");
  const error = event.error === undefined ? undefined : ConnectError.from(event.error);
  const classifier = loaded.classifier;
  const identity = call && callIdentityOf(call);
  const callId = identity?.requestId ?? randomUUID();
  const parentRequestId = call?.requestHeader.get(parentRequestIdHeader) || undefined;
  return {
    // One call asking several models (PredictModels) files a record per model under
    // "<request id>:<i>" (within the record's 128 characters), linked to the asking request.
    requestId: event.part === undefined ? callId : `${callId.slice(0, 120)}:${event.part}`,
    parentRequestId: event.part === undefined ? parentRequestId : (parentRequestId ?? callId),
    traceId: identity?.span.traceId,
    caller: identity?.principal?.name,
    source: RecordSource.predictor,
    api: apiOf.get(event.kind) ?? event.kind,
    model: event.model,
    version: event.version,
    alias: at === -1 ? undefined : event.requested.slice(at + 1),
    arm: event.arm,
    timeMs: Date.now(),
    latencyMs: event.ms,
    status: error === undefined ? 0 : error.code,
    error: error?.rawMessage,
    rowCount: event.rows,
    rows: event.input && classifier && { width: classifier.featureCount, values: event.input.features },
    classification: event.probabilities && classifier && { labels: classifier.metadata.labels, probabilities: event.probabilities },
    outlierScores: event.outlierScores,
    // An image call's tensor is the decoded image: the record keeps the images' digests instead.
    inputTensors: event.images === undefined && event.feeds !== undefined ? tensorsOf(event.feeds) : undefined,
    outputTensors: event.outputs && tensorsOf(event.outputs),
    images: event.images?.map((bytes) => ({ sha256: createHash("sha256").update(bytes).digest("hex"), sizeBytes: bytes.length })),
  };
}

function tensorsOf(tensors: Readonly<Record<string, HostTensor>>): RecordTensor[] {
  return Object.entries(tensors).map(([name, t]) => {
    const datatype = oipDatatypeOf[t.dtype];
    return { name, datatype, shape: t.dims, contents: rawBytesOf({ name, datatype, shape: [...t.dims], data: t.data }) };
  });
}
