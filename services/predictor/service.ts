import { Code, ConnectError } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  ModelMetadataSchema,
  PredictionSchema,
  PredictorService,
  PredictResponseSchema,
  Row,
} from "../../gen/mlmesh/predictor/v1/predictor_pb.js";
import type { PartialServiceImpl } from "../runtime/instrument.js";
import { pageOf } from "../runtime/pagination.js";
import type { LoadedModel, ModelRepository } from "./model-repository.js";

type PredictResponseInit = MessageInitShape<typeof PredictResponseSchema>;
type PredictionInit = MessageInitShape<typeof PredictionSchema>;

/**
 * The PredictorService handlers over a loaded model repository. Row counts (1..10,000) and
 * finite values are enforced by the contract's protovalidate rules before a handler runs;
 * here: model and version lookup and the feature count of each row.
 */
export function createPredictorService(repository: ModelRepository): PartialServiceImpl<typeof PredictorService> {
  const failed = new Map(repository.failures.map((f) => [`${f.name}@${f.version}`, f.reason]));
  const find = (name: string, version: number) => findModel(repository, failed, name, version);
  return {
    async predict(request) {
      const model = find(request.model, request.version);
      return predictRows(model, request.rows);
    },

    getModelMetadata(request) {
      return { metadata: metadataOf(find(request.model, request.version)) };
    },

    listModels(request) {
      const all = [...repository.models.values()].flatMap((versions) => [...versions.values()]);
      all.sort((a, b) => (listKey(a) < listKey(b) ? -1 : 1));
      const page = pageOf(all, request, listKey);
      return {
        models: page.items.map(metadataOf),
        failures: repository.failures.map((f) => ({ name: f.name, version: f.version, reason: f.reason })),
        nextPageToken: page.nextPageToken,
      };
    },

    async predictSample(request) {
      const model = find(request.model, request.version);
      const rows = model.metadata.sample_input.map((values) => ({ values: [...values] }));
      return { rows, response: await predictRows(model, rows) };
    },
  };
}

/** Orders ListModels by name, then by version number (zero-padded so "10" sorts after "9"). */
function listKey(model: LoadedModel): string {
  return `${model.metadata.name}@${String(model.metadata.version).padStart(10, "0")}`;
}

function findModel(repository: ModelRepository, failed: Map<string, string>, name: string, version: number): LoadedModel {
  const versions = repository.models.get(name);
  if (versions === undefined) {
    const reason = failed.get(`${name}@${version}`) ?? [...failed].find(([key]) => key.startsWith(`${name}@`))?.[1];
    if (reason !== undefined) {
      throw new ConnectError(`model "${name}" failed to load: ${reason}`, Code.FailedPrecondition);
    }
    const known = [...repository.models.keys()].sort().join(", ");
    throw new ConnectError(`model "${name}" not found; loaded models: ${known}`, Code.NotFound);
  }
  if (version === 0) return versions.get(Math.max(...versions.keys()))!;
  const model = versions.get(version);
  if (model !== undefined) return model;
  const reason = failed.get(`${name}@${version}`);
  if (reason !== undefined) {
    throw new ConnectError(`model "${name}" version ${version} failed to load: ${reason}`, Code.FailedPrecondition);
  }
  const known = [...versions.keys()].sort((a, b) => a - b).join(", ");
  throw new ConnectError(`model "${name}" has no version ${version}; loaded versions: ${known}`, Code.NotFound);
}

/** Packs the rows into one tensor, runs the model once, and unpacks per-row predictions. */
async function predictRows(model: LoadedModel, rows: readonly Pick<Row, "values">[]): Promise<PredictResponseInit> {
  const { featureCount, metadata } = model;
  const features = new Float32Array(rows.length * featureCount);
  for (let i = 0; i < rows.length; i++) {
    const values = rows[i].values;
    if (values.length !== featureCount) {
      throw new ConnectError(
        `rows[${i}] has ${values.length} values; ${metadata.name} v${metadata.version} takes ${featureCount} (${metadata.feature_names.join(", ")})`,
        Code.InvalidArgument,
      );
    }
    features.set(values, i * featureCount);
  }
  const probabilities = await model.classify(features, rows.length);
  const classCount = metadata.labels.length;
  const predictions: PredictionInit[] = new Array(rows.length);
  for (let i = 0; i < rows.length; i++) {
    const row = probabilities.subarray(i * classCount, (i + 1) * classCount);
    let best = 0;
    for (let c = 1; c < classCount; c++) if (row[c] > row[best]) best = c;
    predictions[i] = { probabilities: Array.from(row), label: metadata.labels[best], labelIndex: best, probability: row[best] };
  }
  return { model: metadata.name, version: metadata.version, labels: [...metadata.labels], predictions };
}

function metadataOf(model: LoadedModel): MessageInitShape<typeof ModelMetadataSchema> {
  const m = model.metadata;
  return {
    name: m.name,
    version: m.version,
    description: m.description,
    input: { ...m.input, shape: m.input.shape.map(BigInt) },
    outputs: m.outputs.map((o) => ({ ...o, shape: o.shape.map(BigInt) })),
    featureNames: [...m.feature_names],
    labels: [...m.labels],
    sampleInput: m.sample_input.map((values) => ({ values: [...values] })),
    metrics: { ...m.metrics },
    sha256: m.sha256,
  };
}
