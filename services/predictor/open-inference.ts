import { Code, ConnectError } from "@connectrpc/connect";
import {
  allocate,
  dtypeOfOipDatatype,
  elementBytes,
  halfToNumber,
  numberToHalf,
  oipDatatypeOf,
  shapeText,
  type Dtype,
  type HostTensor,
  type TensorData,
  type TensorSpec as ModelTensorSpec,
} from "../model/tensors.js";
import type { Inference, InferenceKind, ModelInput, TensorInput } from "./inference.js";
import type { CallContext } from "../runtime/serve/pipeline.js";
import type { LoadedVersion } from "./serving-table.js";
import { batchable } from "./tensor-batcher.js";

/*
 * The Open Inference Protocol's model, shared by its gRPC service (oip-service.ts) and its
 * REST binding (oip-rest.ts): how a request names a model version, which tensors a model
 * takes and gives, and the checks every input passes before a byte of it is read. A
 * classifier takes one FP32 [rows, features] input and answers its probabilities, labels and
 * label indices; any other model takes and gives the tensors of its ONNX graph, of every
 * element type the protocol has.
 */

/** Rows one ModelInfer may carry to a classifier (100,000 rows of 4 features: 1.6 MB of raw FP32). */
export const maxInferRows = 100_000;

/** Elements one input tensor may have (the message size bounds the bytes; this bounds what they unpack to). */
export const maxInputElements = 64 * 1024 * 1024;

/** Bytes of one BYTES element. */
export const maxStringBytes = 1024 * 1024;

// ONNX string tensors hold text, and onnxruntime-node passes each element as a C string: bytes
// that are not UTF-8, or a NUL byte (which would cut the element short), are refused rather
// than changed on the way in.
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** One BYTES element as the model's string, or INVALID_ARGUMENT naming what it cannot carry. */
function textOf(label: string, index: number, bytes: Uint8Array): string {
  if (bytes.includes(0)) throw new ConnectError(`${label}: BYTES element ${index} holds a NUL byte, which ONNX string tensors cannot carry`, Code.InvalidArgument);
  try {
    return utf8.decode(bytes);
  } catch {
    throw new ConnectError(`${label}: BYTES element ${index} is not UTF-8 text, which ONNX string tensors hold`, Code.InvalidArgument);
  }
}

/** Encoded images one request may carry to an image model. */
export const maxImagesPerRequest = 64;

/** The protocol's name for the model's framework. */
export const platform = "onnxruntime_onnx";

/** The outputs every classifier gives, besides its probability output. */
export const labelOutput = "label";
export const labelIndexOutput = "label_index";
/** The outputs a scored classifier adds (its outlier model's verdict per row). */
export const outlierScoreOutput = "outlier_score";
export const isOutlierOutput = "is_outlier";

/** A tensor as the protocol describes it. */
export interface TensorSpec {
  readonly name: string;
  readonly datatype: string;
  readonly shape: readonly number[];
}

/** An input's data, as the request carried it. */
export type InputData =
  | { readonly kind: "raw"; readonly bytes: Uint8Array }
  /** gRPC typed contents: the field used (fp32_contents, int64_contents, ...) and its values. */
  | { readonly kind: "typed"; readonly field: string; readonly values: ArrayLike<unknown> }
  /** REST's "data", flattened: numbers, booleans or strings. */
  | { readonly kind: "json"; readonly values: readonly unknown[] }
  | { readonly kind: "none" };

export interface InferInput {
  readonly name: string;
  readonly datatype: string;
  readonly shape: readonly (bigint | number)[];
  readonly data: InputData;
}

/** One output tensor of an answer. */
export interface InferOutput {
  readonly name: string;
  readonly datatype: string;
  readonly shape: number[];
  readonly data: TensorData;
}

/** The gRPC typed contents field of each datatype (FP16 has none: raw contents only). */
export const typedFieldOf: Readonly<Record<string, string | undefined>> = {
  BOOL: "bool_contents",
  INT8: "int_contents",
  INT16: "int_contents",
  INT32: "int_contents",
  INT64: "int64_contents",
  UINT8: "uint_contents",
  UINT16: "uint_contents",
  UINT32: "uint_contents",
  UINT64: "uint64_contents",
  FP16: undefined,
  FP32: "fp32_contents",
  FP64: "fp64_contents",
  BYTES: "bytes_contents",
};

/** The model a request names: "" for the version the Predictor would choose, a number, or an alias. */
export function modelRef(name: string, version: string): { model: string; version: number } {
  if (version === "") return { model: name, version: 0 };
  if (/^[1-9]\d{0,8}$/.test(version)) return { model: name, version: Number(version) };
  if (/^[a-z][a-z0-9_-]*$/.test(version)) return { model: `${name}@${version}`, version: 0 };
  throw new ConnectError(`model_version "${version}" is neither a version number nor an alias`, Code.InvalidArgument);
}

/** The inputs a model takes and the outputs it gives, in the protocol's terms. */
export function tensorsOf(loaded: LoadedVersion): { inputs: TensorSpec[]; outputs: TensorSpec[] } {
  const classifier = loaded.classifier;
  if (classifier !== undefined) {
    return {
      inputs: [{ name: classifier.metadata.input.name, datatype: "FP32", shape: [-1, classifier.featureCount] }],
      outputs: [
        { name: classifier.metadata.probability_output, datatype: "FP32", shape: [-1, classifier.classCount] },
        { name: labelOutput, datatype: "BYTES", shape: [-1] },
        { name: labelIndexOutput, datatype: "INT64", shape: [-1] },
        ...(loaded.outlierScoring
          ? [
              { name: outlierScoreOutput, datatype: "FP32", shape: [-1] },
              { name: isOutlierOutput, datatype: "BOOL", shape: [-1] },
            ]
          : []),
      ],
    };
  }
  const spec = (t: ModelTensorSpec) => ({ name: t.name, datatype: oipDatatypeOf[t.dtype], shape: [...t.shape] });
  return { inputs: loaded.signature.inputs.map(spec), outputs: loaded.signature.outputs.map(spec) };
}

/** ModelInfer's request, decoded from gRPC or REST. */
export interface InferRequest {
  readonly inputs: readonly InferInput[];
  /** The outputs asked for; all when empty. */
  readonly outputs: readonly string[];
  /** The request's parameters as text (what traffic policies' keys read); unset: none. */
  readonly parameters?: (name: string) => string | undefined;
}

/** A classifier's rows with the requested outputs' names, checked before the model runs. */
interface PreparedRows extends ModelInput {
  readonly outputs: readonly string[];
}

/**
 * ModelInfer's semantics (inference.ts runs them). A classifier: the one FP32 input named as
 * its metadata says, of shape [rows, features]; typed or raw contents of exactly that many
 * elements (checked before any is read), finite. Any other model: every input of its graph,
 * each of its element type and shape (dynamic dimensions any size), contents of exactly its
 * element count. Then the requested outputs (all when none is named).
 */
export const inferKind: InferenceKind<InferRequest, { loaded: LoadedVersion; outputs: InferOutput[] }, PreparedRows | TensorInput> = {
  name: "oip",
  parameter: (request, name) => request.parameters?.(name),
  prepare(loaded, request) {
    const outputs = requestedOutputs(loaded, request.outputs);
    if (loaded.classifier !== undefined) return { ...readInput(loaded, request.inputs), outputs };
    const images = encodedImagesOf(loaded, request.inputs);
    if (images === undefined) return { feeds: readTensors(loaded, request.inputs), fetches: outputs };
    const input = loaded.requireImageModel().preprocessor.input.name;
    return loaded.preprocessImages(images).then((tensor) => ({ feeds: { [input]: tensor }, fetches: outputs }));
  },
  cache: {
    key: (request) => [
      request.outputs.join(","),
      ...[...request.inputs]
        .sort((a, b) => a.name.localeCompare(b.name))
        .flatMap((input) => [input.name, input.datatype, input.shape.join(","), input.data.kind, ...dataParts(input.data)]),
    ],
    encode: (answer) => encodeOutputs(answer.outputs),
    decode: (bytes, loaded) => ({ loaded, outputs: decodeOutputs(bytes) }),
  },
  answer(loaded, _request, prepared, computed, outlierScores) {
    if ("feeds" in prepared) {
      const tensors = computed as Record<string, HostTensor>;
      return { loaded, outputs: prepared.fetches.map((name) => ({ name, datatype: oipDatatypeOf[tensors[name].dtype], shape: [...tensors[name].dims], data: tensors[name].data })) };
    }
    return { loaded, outputs: prepared.outputs.map((name) => classifierOutput(loaded, name, computed as Float32Array, prepared.rowCount, outlierScores)) };
  },
};

/** Runs ModelInfer on the version its model name and version string name (modelRef). */
export function infer(inference: Inference, model: string, version: string, request: InferRequest, call?: CallContext): Promise<{ loaded: LoadedVersion; outputs: InferOutput[] }> {
  const ref = modelRef(model, version);
  return inference.run(ref.model, ref.version, inferKind, request, call);
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

/** The features of the request's one input, checked against the classifier in full before use. */
function readInput(loaded: LoadedVersion, inputs: readonly InferInput[]): { features: Float32Array; rowCount: number } {
  const classifier = loaded.requireClassifier();
  const expected = classifier.metadata.input.name;
  const where = `model "${loaded.name}" v${loaded.version}`;
  if (inputs.length !== 1) {
    throw new ConnectError(`${where} takes one input, "${expected}"; the request has ${inputs.length}`, Code.InvalidArgument);
  }
  const input = inputs[0];
  if (input.name !== expected) throw new ConnectError(`${where} has one input, "${expected}"; the request names "${input.name}"`, Code.InvalidArgument);
  if (input.datatype !== "FP32") {
    throw new ConnectError(`input "${input.name}" of ${where} is FP32; the request says ${input.datatype || "(no datatype)"}`, Code.InvalidArgument);
  }
  const featureCount = classifier.featureCount;
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
    case "typed":
    case "json":
      if (data.kind === "typed" && data.field !== "fp32_contents") throw new ConnectError(`input "${input.name}" is FP32, but its contents are in ${data.field}`, Code.InvalidArgument);
      if (data.values.length !== elements) {
        throw new ConnectError(`input "${input.name}" of shape ${shown} needs ${elements} FP32 elements; the request has ${data.values.length}`, Code.InvalidArgument);
      }
      for (let i = 0; i < elements; i++) {
        const value = data.values[i];
        if (typeof value !== "number") throw new ConnectError(`input "${input.name}" element ${i} is ${JSON.stringify(value)}; FP32 elements are numbers`, Code.InvalidArgument);
        features[i] = value;
      }
      break;
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

/**
 * An image model's input sent as encoded images: a BYTES input of its image input's name, of
 * shape [N] or [N, 1], each element a whole PNG, JPEG or WebP file (REST JSON: base64 text).
 * Undefined when the request sends the float tensor itself (or the model takes no images).
 */
function encodedImagesOf(loaded: LoadedVersion, inputs: readonly InferInput[]): Uint8Array[] | undefined {
  const image = loaded.image;
  if (image === undefined || inputs.length !== 1 || inputs[0].datatype !== "BYTES" || inputs[0].name !== image.preprocessor.input.name) return undefined;
  const input = inputs[0];
  const label = `input "${input.name}"`;
  const shape = input.shape.map(Number);
  if (!(shape.length === 1 || (shape.length === 2 && shape[1] === 1)) || !(shape[0] >= 1 && shape[0] <= maxImagesPerRequest)) {
    throw new ConnectError(`${label} of encoded images has shape [${shape.join(", ")}]; it takes [N] or [N, 1] images, 1 to ${maxImagesPerRequest}`, Code.InvalidArgument);
  }
  const count = shape[0];
  const { data } = input;
  let images: Uint8Array[];
  switch (data.kind) {
    case "raw":
      images = splitBytesElements(label, count, data.bytes);
      break;
    case "typed":
      if (data.field !== "bytes_contents") throw new ConnectError(`${label} is BYTES: its contents go in bytes_contents, not ${data.field}`, Code.InvalidArgument);
      images = Array.from(data.values as ArrayLike<Uint8Array>);
      break;
    case "json":
      if (!data.values.every((v) => typeof v === "string")) throw new ConnectError(`${label}: in JSON, each image is its file's bytes as base64 text`, Code.InvalidArgument);
      images = (data.values as string[]).map((text) => Buffer.from(text, "base64"));
      break;
    case "none":
      throw new ConnectError(`${label} has no contents: send the images' bytes`, Code.InvalidArgument);
  }
  if (images.length !== count) throw new ConnectError(`${label} has shape [${shape.join(", ")}] but ${images.length} images`, Code.InvalidArgument);
  return images;
}

/**
 * Every input of a tensor model, checked in full against its graph before any contents are
 * read: each named once, its datatype, its rank and fixed dimensions, an element count within
 * bounds (computed without overflow), and contents of exactly that count.
 */
function readTensors(loaded: LoadedVersion, inputs: readonly InferInput[]): Record<string, HostTensor> {
  const where = `model "${loaded.name}" v${loaded.version}`;
  const specs = loaded.signature.inputs;
  const names = specs.map((s) => s.name);
  const feeds: Record<string, HostTensor> = {};
  for (const input of inputs) {
    const spec = specs.find((s) => s.name === input.name);
    if (spec === undefined) throw new ConnectError(`${where} has no input "${input.name}"; its inputs: ${names.join(", ")}`, Code.InvalidArgument);
    if (input.name in feeds) throw new ConnectError(`input "${input.name}" is given twice`, Code.InvalidArgument);
    feeds[input.name] = readTensor(where, spec, input);
  }
  const missing = names.filter((n) => !(n in feeds));
  if (missing.length > 0) throw new ConnectError(`${where} takes inputs ${names.join(", ")}; the request lacks ${missing.join(", ")}`, Code.InvalidArgument);
  // Inputs batched along their first dimension must agree on it (requests are joined along it).
  if (batchable(loaded.signature)) {
    const firsts = new Set(Object.values(feeds).map((t) => t.dims[0]));
    if (firsts.size > 1) {
      throw new ConnectError(`the inputs of ${where} disagree on their first (batch) dimension: ${Object.entries(feeds).map(([n, t]) => `${n} has ${t.dims[0]}`).join(", ")}`, Code.InvalidArgument);
    }
  }
  return feeds;
}

function readTensor(where: string, spec: ModelTensorSpec, input: InferInput): HostTensor {
  const datatype = oipDatatypeOf[spec.dtype];
  const label = `input "${input.name}"`;
  if (input.datatype !== datatype) {
    const known = dtypeOfOipDatatype.has(input.datatype) ? "" : " (not a datatype of the protocol)";
    throw new ConnectError(`${label} of ${where} is ${datatype}${shapeText(spec.shape)}; the request says ${input.datatype || "(no datatype)"}${known}`, Code.InvalidArgument);
  }
  const shape = input.shape.map((d) => BigInt(d));
  const shown = `[${shape.join(", ")}]`;
  if (shape.length !== spec.shape.length) {
    throw new ConnectError(`${label} has shape ${shown}; ${where} takes ${shapeText(spec.shape)} (${spec.shape.length} dimensions)`, Code.InvalidArgument);
  }
  let count = 1n;
  for (const [i, d] of shape.entries()) {
    if (d < 0n) throw new ConnectError(`${label} has shape ${shown}: dimensions cannot be negative`, Code.InvalidArgument);
    if (spec.shape[i] >= 0 && d !== BigInt(spec.shape[i])) {
      throw new ConnectError(`${label} has shape ${shown}; ${where} takes ${shapeText(spec.shape)}: dimension ${i} must be ${spec.shape[i]}`, Code.InvalidArgument);
    }
    count *= d;
    if (count > BigInt(maxInputElements)) {
      throw new ConnectError(`${label} has shape ${shown}: more than ${maxInputElements} elements in one input`, Code.ResourceExhausted);
    }
  }
  const elements = Number(count);
  const dims = shape.map(Number);
  const { data } = input;
  switch (data.kind) {
    case "raw":
      return { dtype: spec.dtype, dims, data: fromRaw(label, spec.dtype, elements, data.bytes) };
    case "typed": {
      const field = typedFieldOf[datatype];
      if (field === undefined) throw new ConnectError(`${label} is ${datatype}, which travels as raw contents only`, Code.InvalidArgument);
      if (data.field !== field) throw new ConnectError(`${label} is ${datatype}: its contents go in ${field}, not ${data.field}`, Code.InvalidArgument);
      return { dtype: spec.dtype, dims, data: fromValues(label, spec.dtype, elements, data.values) };
    }
    case "json":
      return { dtype: spec.dtype, dims, data: fromValues(label, spec.dtype, elements, data.values) };
    case "none":
      throw new ConnectError(`${label} has no contents: send ${datatype} contents or raw contents`, Code.InvalidArgument);
  }
}

/** Raw contents: little-endian elements, or BYTES as 4-byte little-endian lengths each followed by its bytes. */
function fromRaw(label: string, dtype: Dtype, elements: number, bytes: Uint8Array): TensorData {
  if (dtype === "string") return parseBytesElements(label, elements, bytes);
  const size = elementBytes[dtype];
  if (bytes.length !== elements * size) {
    throw new ConnectError(`${label} needs ${elements * size} bytes of raw ${oipDatatypeOf[dtype]} (${elements} elements); the request has ${bytes.length}`, Code.InvalidArgument);
  }
  const data = allocate(dtype, elements) as Exclude<TensorData, string[]>;
  // A copy: raw bytes need not be aligned to the element size.
  new Uint8Array(data.buffer, data.byteOffset, data.byteLength).set(bytes);
  if (dtype === "bool") for (let i = 0; i < elements; i++) if ((data as Uint8Array)[i] > 1) (data as Uint8Array)[i] = 1;
  return data;
}

function parseBytesElements(label: string, elements: number, bytes: Uint8Array): string[] {
  const values = splitBytesElements(label, elements, bytes, maxStringBytes);
  return values.map((value, i) => textOf(label, i, value));
}

/** Raw BYTES split into their elements: 4-byte little-endian lengths, each followed by its bytes. */
function splitBytesElements(label: string, elements: number, bytes: Uint8Array, maxElementBytes = Number.POSITIVE_INFINITY): Uint8Array[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const values: Uint8Array[] = [];
  let offset = 0;
  while (offset < bytes.length) {
    if (values.length === elements) throw new ConnectError(`${label}: raw BYTES hold more than the shape's ${elements} elements`, Code.InvalidArgument);
    if (offset + 4 > bytes.length) throw new ConnectError(`${label}: raw BYTES element ${values.length} has a broken length prefix (${bytes.length - offset} bytes left, 4 needed)`, Code.InvalidArgument);
    const length = view.getUint32(offset, true);
    if (length > maxElementBytes) throw new ConnectError(`${label}: BYTES element ${values.length} has ${length} bytes; at most ${maxElementBytes}`, Code.ResourceExhausted);
    if (offset + 4 + length > bytes.length) {
      throw new ConnectError(`${label}: raw BYTES element ${values.length} says ${length} bytes, ${bytes.length - offset - 4} are left`, Code.InvalidArgument);
    }
    values.push(bytes.subarray(offset + 4, offset + 4 + length));
    offset += 4 + length;
  }
  if (values.length !== elements) throw new ConnectError(`${label} needs ${elements} BYTES elements; the raw contents hold ${values.length}`, Code.InvalidArgument);
  return values;
}

const integerRange: Partial<Record<Dtype, readonly [number, number]>> = {
  int8: [-128, 127],
  int16: [-32768, 32767],
  int32: [-2147483648, 2147483647],
  uint8: [0, 255],
  uint16: [0, 65535],
  uint32: [0, 4294967295],
};

/** Typed contents or JSON elements, each checked against the element type. */
function fromValues(label: string, dtype: Dtype, elements: number, values: ArrayLike<unknown>): TensorData {
  if (values.length !== elements) {
    throw new ConnectError(`${label} needs ${elements} ${oipDatatypeOf[dtype]} elements; the request has ${values.length}`, Code.InvalidArgument);
  }
  const data = allocate(dtype, elements);
  const bad = (i: number, what: string) => new ConnectError(`${label} element ${i} is ${String(values[i])}; ${oipDatatypeOf[dtype]} elements are ${what}`, Code.InvalidArgument);
  const range = integerRange[dtype];
  for (let i = 0; i < elements; i++) {
    const v = values[i];
    switch (dtype) {
      case "string":
        if (typeof v === "string") {
          if (v.includes("\0")) throw new ConnectError(`${label}: BYTES element ${i} holds a NUL character, which ONNX string tensors cannot carry`, Code.InvalidArgument);
          (data as string[])[i] = v;
        } else if (v instanceof Uint8Array) {
          if (v.length > maxStringBytes) throw new ConnectError(`${label}: BYTES element ${i} has ${v.length} bytes; at most ${maxStringBytes}`, Code.ResourceExhausted);
          (data as string[])[i] = textOf(label, i, v);
        } else throw bad(i, "strings");
        break;
      case "bool":
        if (typeof v !== "boolean") throw bad(i, "true or false");
        (data as Uint8Array)[i] = v ? 1 : 0;
        break;
      case "int64":
      case "uint64": {
        // JSON numbers are doubles: past 2^53 they are not the integers that were sent.
        const n = typeof v === "bigint" ? v : typeof v === "number" && Number.isSafeInteger(v) ? BigInt(v) : undefined;
        if (n === undefined) throw bad(i, "whole numbers (in JSON, within ±(2^53 - 1): send larger ones as binary data)");
        if (dtype === "uint64" ? n < 0n || n >= 2n ** 64n : n < -(2n ** 63n) || n >= 2n ** 63n) throw bad(i, `within the ${oipDatatypeOf[dtype]} range`);
        (data as BigInt64Array | BigUint64Array)[i] = n;
        break;
      }
      case "float16":
      case "float32":
      case "float64":
        if (typeof v !== "number") throw bad(i, "numbers");
        (data as Float32Array)[i] = dtype === "float16" ? numberToHalf(v) : v;
        break;
      default:
        if (typeof v !== "number" || !Number.isInteger(v)) throw bad(i, "whole numbers");
        if (range !== undefined && (v < range[0] || v > range[1])) throw bad(i, `from ${range[0]} to ${range[1]}`);
        (data as Int32Array)[i] = v;
    }
  }
  return data;
}

function classifierOutput(loaded: LoadedVersion, name: string, probabilities: Float32Array, rows: number, outlierScores: Float32Array | undefined): InferOutput {
  const labels = loaded.requireClassifier().metadata.labels;
  const classes = labels.length;
  if (name === outlierScoreOutput || name === isOutlierOutput) {
    // Named only for a scored version (requestedOutputs checks against tensorsOf).
    const scores = outlierScores ?? new Float32Array(rows);
    return name === outlierScoreOutput
      ? { name, datatype: "FP32", shape: [rows], data: scores }
      : { name, datatype: "BOOL", shape: [rows], data: Uint8Array.from(scores, (v) => (v > 0 ? 1 : 0)) };
  }
  if (name === labelOutput || name === labelIndexOutput) {
    const best = new BigInt64Array(rows);
    for (let r = 0; r < rows; r++) {
      let top = 0;
      for (let c = 1; c < classes; c++) if (probabilities[r * classes + c] > probabilities[r * classes + top]) top = c;
      best[r] = BigInt(top);
    }
    return name === labelOutput
      ? { name, datatype: "BYTES", shape: [rows], data: Array.from(best, (i) => labels[Number(i)]) }
      : { name, datatype: "INT64", shape: [rows], data: best };
  }
  return { name, datatype: "FP32", shape: [rows, classes], data: probabilities };
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
  if (Array.isArray(out.data)) return serializeBytes(out.data);
  const data = out.data as Exclude<TensorData, string[]>;
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** An output's elements as JSON values: numbers (FP16 decoded, 64-bit integers as numbers), booleans, strings. */
export function jsonValuesOf(out: InferOutput): unknown[] {
  if (Array.isArray(out.data)) return [...out.data];
  if (out.datatype === "BOOL") return Array.from(out.data as Uint8Array, (v) => v !== 0);
  if (out.datatype === "FP16") return Array.from(out.data as Uint16Array, halfToNumber);
  if (out.data instanceof BigInt64Array || out.data instanceof BigUint64Array) return Array.from(out.data, Number);
  return Array.from(out.data as Float32Array);
}

/** An input's contents as key parts: raw bytes as they are, typed and JSON values as canonical text. */
function dataParts(data: InputData): (Uint8Array | string)[] {
  const text = (values: ArrayLike<unknown>) =>
    JSON.stringify(Array.from(values, (v) => (typeof v === "bigint" ? `${v}n` : v instanceof Uint8Array ? Buffer.from(v).toString("base64") : v)));
  switch (data.kind) {
    case "raw":
      return [data.bytes];
    case "typed":
      return [data.field, text(data.values)];
    case "json":
      return [text(data.values)];
    case "none":
      return [];
  }
}

/** Outputs as bytes for the shared cache: a 4-byte length, a JSON header (name, datatype, shape, size), then each output's raw bytes. */
function encodeOutputs(outputs: readonly InferOutput[]): Uint8Array {
  const payloads = outputs.map(rawBytesOf);
  const header = Buffer.from(JSON.stringify(outputs.map((o, i) => ({ name: o.name, datatype: o.datatype, shape: o.shape, size: payloads[i].length }))));
  const length = Buffer.alloc(4);
  length.writeUInt32LE(header.length);
  return Buffer.concat([length, header, ...payloads]);
}

function decodeOutputs(bytes: Uint8Array): InferOutput[] {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = buffer.readUInt32LE(0);
  const header = JSON.parse(buffer.subarray(4, 4 + headerLength).toString("utf8")) as { name: string; datatype: string; shape: number[]; size: number }[];
  let offset = 4 + headerLength;
  return header.map(({ name, datatype, shape, size }) => {
    const raw = buffer.subarray(offset, offset + size);
    offset += size;
    const elements = shape.reduce((a, b) => a * b, 1);
    const dtype = dtypeOfOipDatatype.get(datatype)!;
    const data = dtype === "string" ? splitBytesElements(`output "${name}"`, elements, raw).map((b) => Buffer.from(b).toString("utf8")) : fromRaw(`output "${name}"`, dtype, elements, raw);
    return { name, datatype, shape, data };
  });
}
