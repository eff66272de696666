import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { ClassifyImagesResponseSchema, InvalidRows, ModelKind, type ModelMetadataSchema, type PredictorService } from "../../gen/mlmesh/predictor/v1/predictor_pb.js";
import type { HostTensor } from "../model/tensors.js";
import type { PartialServiceImpl } from "../runtime/serve/registration.js";
import { pageOf } from "../runtime/serve/pagination.js";
import { PackedPredictResponse, packedRowsOf, packRows, PredictModelsAnswer, type ModelPart, type PackedRows } from "../model/wire/predict-wire.js";
import { invalidArgument, type FieldViolation } from "../runtime/serve/errors.js";
import type { Inference, InferenceKind, ModelInput, TensorInput } from "./inference.js";
import type { LoadedVersion, ServingTable } from "./serving-table.js";

/**
 * The PredictorService handlers over the Predictor's inference path (inference.ts). Row counts
 * (1..10,000), finite values and model names are enforced by the contract's protovalidate
 * rules before a handler runs; here: which version answers, and each row's feature count.
 */
export function createPredictorService(inference: Inference): PartialServiceImpl<typeof PredictorService> {
  const { table } = inference;
  return {
    predict(request, ctx) {
      const input: RowsInput = {
        rows: packedRowsOf(request),
        rowWidth: request.rowWidth,
        skipInvalid: request.invalidRows === InvalidRows.SKIP,
        packedResponse: request.packedResponse,
      };
      return inference.run(request.model, request.version, predictKind, input, ctx);
    },

    async predictModels(request, ctx) {
      const rows = packedRowsOf(request);
      const skipInvalid = request.invalidRows === InvalidRows.SKIP;
      // Every model runs at once (each in its own cross-request batches); one failing fails only its part.
      const parts = await Promise.all(
        request.models.map(({ model, version }, part): Promise<ModelPart> => {
          const input: RowsInput = { rows, rowWidth: request.rowWidth, skipInvalid, packedResponse: request.packedResponse, part };
          return inference.run(model, version, predictModelsKind, input, ctx).then(
            (response) => ({ model, version, response }),
            (err: unknown) => ({ model, version, error: ConnectError.from(err) }),
          );
        }),
      );
      return new PredictModelsAnswer(parts);
    },

    classifyImages(request, ctx) {
      return inference.run(request.model, request.version, classifyImagesKind, { images: request.images, topK: request.topK || 5 }, ctx);
    },

    getModelMetadata(request) {
      const model = table.resolve(request.model, request.version);
      return { metadata: metadataOf(model, aliasesOf(table, model)) };
    },

    listModels(request) {
      const { models, failures } = table.snapshot;
      const all = [...models.values()].flatMap((m) => [...m.versions.values()]);
      all.sort((a, b) => (listKey(a) < listKey(b) ? -1 : 1));
      const page = pageOf(all, request, listKey);
      return {
        models: page.items.map((m) => metadataOf(m, aliasesOf(table, m))),
        failures: failures.map((f) => ({ name: f.name, version: f.version, reason: f.reason })),
        nextPageToken: page.nextPageToken,
      };
    },

    async predictSample(request, ctx) {
      const loaded = table.resolve(request.model, request.version);
      const rows = loaded.requireClassifier().metadata.sample_input.map((values) => ({ values: [...values] }));
      // The version resolved above answers (not whatever the name means by the time it runs).
      const response = await inference.run(loaded.name, loaded.version, predictKind, { rows: packRows(rows), rowWidth: 0, skipInvalid: false, packedResponse: false }, ctx);
      return { rows, response };
    },
  };
}

/** Predict's input: the request's rows (packed as decoded: model/wire/predict-wire.ts). */
interface RowsInput {
  readonly rows: PackedRows;
  /** The rows' width when they came packed (packed_values); 0 for Row messages. */
  readonly rowWidth: number;
  /** INVALID_ROWS_SKIP: rows of the wrong width are left out and listed, not failing the call. */
  readonly skipInvalid: boolean;
  /** Answer packed_probabilities in place of predictions. */
  readonly packedResponse: boolean;
  /** The model's position in a PredictModels request; unset for Predict. */
  readonly part?: number;
}

/** The rows the model runs on, and the rows left out (INVALID_ROWS_SKIP). */
interface PreparedRows extends ModelInput {
  readonly rejected: readonly FieldViolation[];
}

/** Native Predict: rows of floats in, probabilities and labels per row out. */
const predictKind: InferenceKind<RowsInput, PackedPredictResponse, PreparedRows> = {
  name: "predict",
  prepare(loaded, { rows, rowWidth, skipInvalid }) {
    const { featureCount, metadata } = loaded.requireClassifier();
    const { offsets, rowCount } = rows;
    const takes = `${loaded.name} v${loaded.version} takes ${featureCount} (${metadata.feature_names.join(", ")})`;
    if (rowWidth !== 0 && rowWidth !== featureCount) {
      throw invalidArgument(`row_width is ${rowWidth}; ${takes}`, [{ field: "row_width", reason: "ROW_WIDTH", description: `is ${rowWidth}; ${takes}` }]);
    }
    let rejected: FieldViolation[] | undefined;
    for (let i = 0; i < rowCount; i++) {
      const count = offsets[i + 1] - offsets[i];
      if (count === featureCount) continue;
      rejected ??= [];
      rejected.push({ field: `rows[${i}]`, reason: "ROW_WIDTH", description: `has ${count} values; ${takes}` });
    }
    if (rejected === undefined) return { features: rows.features, rowCount, rejected: [] };
    if (!skipInvalid) {
      const [first] = rejected;
      const more = rejected.length > 1 ? `; and ${rejected.length - 1} more row${rejected.length > 2 ? "s" : ""} of the wrong width (every one in the details)` : "";
      throw invalidArgument(`${first.field} ${first.description}${more}`, rejected);
    }
    return { ...packAccepted(rows, featureCount, rowCount - rejected.length), rejected };
  },
  answer(loaded, input, prepared, probabilities, outlierScores) {
    const rejectedRows = prepared.rejected.length > 0 ? { fieldViolations: [...prepared.rejected] } : undefined;
    const labels = [...loaded.requireClassifier().metadata.labels];
    return new PackedPredictResponse(loaded.name, loaded.version, labels, probabilities, prepared.rowCount, rejectedRows, outlierScores, input.packedResponse);
  },
};

/** PredictModels: Predict's rows and answers, one model of several; its records are told apart by position. */
const predictModelsKind: InferenceKind<RowsInput, PackedPredictResponse, PreparedRows> = {
  ...predictKind,
  name: "predict_models",
  part: (input) => input.part,
};

/** ClassifyImages' input: encoded images, and how many labels each answer names. */
interface ImagesInput {
  readonly images: readonly Uint8Array[];
  readonly topK: number;
}

/** ClassifyImages: encoded images through the model's preprocessing, the top-k labels of each. */
const classifyImagesKind: InferenceKind<ImagesInput, MessageInitShape<typeof ClassifyImagesResponseSchema>, TensorInput> = {
  name: "images",
  async prepare(loaded, { images }) {
    const image = loaded.requireImageModel();
    return { feeds: { [image.preprocessor.input.name]: await loaded.preprocessImages(images) }, fetches: [image.scoresOutput] };
  },
  imagesOf: ({ images }) => images,
  answer(loaded, { images, topK }, _prepared, computed) {
    const { labels, scoresOutput } = loaded.requireImageModel();
    const scores = (computed as Record<string, HostTensor>)[scoresOutput].data as Float32Array;
    const k = Math.min(topK, labels.length);
    const results = images.map((_, i) => {
      const row = scores.subarray(i * labels.length, (i + 1) * labels.length);
      const order = [...row.keys()].sort((a, b) => row[b] - row[a]).slice(0, k);
      return { top: order.map((c) => ({ label: labels[c], score: row[c] })) };
    });
    return { model: loaded.name, version: loaded.version, results };
  },
  // The key: the images' bytes and top_k (a hit decodes nothing and runs nothing).
  cache: {
    key: ({ images, topK }) => [String(topK), ...images],
    encode: (answer) => toBinary(ClassifyImagesResponseSchema, create(ClassifyImagesResponseSchema, answer)),
    decode: (bytes) => fromBinary(ClassifyImagesResponseSchema, bytes),
  },
};

/** The rows of the right width, packed in request order. */
function packAccepted(rows: PackedRows, featureCount: number, accepted: number): ModelInput {
  const features = new Float32Array(accepted * featureCount);
  let at = 0;
  for (let i = 0; i < rows.rowCount; i++) {
    if (rows.offsets[i + 1] - rows.offsets[i] !== featureCount) continue;
    features.set(rows.features.subarray(rows.offsets[i], rows.offsets[i + 1]), at);
    at += featureCount;
  }
  return { features, rowCount: accepted };
}

/** Orders ListModels by name, then by version number (zero-padded so "10" sorts after "9"). */
function listKey(model: LoadedVersion): string {
  return `${model.name}@${String(model.version).padStart(10, "0")}`;
}

/** The aliases that resolve to this version here, sorted. */
function aliasesOf(table: ServingTable, model: LoadedVersion): string[] {
  const served = table.snapshot.models.get(model.name);
  return [...(served?.aliases ?? [])].filter(([, version]) => version === model.version).map(([alias]) => alias).sort();
}

function metadataOf(model: LoadedVersion, aliases: string[]): MessageInitShape<typeof ModelMetadataSchema> {
  const m = model.metadata;
  const classifier = model.classifier?.metadata;
  const spec = (t: { name: string; dtype: string; shape: readonly number[] }) => ({ name: t.name, dtype: t.dtype, shape: t.shape.map(BigInt) });
  return {
    name: model.name,
    version: model.version,
    description: m?.description ?? "",
    kind: classifier ? ModelKind.CLASSIFIER : model.image ? ModelKind.IMAGE : ModelKind.TENSOR,
    input: classifier ? spec(classifier.input) : undefined,
    inputs: model.signature.inputs.map(spec),
    outputs: model.signature.outputs.map(spec),
    featureNames: [...(classifier?.feature_names ?? [])],
    labels: [...(m?.labels ?? [])],
    sampleInput: (classifier?.sample_input ?? []).map((values) => ({ values: [...values] })),
    metrics: { ...m?.metrics },
    sha256: model.sha256,
    aliases,
    outlierScoring: model.outlierScoring,
  };
}
