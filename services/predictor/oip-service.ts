import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type {
  GRPCInferenceService,
  InferParameter,
  InferTensorContents,
  InferTensorContentsSchema,
  ModelInferResponseSchema,
  ModelStatisticsSchema,
} from "../../gen/inference/open_inference_pb.js";
import type { PartialServiceImpl } from "../runtime/serve/registration.js";
import type { Duration } from "./inference-stats.js";
import { infer, modelRef, platform, rawBytesOf, tensorsOf, type InferOutput, type InputData, type TensorSpec } from "./open-inference.js";
import type { TensorData } from "../model/tensors.js";
import type { Inference } from "./inference.js";
import type { LoadedVersion, ServingTable } from "./serving-table.js";

/** What the server says of itself in ServerMetadata (and GET /v2). */
export const serverInfo = {
  name: "mlmesh",
  version: "0.1.0",
  extensions: ["model_repository", "statistics", "binary_tensor_data"],
};

/**
 * The Open Inference Protocol's gRPC service (inference.GRPCInferenceService) over the
 * Predictor's inference path (inference.ts), beside PredictorService on the same port. `ready` says whether every model the
 * Predictor should serve is loaded (ServerReady).
 */
export function createInferenceService(inference: Inference, ready: () => boolean): PartialServiceImpl<typeof GRPCInferenceService> {
  const { table } = inference;
  return {
    serverLive() {
      return { live: true };
    },
    serverReady() {
      return { ready: ready() };
    },
    modelReady(request) {
      return { ready: isReady(table, request.name, request.version ?? "") };
    },
    serverMetadata() {
      return serverInfo;
    },
    modelMetadata(request) {
      const metadata = modelMetadata(table, request.name, request.version ?? "");
      const tensor = (t: TensorSpec) => ({ name: t.name, datatype: t.datatype, shape: t.shape.map(BigInt) });
      return { ...metadata, inputs: metadata.inputs.map(tensor), outputs: metadata.outputs.map(tensor) };
    },

    async modelInfer(request, ctx) {
      const raw = request.rawInputContents.length > 0;
      if (raw && request.inputs.some((i) => typedField(i.contents) !== undefined)) {
        throw new ConnectError("an input has typed contents while raw_input_contents is set: use one or the other", Code.InvalidArgument);
      }
      if (raw && request.rawInputContents.length !== request.inputs.length) {
        throw new ConnectError(`raw_input_contents has ${request.rawInputContents.length} entries for ${request.inputs.length} inputs`, Code.InvalidArgument);
      }
      const { loaded, outputs } = await infer(inference, request.modelName, request.modelVersion ?? "", {
        inputs: request.inputs.map((input, k) => ({
          name: input.name,
          datatype: input.datatype,
          shape: input.shape,
          data: raw ? { kind: "raw", bytes: request.rawInputContents[k] } : typedData(input.contents),
        })),
        outputs: request.outputs.map((o) => o.name),
        parameters: (name) => parameterText(request.parameters[name]),
      }, ctx);
      // Raw outputs go to a client that sent raw inputs or asked for binary data, and whenever
      // an output is FP16, which has no typed field (for all outputs: the protocol does not mix
      // the two forms in one response).
      const binary = raw || request.outputs.some((o) => boolParameter(o.parameters.binary_data)) || outputs.some((o) => o.datatype === "FP16");
      return inferResponse(loaded, request.id, outputs, binary);
    },

    modelStatistics(request) {
      const versions = matchingVersions(table, request.name, request.version);
      return { modelStats: versions.map(statisticsOf) };
    },

    repositoryIndex(request) {
      const { models, failures } = table.snapshot;
      const index = [...models.values()].flatMap((m) => [...m.versions.keys()].map((v) => ({ name: m.name, version: String(v), state: "READY", reason: "" })));
      if (!request.ready) {
        index.push(...failures.map((f) => ({ name: f.name, version: f.version === 0 ? "" : String(f.version), state: "UNAVAILABLE", reason: f.reason })));
      }
      index.sort((a, b) => a.name.localeCompare(b.name) || Number(a.version) - Number(b.version));
      return { models: index };
    },
  };
}

/** Whether a model version can answer now; an unknown or failed one is simply not ready. */
export function isReady(table: ServingTable, name: string, version: string): boolean {
  try {
    const ref = modelRef(name, version);
    table.resolve(ref.model, ref.version);
    return true;
  } catch {
    return false;
  }
}

/** ModelMetadata: the served versions, and the resolved version's tensors. */
export function modelMetadata(table: ServingTable, name: string, version: string) {
  const ref = modelRef(name, version);
  const loaded = table.resolve(ref.model, ref.version);
  const served = table.snapshot.models.get(loaded.name)!;
  return {
    name: loaded.name,
    versions: [...served.versions.keys()].sort((a, b) => a - b).map(String),
    platform,
    ...tensorsOf(loaded),
    properties: {
      kind: loaded.classifier ? "classifier" : "tensor",
      labels: (loaded.metadata?.labels ?? []).join(","),
      feature_names: (loaded.classifier?.metadata.feature_names ?? []).join(","),
      served_version: String(loaded.version),
    },
  };
}

/** The served versions ModelStatistics reports: all, one model's, or one version. */
export function matchingVersions(table: ServingTable, name: string, version: string): LoadedVersion[] {
  const all = [...table.snapshot.models.values()].flatMap((m) => [...m.versions.values()]);
  if (name === "") return all;
  if (version === "") {
    const versions = all.filter((v) => v.name === name);
    if (versions.length === 0) table.resolve(name, 0); // NOT_FOUND (or FAILED_PRECONDITION) naming it
    return versions;
  }
  const ref = modelRef(name, version);
  return [table.resolve(ref.model, ref.version)];
}

/** A version's statistics, in the protocol's message shape. */
export function statisticsOf(v: LoadedVersion): MessageInitShape<typeof ModelStatisticsSchema> {
  const d = (x: Duration) => ({ count: BigInt(x.count), ns: BigInt(x.ns) });
  const s = v.stats;
  return {
    name: v.name,
    version: String(v.version),
    lastInference: BigInt(s.lastInference),
    inferenceCount: BigInt(s.inferenceCount),
    executionCount: BigInt(s.executionCount),
    inferenceStats: {
      success: d(s.success),
      fail: d(s.fail),
      queue: d(s.queue),
      computeInput: d(s.computeInput),
      computeInfer: d(s.computeInfer),
      computeOutput: d(s.computeOutput),
    },
    batchStats: [...s.batches].sort(([a], [b]) => a - b).map(([size, runs]) => ({ batchSize: BigInt(size), computeInfer: d(runs) })),
  };
}

function inferResponse(loaded: LoadedVersion, id: string, outputs: InferOutput[], binary: boolean): MessageInitShape<typeof ModelInferResponseSchema> {
  return {
    modelName: loaded.name,
    modelVersion: String(loaded.version),
    id,
    outputs: outputs.map((o) => ({
      name: o.name,
      datatype: o.datatype,
      shape: o.shape.map(BigInt),
      contents: binary ? undefined : typedContents(o),
    })),
    rawOutputContents: binary ? outputs.map(rawBytesOf) : [],
  };
}

/** An output's elements in the typed field of its datatype (FP16 outputs are always raw). */
function typedContents(o: InferOutput): MessageInitShape<typeof InferTensorContentsSchema> {
  const data: TensorData = o.data;
  if (Array.isArray(data)) return { bytesContents: data.map((s) => Buffer.from(s, "utf8")) };
  switch (o.datatype) {
    case "BOOL":
      return { boolContents: Array.from(data as Uint8Array, (v) => v !== 0) };
    case "INT8":
    case "INT16":
    case "INT32":
      return { intContents: Array.from(data as Int32Array) };
    case "INT64":
      return { int64Contents: Array.from(data as BigInt64Array) };
    case "UINT8":
    case "UINT16":
    case "UINT32":
      return { uintContents: Array.from(data as Uint32Array) };
    case "UINT64":
      return { uint64Contents: Array.from(data as BigUint64Array) };
    case "FP64":
      return { fp64Contents: Array.from(data as Float64Array) };
    default:
      return { fp32Contents: Array.from(data as Float32Array) };
  }
}

/** The typed contents field an input uses, if any. */
function typedField(contents: InferTensorContents | undefined): string | undefined {
  if (contents === undefined) return undefined;
  const fields: [string, { length: number }][] = [
    ["fp32_contents", contents.fp32Contents],
    ["fp64_contents", contents.fp64Contents],
    ["int_contents", contents.intContents],
    ["int64_contents", contents.int64Contents],
    ["uint_contents", contents.uintContents],
    ["uint64_contents", contents.uint64Contents],
    ["bool_contents", contents.boolContents],
    ["bytes_contents", contents.bytesContents],
  ];
  return fields.find(([, values]) => values.length > 0)?.[0];
}

function typedData(contents: InferTensorContents | undefined): InputData {
  const field = typedField(contents);
  if (field === undefined) return { kind: "none" };
  const c = contents!;
  const values: Record<string, ArrayLike<unknown>> = {
    fp32_contents: c.fp32Contents,
    fp64_contents: c.fp64Contents,
    int_contents: c.intContents,
    int64_contents: c.int64Contents,
    uint_contents: c.uintContents,
    uint64_contents: c.uint64Contents,
    bool_contents: c.boolContents,
    bytes_contents: c.bytesContents,
  };
  return { kind: "typed", field, values: values[field] };
}

/** A request parameter as text: a string as it is, a number or a boolean as JSON writes it. */
function parameterText(parameter: InferParameter | undefined): string | undefined {
  const choice = parameter?.parameterChoice;
  return choice === undefined || choice.case === undefined ? undefined : String(choice.value);
}

function boolParameter(parameter: InferParameter | undefined): boolean {
  return parameter?.parameterChoice.case === "boolParam" && parameter.parameterChoice.value;
}
