import { Code, ConnectError } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ModelMetadataSchema, PredictorService } from "../../gen/mlmesh/predictor/v1/predictor_pb.js";
import type { PartialServiceImpl } from "../runtime/instrument.js";
import { pageOf } from "../runtime/pagination.js";
import { PackedPredictResponse, packedRowsOf, packRows, type PackedRows } from "../runtime/wire/predict-wire.js";
import type { LoadedVersion, ServingTable } from "./serving-table.js";

/**
 * The PredictorService handlers over the serving table (what is loaded now). Row counts
 * (1..10,000), finite values and model names are enforced by the contract's protovalidate
 * rules before a handler runs; here: which version answers, and each row's feature count.
 */
export function createPredictorService(table: ServingTable): PartialServiceImpl<typeof PredictorService> {
  return {
    predict(request) {
      return table.use(request.model, request.version, (model) => predictRows(model, packedRowsOf(request)));
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
        return { rows, response: await predictRows(model, packRows(rows)) };
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

/** Runs the model once over the request's rows (packed as decoded: runtime/wire/predict-wire.ts). */
async function predictRows(model: LoadedVersion, rows: PackedRows): Promise<PackedPredictResponse> {
  const started = performance.now();
  try {
    const response = await classifyRows(model, rows, started);
    return response;
  } catch (err) {
    model.stats.recordRequest({ ok: false, rows: rows.rowCount, totalMs: performance.now() - started, inputMs: performance.now() - started });
    throw err;
  }
}

async function classifyRows(model: LoadedVersion, rows: PackedRows, started: number): Promise<PackedPredictResponse> {
  const { featureCount, metadata } = model;
  const { offsets, rowCount } = rows;
  for (let i = 0; i < rowCount; i++) {
    const count = offsets[i + 1] - offsets[i];
    if (count !== featureCount) {
      throw new ConnectError(
        `rows[${i}] has ${count} values; ${model.name} v${model.version} takes ${featureCount} (${metadata.feature_names.join(", ")})`,
        Code.InvalidArgument,
      );
    }
  }
  const packed = performance.now();
  const probabilities = await model.classify(rows.features, rowCount);
  const done = performance.now();
  model.stats.recordRequest({ ok: true, rows: rowCount, totalMs: done - started, inputMs: packed - started });
  return new PackedPredictResponse(model.name, model.version, [...metadata.labels], probabilities, rowCount);
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
