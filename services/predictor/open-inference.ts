import { Code, ConnectError } from "@connectrpc/connect";
import type { Inference, InferenceKind, ModelInput } from "./inference.js";
import type { LoadedVersion } from "./serving-table.js";

/*
 * The Open Inference Protocol's model, shared by its gRPC service (oip-service.ts) and its
 * REST binding (oip-rest.ts): how a request names a model version, which tensors our models
 * take and give, and the checks every input passes before a byte of it is read.
 */

/** Rows one ModelInfer may carry (100,000 rows of 4 features: 1.6 MB of raw FP32). */
export const maxInferRows = 100_000;

/** The protocol's name for the model's framework. */
export const platform = "onnxruntime_onnx";

/** The outputs every classifier gives, besides its probability output. */
export const labelOutput = "label";
export const labelIndexOutput = "label_index";

/** A tensor as the protocol describes it. */
export interface TensorSpec {
  readonly name: string;
  readonly datatype: string;
  readonly shape: readonly number[];
}

/** An input's data, as the request carried it. */
export type InputData =
  | { readonly kind: "raw"; readonly bytes: Uint8Array }
  | { readonly kind: "fp32"; readonly values: ArrayLike<number> }
  /** Typed contents in a field of another datatype (the field's name). */
  | { readonly kind: "other"; readonly field: string }
  | { readonly kind: "none" };

export interface InferInput {
  readonly name: string;
  readonly datatype: string;
  readonly shape: readonly (bigint | number)[];
  readonly data: InputData;
}

/** One output tensor of an answer; exactly one of the value fields is set. */
export interface InferOutput {
  readonly name: string;
  readonly datatype: "FP32" | "BYTES" | "INT64";
  readonly shape: number[];
  readonly fp32?: Float32Array;
  readonly int64?: BigInt64Array;
  readonly labels?: readonly string[];
}

/** The model a request names: "" for the version the Predictor would choose, a number, or an alias. */
export function modelRef(name: string, version: string): { model: string; version: number } {
  if (version === "") return { model: name, version: 0 };
  if (/^[1-9]\d{0,8}$/.test(version)) return { model: name, version: Number(version) };
  if (/^[a-z][a-z0-9_-]*$/.test(version)) return { model: `${name}@${version}`, version: 0 };
  throw new ConnectError(`model_version "${version}" is neither a version number nor an alias`, Code.InvalidArgument);
}

/** The inputs a model takes and the outputs it gives, in the protocol's terms. */
export function tensorsOf(loaded: LoadedVersion): { inputs: TensorSpec[]; outputs: TensorSpec[] } {
  const { metadata } = loaded;
  return {
    inputs: [{ name: metadata.input.name, datatype: "FP32", shape: [-1, loaded.featureCount] }],
    outputs: [
      { name: metadata.probability_output, datatype: "FP32", shape: [-1, metadata.labels.length] },
      { name: labelOutput, datatype: "BYTES", shape: [-1] },
      { name: labelIndexOutput, datatype: "INT64", shape: [-1] },
    ],
  };
}

/** ModelInfer's request, decoded from gRPC or REST. */
export interface InferRequest {
  readonly inputs: readonly InferInput[];
  /** The outputs asked for; all when empty. */
  readonly outputs: readonly string[];
}

/** The requested outputs' names, checked with the input before the model runs. */
interface PreparedTensors extends ModelInput {
  readonly outputs: readonly string[];
}

/**
 * ModelInfer's semantics (inference.ts runs them): the one FP32 input named as the model's
 * metadata says, of shape [rows, features]; typed or raw contents of exactly that many elements
 * (checked before any is read), finite; then the requested outputs (all when none is named).
 */
export const inferKind: InferenceKind<InferRequest, { loaded: LoadedVersion; outputs: InferOutput[] }, PreparedTensors> = {
  name: "oip",
  prepare(loaded, request) {
    const outputs = requestedOutputs(loaded, request.outputs);
    return { ...readInput(loaded, request.inputs), outputs };
  },
  answer(loaded, _request, prepared, probabilities) {
    return { loaded, outputs: prepared.outputs.map((name) => output(loaded, name, probabilities, prepared.rowCount)) };
  },
};

/** Runs ModelInfer on the version its model name and version string name (modelRef). */
export function infer(inference: Inference, model: string, version: string, request: InferRequest): Promise<{ loaded: LoadedVersion; outputs: InferOutput[] }> {
  const ref = modelRef(model, version);
  return inference.run(ref.model, ref.version, inferKind, request);
}

function requestedOutputs(loaded: LoadedVersion, names: readonly string[]): string[] {
  const known = tensorsOf(loaded).outputs.map((o) => o.name);
  if (names.length === 0) return known;
  for (const name of names) {
    if (!known.includes(name)) {
      throw new ConnectError(`model "${loaded.name}" has no output "${name}"; its outputs: ${known.join(", ")}`, Code.InvalidArgument);
    }
  }
  return [...names];
}

/** The features of the request's one input, checked against the model in full before use. */
function readInput(loaded: LoadedVersion, inputs: readonly InferInput[]): { features: Float32Array; rowCount: number } {
  const expected = loaded.metadata.input.name;
  const where = `model "${loaded.name}" v${loaded.version}`;
  if (inputs.length !== 1) {
    throw new ConnectError(`${where} takes one input, "${expected}"; the request has ${inputs.length}`, Code.InvalidArgument);
  }
  const input = inputs[0];
  if (input.name !== expected) throw new ConnectError(`${where} has one input, "${expected}"; the request names "${input.name}"`, Code.InvalidArgument);
  if (input.datatype !== "FP32") {
    throw new ConnectError(`input "${input.name}" of ${where} is FP32; the request says ${input.datatype || "(no datatype)"}`, Code.InvalidArgument);
  }
  const featureCount = loaded.featureCount;
  const shape = input.shape.map((d) => BigInt(d));
  const shown = `[${shape.join(", ")}]`;
  if (shape.length !== 2) {
    throw new ConnectError(`input "${input.name}" has shape ${shown}; ${where} takes [rows, ${featureCount}]`, Code.InvalidArgument);
  }
  if (shape.some((d) => d < 0n)) throw new ConnectError(`input "${input.name}" has shape ${shown}: dimensions cannot be negative`, Code.InvalidArgument);
  if (shape[1] !== BigInt(featureCount)) {
    throw new ConnectError(`input "${input.name}" has shape ${shown}; ${where} takes ${featureCount} features per row: [rows, ${featureCount}]`, Code.InvalidArgument);
  }
  if (shape[0] < 1n || shape[0] > BigInt(maxInferRows)) {
    throw new ConnectError(`input "${input.name}" has shape ${shown}: 1 to ${maxInferRows} rows per request`, Code.InvalidArgument);
  }
  const rowCount = Number(shape[0]);
  const elements = rowCount * featureCount;
  const features = new Float32Array(elements);
  const { data } = input;
  switch (data.kind) {
    case "raw":
      if (data.bytes.length !== elements * 4) {
        throw new ConnectError(
          `input "${input.name}" of shape ${shown} needs ${elements * 4} bytes of raw FP32 (${elements} elements); the request has ${data.bytes.length}`,
          Code.InvalidArgument,
        );
      }
      // A copy: raw bytes need not be 4-byte aligned. Little-endian, as the protocol says.
      new Uint8Array(features.buffer).set(data.bytes);
      break;
    case "fp32":
      if (data.values.length !== elements) {
        throw new ConnectError(`input "${input.name}" of shape ${shown} needs ${elements} FP32 elements; the request has ${data.values.length}`, Code.InvalidArgument);
      }
      for (let i = 0; i < elements; i++) features[i] = data.values[i];
      break;
    case "other":
      throw new ConnectError(`input "${input.name}" is FP32, but its contents are in ${data.field}`, Code.InvalidArgument);
    case "none":
      throw new ConnectError(`input "${input.name}" has no contents: send raw contents or FP32 contents`, Code.InvalidArgument);
  }
  for (let i = 0; i < elements; i++) {
    if (!Number.isFinite(features[i])) {
      throw new ConnectError(
        `input "${input.name}" row ${Math.floor(i / featureCount)} feature ${i % featureCount} is ${features[i]}; values must be finite`,
        Code.InvalidArgument,
      );
    }
  }
  return { features, rowCount };
}

function output(loaded: LoadedVersion, name: string, probabilities: Float32Array, rows: number): InferOutput {
  const labels = loaded.metadata.labels;
  const classes = labels.length;
  if (name === labelOutput || name === labelIndexOutput) {
    const best = new BigInt64Array(rows);
    for (let r = 0; r < rows; r++) {
      let top = 0;
      for (let c = 1; c < classes; c++) if (probabilities[r * classes + c] > probabilities[r * classes + top]) top = c;
      best[r] = BigInt(top);
    }
    return name === labelOutput
      ? { name, datatype: "BYTES", shape: [rows], labels: Array.from(best, (i) => labels[Number(i)]) }
      : { name, datatype: "INT64", shape: [rows], int64: best };
  }
  return { name, datatype: "FP32", shape: [rows, classes], fp32: probabilities };
}

/** BYTES elements as the protocol sends them raw: each a 4-byte little-endian length, then its bytes. */
export function serializeBytes(values: readonly string[]): Uint8Array {
  const encoded = values.map((v) => Buffer.from(v, "utf8"));
  const out = Buffer.allocUnsafe(encoded.reduce((sum, b) => sum + 4 + b.length, 0));
  let offset = 0;
  for (const bytes of encoded) {
    out.writeUInt32LE(bytes.length, offset);
    bytes.copy(out, offset + 4);
    offset += 4 + bytes.length;
  }
  return out;
}

/** An output's elements as raw little-endian bytes. */
export function rawBytesOf(out: InferOutput): Uint8Array {
  if (out.fp32) return new Uint8Array(out.fp32.buffer, out.fp32.byteOffset, out.fp32.byteLength);
  if (out.int64) return new Uint8Array(out.int64.buffer, out.int64.byteOffset, out.int64.byteLength);
  return serializeBytes(out.labels ?? []);
}
