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
import type { LoadedVersion, ServingTable } from "./serving-table.js";

type PredictResponseInit = MessageInitShape<typeof PredictResponseSchema>;
type PredictionInit = MessageInitShape<typeof PredictionSchema>;

/**
 * The PredictorService handlers over the serving table (what is loaded now). Row counts
 * (1..10,000), finite values and model names are enforced by the contract's protovalidate
 * rules before a handler runs; here: which version answers, and each row's feature count.
 */
export function createPredictorService(table: ServingTable): PartialServiceImpl<typeof PredictorService> {
  return {
    predict(request) {
      return table.use(request.model, request.version, (model) => predictRows(model, request.rows));
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

    predictSample(request) {
      return table.use(request.model, request.version, async (model) => {
        const rows = model.metadata.sample_input.map((values) => ({ values: [...values] }));
        return { rows, response: await predictRows(model, rows) };
      });
    },
  };
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

/** Packs the rows into one tensor, runs the model once, and unpacks per-row predictions. */
async function predictRows(model: LoadedVersion, rows: readonly Pick<Row, "values">[]): Promise<PredictResponseInit> {
  const started = performance.now();
  try {
    const response = await classifyRows(model, rows, started);
    return response;
  } catch (err) {
    model.stats.recordRequest({ ok: false, rows: rows.length, totalMs: performance.now() - started, inputMs: performance.now() - started });
    throw err;
  }
}

async function classifyRows(model: LoadedVersion, rows: readonly Pick<Row, "values">[], started: number): Promise<PredictResponseInit> {
  const { featureCount, metadata } = model;
  const features = new Float32Array(rows.length * featureCount);
  for (let i = 0; i < rows.length; i++) {
    const values = rows[i].values;
    if (values.length !== featureCount) {
      throw new ConnectError(
        `rows[${i}] has ${values.length} values; ${model.name} v${model.version} takes ${featureCount} (${metadata.feature_names.join(", ")})`,
        Code.InvalidArgument,
      );
    }
    features.set(values, i * featureCount);
  }
  const packed = performance.now();
  const probabilities = await model.classify(features, rows.length);
  const classified = performance.now();
  const classCount = metadata.labels.length;
  const predictions: PredictionInit[] = new Array(rows.length);
  for (let i = 0; i < rows.length; i++) {
    const row = probabilities.subarray(i * classCount, (i + 1) * classCount);
    let best = 0;
    for (let c = 1; c < classCount; c++) if (row[c] > row[best]) best = c;
    predictions[i] = { probabilities: Array.from(row), label: metadata.labels[best], labelIndex: best, probability: row[best] };
  }
  const done = performance.now();
  model.stats.recordRequest({ ok: true, rows: rows.length, totalMs: done - started, inputMs: packed - started, outputMs: done - classified });
  return { model: model.name, version: model.version, labels: [...metadata.labels], predictions };
}

function metadataOf(model: LoadedVersion, aliases: string[]): MessageInitShape<typeof ModelMetadataSchema> {
  const m = model.metadata;
  return {
    name: model.name,
    version: model.version,
    description: m.description,
    input: { ...m.input, shape: m.input.shape.map(BigInt) },
    outputs: m.outputs.map((o) => ({ ...o, shape: o.shape.map(BigInt) })),
    featureNames: [...m.feature_names],
    labels: [...m.labels],
    sampleInput: m.sample_input.map((values) => ({ values: [...values] })),
    metrics: { ...m.metrics },
    sha256: m.sha256,
    aliases,
  };
}
