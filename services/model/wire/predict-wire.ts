import { endianness } from "node:os";
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import type { ConnectError } from "@connectrpc/connect";
import { BadRequestSchema } from "../../../gen/google/rpc/error_details_pb.js";
import {
  ModelStatusSchema,
  type InvalidRows,
  type ModelPredictionSchema,
  type ModelRef,
  type PredictionSchema,
  type PredictModelsRequest,
  type PredictModelsResponseSchema,
  type PredictRequest,
  type PredictResponseSchema,
  type Row,
} from "../../../gen/mlmesh/predictor/v1/predictor_pb.js";
import type { PredictLabelRequest } from "../../../gen/mlmesh/proxy/v1/proxy_pb.js";
import type { MethodWire } from "../../runtime/serve/registration.js";

/*
 * Hand-written wire codecs for the hottest messages of the Predictor's contract: Predict's
 * request and response, and the Proxy's PredictLabel request (the same rows). protobuf-es
 * decodes and encodes by reflection, one message object per row, and protovalidate then walks
 * every value; at 100 rows per request that was most of the Predictor's CPU (docs/benchmarks.md).
 *
 * The rules, which test/wire.test.ts checks against protobuf-es and protovalidate:
 *  - a request is decoded here only in its canonical form (packed values, no unknown fields,
 *    an ASCII model name) and only when it satisfies every buf.validate rule of its .proto;
 *    anything else returns undefined, and protobuf-es and protovalidate decide (their answer
 *    and error messages stand);
 *  - rows are packed into one Float32Array as they are read: the tensor the model runs on;
 *    the per-row messages a handler may still ask for are made on first use;
 *  - a response is encoded byte for byte as protobuf-es would encode it.
 */

/** Rows packed row-major, as read from the wire: row i is features[offsets[i]..offsets[i+1]). */
export interface PackedRows {
  readonly features: Float32Array;
  readonly offsets: Int32Array;
  readonly rowCount: number;
}

/** The model-name rule of PredictRequest.model (predictor.proto): ASCII, so checked with a RegExp (see below). */
const modelPattern = /^[A-Za-z0-9][A-Za-z0-9._-]*(@[a-z][a-z0-9_-]*)?$/;
const maxRows = 10_000;
const maxValuesPerRow = 1024;
const maxModelLength = 128;
/** The highest InvalidRows value (INVALID_ROWS_SKIP). */
const maxInvalidRows = 2;
const littleEndian = endianness() === "LE";

/**
 * The row fields (3 to 7) of a PredictRequest or PredictModelsRequest as decoded here: rows
 * packed whichever way they came (Row messages, or packed_values with row_width); `rows` and
 * `packedValues` read as protobuf-es would have decoded them, made on first use.
 */
abstract class DecodedRows {
  #rows: Row[] | undefined;
  constructor(
    readonly packed: PackedRows,
    readonly invalidRows: InvalidRows,
    /** The row width of packed_values; 0 when the rows came as Row messages. */
    readonly rowWidth: number,
    readonly packedResponse: boolean,
  ) {}
  get rows(): Row[] {
    return (this.#rows ??= this.rowWidth === 0 ? unpackRows(this.packed) : []);
  }
  get packedValues(): number[] {
    return this.rowWidth === 0 ? [] : Array.from(this.packed.features);
  }
}

/** A PredictRequest decoded by decodePredictRequest. */
class DecodedPredictRequest extends DecodedRows {
  readonly $typeName = "mlmesh.predictor.v1.PredictRequest" as const;
  constructor(
    readonly model: string,
    readonly version: number,
    ...rows: ConstructorParameters<typeof DecodedRows>
  ) {
    super(...rows);
  }
}

/** A PredictModelsRequest decoded by decodePredictModelsRequest. */
class DecodedPredictModelsRequest extends DecodedRows {
  readonly $typeName = "mlmesh.predictor.v1.PredictModelsRequest" as const;
  constructor(
    readonly models: ModelRef[],
    ...rows: ConstructorParameters<typeof DecodedRows>
  ) {
    super(...rows);
  }
}

/** A PredictLabelRequest decoded by decodePredictLabelRequest. */
class DecodedPredictLabelRequest {
  readonly $typeName = "mlmesh.proxy.v1.PredictLabelRequest" as const;
  #rows: Row[] | undefined;
  constructor(readonly packed: PackedRows) {}
  get rows(): Row[] {
    return (this.#rows ??= unpackRows(this.packed));
  }
}

function unpackRows({ features, offsets, rowCount }: PackedRows): Row[] {
  const rows: Row[] = new Array(rowCount);
  for (let i = 0; i < rowCount; i++) rows[i] = { $typeName: "mlmesh.predictor.v1.Row", values: Array.from(features.subarray(offsets[i], offsets[i + 1])) };
  return rows;
}

/** The packed rows of a request: as decoded here, its packed_values, or packed from its Row messages. */
export function packedRowsOf(request: { readonly rows: readonly Pick<Row, "values">[]; readonly packedValues?: readonly number[]; readonly rowWidth?: number }): PackedRows {
  if (request instanceof DecodedRows || request instanceof DecodedPredictLabelRequest) return request.packed;
  const { packedValues, rowWidth } = request;
  if (packedValues !== undefined && packedValues.length > 0 && rowWidth) return uniformRows(Float32Array.from(packedValues), rowWidth);
  return packRows(request.rows);
}

/** The number of values of every row, or -1 when rows differ. */
export function uniformWidth({ offsets, rowCount }: PackedRows): number {
  const width = offsets[1] - offsets[0];
  for (let i = 1; i < rowCount; i++) if (offsets[i + 1] - offsets[i] !== width) return -1;
  return width;
}

/** Rows of `width` values each, over `features`. */
function uniformRows(features: Float32Array, width: number): PackedRows {
  const rowCount = features.length / width;
  const offsets = new Int32Array(rowCount + 1);
  for (let i = 1; i <= rowCount; i++) offsets[i] = i * width;
  return { features, offsets, rowCount };
}

export function packRows(rows: readonly Pick<Row, "values">[]): PackedRows {
  const offsets = new Int32Array(rows.length + 1);
  for (let i = 0; i < rows.length; i++) offsets[i + 1] = offsets[i] + rows[i].values.length;
  const features = new Float32Array(offsets[rows.length]);
  for (let i = 0; i < rows.length; i++) features.set(rows[i].values, offsets[i]);
  return { features, offsets, rowCount: rows.length };
}

/**
 * A cursor over protobuf bytes that gives up (returns -1) on anything outside the canonical
 * forms decoded here, rather than throwing: the caller then hands the bytes to protobuf-es.
 */
class Cursor {
  constructor(
    readonly bytes: Buffer,
    public pos: number,
  ) {}

  /** A varint of at most 32 bits (5 bytes), or -1. */
  varint32(end: number): number {
    let result = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      if (this.pos >= end) return -1;
      const byte = this.bytes[this.pos++];
      if (shift === 28 && byte > 0x0f) return -1;
      result += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) return result;
    }
    return -1;
  }
}

/** Field tags of the messages read here (field number << 3 | wire type). */
const lengthDelimited = 2;

/**
 * Reads repeated Row messages (field `rowField` of the outer message is handled by the caller)
 * — first their extent, then their values — into PackedRows; undefined when a row is not
 * canonical or breaks Row's rules (1..1,024 finite values).
 */
function readRows(bytes: Buffer, spans: number[]): PackedRows | undefined {
  const rowCount = spans.length / 2;
  const offsets = new Int32Array(rowCount + 1);
  const cursor = new Cursor(bytes, 0);
  // First pass: each row is one packed `values` field (field 1, length-delimited).
  const valueStarts = new Int32Array(rowCount);
  for (let i = 0; i < rowCount; i++) {
    const end = spans[2 * i + 1];
    cursor.pos = spans[2 * i];
    if (cursor.pos === end) return undefined; // an empty Row: no values
    if (cursor.varint32(end) !== ((1 << 3) | lengthDelimited)) return undefined;
    const length = cursor.varint32(end);
    if (length <= 0 || length % 4 !== 0 || cursor.pos + length !== end) return undefined;
    const count = length / 4;
    if (count > maxValuesPerRow) return undefined;
    valueStarts[i] = cursor.pos;
    offsets[i + 1] = offsets[i] + count;
  }
  const features = new Float32Array(offsets[rowCount]);
  if (littleEndian) {
    // The wire's floats are little-endian, like this machine's: copy the bytes, then check them.
    const target = new Uint8Array(features.buffer);
    for (let i = 0; i < rowCount; i++) target.set(bytes.subarray(valueStarts[i], valueStarts[i] + 4 * (offsets[i + 1] - offsets[i])), 4 * offsets[i]);
    for (let j = 0; j < features.length; j++) if (!Number.isFinite(features[j])) return undefined;
  } else {
    for (let i = 0; i < rowCount; i++) {
      let at = valueStarts[i];
      for (let j = offsets[i]; j < offsets[i + 1]; j++, at += 4) {
        const value = bytes.readFloatLE(at);
        if (!Number.isFinite(value)) return undefined;
        features[j] = value;
      }
    }
  }
  return { features, offsets, rowCount };
}

/**
 * Reads the spans of length-delimited field `field` (repeated messages) and hands the other
 * fields to `other`; returns undefined when the bytes are not canonical.
 */
function scan(bytes: Buffer, other: (field: number, wireType: number, cursor: Cursor) => boolean, rowField: number): number[] | undefined {
  const cursor = new Cursor(bytes, 0);
  const spans: number[] = [];
  const end = bytes.length;
  while (cursor.pos < end) {
    const tag = cursor.varint32(end);
    if (tag < 0) return undefined;
    const field = tag >>> 3;
    const wireType = tag & 7;
    if (field === rowField && wireType === lengthDelimited) {
      const length = cursor.varint32(end);
      if (length < 0 || cursor.pos + length > end) return undefined;
      spans.push(cursor.pos, cursor.pos + length);
      cursor.pos += length;
    } else if (!other(field, wireType, cursor)) {
      return undefined;
    }
  }
  return spans;
}

/**
 * packed_values (one packed field of `length` bytes at `start`) as rows of `width`, checked
 * against the request's rules (whole rows, 1..10,000 of them, 1..1,024 finite values each),
 * or undefined.
 */
function readPackedValues(bytes: Buffer, start: number, length: number, width: number): PackedRows | undefined {
  if (width < 1 || width > maxValuesPerRow || length === 0 || length % 4 !== 0) return undefined;
  const count = length / 4;
  if (count % width !== 0 || count / width > maxRows) return undefined;
  const features = new Float32Array(count);
  if (littleEndian) {
    new Uint8Array(features.buffer).set(bytes.subarray(start, start + length));
  } else {
    for (let j = 0; j < count; j++) features[j] = bytes.readFloatLE(start + 4 * j);
  }
  for (let j = 0; j < count; j++) if (!Number.isFinite(features[j])) return undefined;
  return uniformRows(features, width);
}

/**
 * The row fields PredictRequest and PredictModelsRequest share (3 to 7, predictor.proto) as they
 * are scanned: invalid_rows, packed_values and row_width, packed_response (rows are spans).
 */
class RowFields {
  invalidRows = 0;
  packedStart = -1;
  packedLength = 0;
  rowWidth = 0;
  packedResponse = false;

  /** Reads field `field` if it is one of the row fields, in canonical form; false otherwise. */
  read(bytes: Buffer, field: number, wireType: number, cursor: Cursor): boolean {
    const end = bytes.length;
    if (field === 4 && wireType === 0) {
      // InvalidRows: a defined value (0..2) only, as its rule says; else protobuf-es decides.
      this.invalidRows = cursor.varint32(end);
      return this.invalidRows >= 0 && this.invalidRows <= maxInvalidRows;
    }
    if (field === 5 && wireType === lengthDelimited && this.packedStart < 0) {
      // packed_values: one packed field (as protobuf-es writes it).
      this.packedLength = cursor.varint32(end);
      if (this.packedLength < 0 || cursor.pos + this.packedLength > end) return false;
      this.packedStart = cursor.pos;
      cursor.pos += this.packedLength;
      return true;
    }
    if (field === 6 && wireType === 0) {
      this.rowWidth = cursor.varint32(end);
      return this.rowWidth >= 0;
    }
    if (field === 7 && wireType === 0) {
      this.packedResponse = cursor.varint32(end) === 1;
      return this.packedResponse; // false is written as nothing: anything else is not canonical
    }
    return false;
  }

  /** The rows (Row spans, or packed_values), checked against the rules of both messages, or undefined. */
  rows(bytes: Buffer, spans: number[] | undefined): PackedRows | undefined {
    if (spans === undefined || spans.length / 2 > maxRows) return undefined;
    // Exactly one of rows and packed_values (with its row_width); anything else is protovalidate's to refuse.
    if ((spans.length > 0) === (this.packedStart >= 0)) return undefined;
    if (spans.length > 0 && this.rowWidth !== 0) return undefined;
    return this.packedStart >= 0 ? readPackedValues(bytes, this.packedStart, this.packedLength, this.rowWidth) : readRows(bytes, spans);
  }

  /** The row width of packed_values; 0 when the rows came as Row messages. */
  get packedWidth(): number {
    return this.packedStart >= 0 ? this.rowWidth : 0;
  }
}

/** An ASCII model name of at most 128 characters matching the contract's pattern, or undefined. */
function readModelName(bytes: Buffer, cursor: Cursor, end: number): string | undefined {
  const length = cursor.varint32(end);
  if (length < 1 || length > maxModelLength || cursor.pos + length > end) return undefined;
  for (let i = cursor.pos; i < cursor.pos + length; i++) if (bytes[i] >= 0x80) return undefined;
  const model = bytes.toString("latin1", cursor.pos, cursor.pos + length);
  cursor.pos += length;
  return modelPattern.test(model) ? model : undefined;
}

/** PredictRequest (predictor.proto), decoded and checked against its rules, or undefined. */
export function decodePredictRequest(bytes: Buffer): DecodedPredictRequest | undefined {
  let model: string | undefined;
  let version = 0;
  const fields = new RowFields();
  const spans = scan(
    bytes,
    (field, wireType, cursor) => {
      if (field === 1 && wireType === lengthDelimited) return (model = readModelName(bytes, cursor, bytes.length)) !== undefined;
      if (field === 2 && wireType === 0) return (version = cursor.varint32(bytes.length)) >= 0;
      return fields.read(bytes, field, wireType, cursor);
    },
    3,
  );
  if (model === undefined) return undefined;
  const packed = fields.rows(bytes, spans);
  return packed && new DecodedPredictRequest(model, version, packed, fields.invalidRows as InvalidRows, fields.packedWidth, fields.packedResponse);
}

/** The most models in one PredictModels request (its rule). */
const maxModelsPerCall = 16;

/** A ModelRef (predictor.proto) of `length` bytes at the cursor, checked against its rules, or undefined. */
function readModelRef(bytes: Buffer, cursor: Cursor, length: number): ModelRef | undefined {
  const end = cursor.pos + length;
  let model: string | undefined;
  let version = 0;
  while (cursor.pos < end) {
    const tag = cursor.varint32(end);
    if (tag === ((1 << 3) | lengthDelimited) && model === undefined) model = readModelName(bytes, cursor, end);
    else if (tag === (2 << 3) && version === 0) version = cursor.varint32(end);
    else return undefined;
    if (model === undefined || version < 0) return undefined;
  }
  return model === undefined ? undefined : { $typeName: "mlmesh.predictor.v1.ModelRef", model, version };
}

/** PredictModelsRequest (predictor.proto), decoded and checked against its rules, or undefined. */
export function decodePredictModelsRequest(bytes: Buffer): DecodedPredictModelsRequest | undefined {
  const models: ModelRef[] = [];
  const fields = new RowFields();
  const spans = scan(
    bytes,
    (field, wireType, cursor) => {
      if (field !== 1 || wireType !== lengthDelimited) return fields.read(bytes, field, wireType, cursor);
      const length = cursor.varint32(bytes.length);
      if (length < 0 || cursor.pos + length > bytes.length) return false;
      const ref = readModelRef(bytes, cursor, length);
      if (ref === undefined) return false;
      models.push(ref);
      return models.length <= maxModelsPerCall;
    },
    3,
  );
  if (models.length === 0) return undefined;
  const packed = fields.rows(bytes, spans);
  return packed && new DecodedPredictModelsRequest(models, packed, fields.invalidRows as InvalidRows, fields.packedWidth, fields.packedResponse);
}

/**
 * A message whose one field is field 1: 1..10,000 messages of one packed `values` field each
 * (1..1,024 finite floats), as Row is (PredictLabelRequest's rows; the batch service's
 * RegisterItemsRequest items have the same shape and rules), packed; or undefined.
 */
export function decodeRowList(bytes: Buffer): PackedRows | undefined {
  const spans = scan(bytes, () => false, 1);
  if (spans === undefined || spans.length === 0 || spans.length / 2 > maxRows) return undefined;
  return readRows(bytes, spans);
}

/** PredictLabelRequest (proxy.proto: repeated Row rows = 1, 1..10,000), or undefined. */
export function decodePredictLabelRequest(bytes: Buffer): DecodedPredictLabelRequest | undefined {
  const packed = decodeRowList(bytes);
  return packed && new DecodedPredictLabelRequest(packed);
}

type PredictionInit = MessageInitShape<typeof PredictionSchema>;

/**
 * A PredictResponse as the Predictor computes it: one probability per class per row, packed.
 * It reads as an ordinary PredictResponse (its predictions are made on first use, for the
 * connect-node path); encodePredictResponse writes it without them.
 */
export class PackedPredictResponse {
  #predictions: PredictionInit[] | undefined;
  constructor(
    readonly model: string,
    readonly version: number,
    readonly labels: string[],
    /** rowCount × labels.length probabilities. */
    readonly probabilities: Float32Array,
    readonly rowCount: number,
    /** Rows left out (INVALID_ROWS_SKIP); such a response is encoded by protobuf-es. */
    readonly rejectedRows?: MessageInitShape<typeof BadRequestSchema>,
    /** Per row, the outlier model's score (above 0: an outlier); unset when the version has none. */
    readonly outlierScores?: Float32Array,
    /** Answer packed_probabilities (and packed_outlier_scores) in place of predictions. */
    readonly packed = false,
  ) {}

  /** Rows [firstRow, firstRow + rowCount) of this answer (a share of a call made for several requests). */
  slice(firstRow: number, rowCount: number): PackedPredictResponse {
    const classCount = this.labels.length;
    const probabilities = this.probabilities.subarray(firstRow * classCount, (firstRow + rowCount) * classCount);
    const outliers = this.outlierScores?.subarray(firstRow, firstRow + rowCount);
    return new PackedPredictResponse(this.model, this.version, this.labels, probabilities, rowCount, this.rejectedRows, outliers, this.packed);
  }

  get packedProbabilities(): number[] {
    return this.packed ? Array.from(this.probabilities) : [];
  }

  get packedOutlierScores(): number[] {
    return this.packed && this.outlierScores ? Array.from(this.outlierScores) : [];
  }

  get predictions(): PredictionInit[] {
    if (this.packed) return [];
    if (this.#predictions) return this.#predictions;
    const classCount = this.labels.length;
    const predictions: PredictionInit[] = new Array(this.rowCount);
    for (let i = 0; i < this.rowCount; i++) {
      const row = this.probabilities.subarray(i * classCount, (i + 1) * classCount);
      const best = argmax(row);
      const score = this.outlierScores?.[i];
      predictions[i] = {
        probabilities: Array.from(row),
        label: this.labels[best],
        labelIndex: best,
        probability: row[best],
        outlier: score === undefined ? undefined : { score, isOutlier: score > 0 },
      };
    }
    return (this.#predictions = predictions);
  }
}

/** The index of the largest value (the first of equals). */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let c = 1; c < values.length; c++) if (values[c] > values[best]) best = c;
  return best;
}

/** Bytes of a non-negative integer as a protobuf varint. */
export function varintSize(value: number): number {
  let size = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 128);
    size++;
  }
  return size;
}

function writeVarint(out: Buffer, pos: number, value: number): number {
  while (value >= 0x80) {
    out[pos++] = (value & 0x7f) | 0x80;
    value = Math.floor(value / 128);
  }
  out[pos++] = value;
  return pos;
}

/**
 * PredictResponse bytes, as protobuf-es writes them: fields in number order, proto3 zero
 * values left out (an empty string, version 0, label_index 0, probability +0 but not -0), every repeated
 * string kept, probabilities packed.
 */
export function encodePredictResponse(response: PackedPredictResponse): Buffer {
  if (response.packed) return encodePackedPredictResponse(response);
  const { model, version, labels, probabilities, rowCount, outlierScores } = response;
  const classCount = labels.length;
  const labelBytes = labels.map((label) => Buffer.from(label, "utf8"));
  const modelBytes = Buffer.byteLength(model, "utf8");
  const best = new Int32Array(rowCount);
  const rowSizes = new Int32Array(rowCount);
  const probabilitiesSize = classCount === 0 ? 0 : 1 + varintSize(4 * classCount) + 4 * classCount;
  let size = modelAndVersionSize(modelBytes, version);
  for (const label of labelBytes) size += 1 + varintSize(label.length) + label.length;
  for (let i = 0; i < rowCount; i++) {
    const row = probabilities.subarray(i * classCount, (i + 1) * classCount);
    const b = argmax(row);
    best[i] = b;
    const label = labelBytes[b];
    const rowSize =
      probabilitiesSize +
      (label !== undefined && label.length > 0 ? 1 + varintSize(label.length) + label.length : 0) +
      (b !== 0 ? 1 + varintSize(b) : 0) +
      (classCount > 0 && !Object.is(row[b], 0) ? 5 : 0) +
      (outlierScores === undefined ? 0 : 2 + outlierSize(outlierScores[i]));
    rowSizes[i] = rowSize;
    size += 1 + varintSize(rowSize) + rowSize;
  }
  const out = Buffer.allocUnsafe(size);
  let pos = writeLabels(out, writeModelAndVersion(out, model, modelBytes, version), labelBytes);
  for (let i = 0; i < rowCount; i++) {
    out[pos++] = 0x22;
    pos = writeVarint(out, pos, rowSizes[i]);
    const first = i * classCount;
    if (classCount > 0) {
      out[pos++] = 0x0a;
      pos = writeVarint(out, pos, 4 * classCount);
      for (let c = 0; c < classCount; c++) pos = out.writeFloatLE(probabilities[first + c], pos);
    }
    const b = best[i];
    const label = labelBytes[b];
    if (label !== undefined && label.length > 0) {
      out[pos++] = 0x12;
      pos = writeVarint(out, pos, label.length);
      pos += label.copy(out, pos);
    }
    if (b !== 0) {
      out[pos++] = 0x18;
      pos = writeVarint(out, pos, b);
    }
    if (classCount > 0 && !Object.is(probabilities[first + b], 0)) {
      out[pos++] = 0x25;
      pos = out.writeFloatLE(probabilities[first + b], pos);
    }
    if (outlierScores !== undefined) {
      // Field 5, OutlierScore: score (1, float) unless zero, is_outlier (2, bool) when true.
      const score = outlierScores[i];
      out[pos++] = 0x2a;
      out[pos++] = outlierSize(score);
      if (!Object.is(score, 0)) {
        out[pos++] = 0x0d;
        pos = out.writeFloatLE(score, pos);
      }
      if (score > 0) {
        out[pos++] = 0x10;
        out[pos++] = 1;
      }
    }
  }
  return out;
}

/** A packed PredictResponse's bytes: model, version, labels, packed_probabilities (6), packed_outlier_scores (7). */
function encodePackedPredictResponse(response: PackedPredictResponse): Buffer {
  const { model, version, labels, probabilities, outlierScores } = response;
  const labelBytes = labels.map((label) => Buffer.from(label, "utf8"));
  const modelBytes = Buffer.byteLength(model, "utf8");
  const packedSize = (values: Float32Array | undefined) => (values === undefined || values.length === 0 ? 0 : 1 + varintSize(4 * values.length) + 4 * values.length);
  let size = modelAndVersionSize(modelBytes, version) + packedSize(probabilities) + packedSize(outlierScores);
  for (const label of labelBytes) size += 1 + varintSize(label.length) + label.length;
  const out = Buffer.allocUnsafe(size);
  let pos = writeLabels(out, writeModelAndVersion(out, model, modelBytes, version), labelBytes);
  const writePacked = (tag: number, values: Float32Array | undefined) => {
    if (values === undefined || values.length === 0) return;
    out[pos++] = tag;
    pos = writeVarint(out, pos, 4 * values.length);
    if (littleEndian) {
      pos += Buffer.from(values.buffer, values.byteOffset, 4 * values.length).copy(out, pos);
    } else {
      for (const value of values) pos = out.writeFloatLE(value, pos);
    }
  };
  writePacked(0x32, probabilities);
  writePacked(0x3a, outlierScores);
  return out;
}

/** Bytes of an OutlierScore message's fields for `score`. */
function outlierSize(score: number): number {
  return (Object.is(score, 0) ? 0 : 5) + (score > 0 ? 2 : 0);
}

/**
 * PredictRequest bytes for `model` and `version` over the rows of several packed requests, in
 * order, as protobuf-es writes them (each row one Row message with its values packed).
 */
export function encodePredictRequest(model: string, version: number, parts: readonly PackedRows[]): Buffer {
  const modelBytes = Buffer.byteLength(model, "utf8");
  const out = Buffer.allocUnsafe(modelAndVersionSize(modelBytes, version) + rowMessagesSize(parts));
  writeRowMessages(out, writeModelAndVersion(out, model, modelBytes, version), parts);
  return out;
}

/** Bytes of the rows of `parts` as Row messages (field 3 of PredictRequest and PredictModelsRequest). */
function rowMessagesSize(parts: readonly PackedRows[]): number {
  let size = 0;
  for (const { offsets, rowCount } of parts) {
    for (let i = 0; i < rowCount; i++) {
      const valueBytes = 4 * (offsets[i + 1] - offsets[i]);
      size += fieldSize(valueBytes > 0 ? fieldSize(valueBytes) : 0);
    }
  }
  return size;
}

/** Writes the rows of `parts` as Row messages at `pos`; returns the next position. */
function writeRowMessages(out: Buffer, pos: number, parts: readonly PackedRows[]): number {
  for (const { features, offsets, rowCount } of parts) {
    for (let i = 0; i < rowCount; i++) {
      const valueBytes = 4 * (offsets[i + 1] - offsets[i]);
      out[pos++] = 0x1a;
      pos = writeVarint(out, pos, valueBytes > 0 ? fieldSize(valueBytes) : 0);
      if (valueBytes === 0) continue;
      out[pos++] = 0x0a;
      pos = writeVarint(out, pos, valueBytes);
      for (let j = offsets[i]; j < offsets[i + 1]; j++) pos = out.writeFloatLE(features[j], pos);
    }
  }
  return pos;
}

/** One model's part of a PredictModels answer: the model as asked, and its answer or its failure. */
export interface ModelPart {
  readonly model: string;
  readonly version: number;
  readonly response?: PackedPredictResponse;
  readonly error?: ConnectError;
}

type ModelPredictionInit = MessageInitShape<typeof ModelPredictionSchema>;

/** A PredictModelsResponse as the Predictor computes it; it reads as the message (connect-node path). */
export class PredictModelsAnswer {
  constructor(readonly parts: readonly ModelPart[]) {}

  get predictions(): ModelPredictionInit[] {
    return this.parts.map(({ model, version, response, error }) => ({ model: { model, version }, status: modelStatusOf(error), response }));
  }
}

/** A ModelStatus: OK, or an error's code, message and bad rows (its google.rpc.BadRequest details). */
function modelStatusOf(error: ConnectError | undefined): MessageInitShape<typeof ModelStatusSchema> {
  if (error === undefined) return { code: 0, message: "" };
  const violations = error.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
  return { code: error.code as number, message: error.rawMessage, badRequest: violations.length > 0 ? { fieldViolations: violations } : undefined };
}

/**
 * PredictModelsResponse bytes, as protobuf-es writes them; undefined when a model's response
 * lists rejected rows (left to protobuf-es, as for Predict).
 */
export function encodePredictModelsResponse(answer: PredictModelsAnswer): Buffer | undefined {
  if (answer.parts.some((part) => part.response?.rejectedRows !== undefined)) return undefined;
  const chunks: Buffer[] = [];
  for (const part of answer.parts) {
    const ref = modelRefBytes(part.model, part.version);
    const status = part.error === undefined ? emptyBytes : toBinary(ModelStatusSchema, create(ModelStatusSchema, modelStatusOf(part.error)));
    const response = part.response === undefined ? undefined : encodePredictResponse(part.response);
    const size = fieldSize(ref.length) + fieldSize(status.length) + (response === undefined ? 0 : fieldSize(response.length));
    const out = Buffer.allocUnsafe(fieldSize(size));
    let pos = 0;
    out[pos++] = 0x0a; // predictions (1)
    pos = writeVarint(out, pos, size);
    out[pos++] = 0x0a; // model (1)
    pos = writeVarint(out, pos, ref.length);
    pos += ref.copy(out, pos);
    out[pos++] = 0x12; // status (2)
    pos = writeVarint(out, pos, status.length);
    pos += Buffer.from(status.buffer, status.byteOffset, status.length).copy(out, pos);
    if (response !== undefined) {
      out[pos++] = 0x1a; // response (3)
      pos = writeVarint(out, pos, response.length);
      response.copy(out, pos);
    }
    chunks.push(out);
  }
  return Buffer.concat(chunks);
}

const emptyBytes = new Uint8Array(0);

/** Bytes of a length-delimited field of `length` bytes (a tag of one byte). */
function fieldSize(length: number): number {
  return 1 + varintSize(length) + length;
}

/**
 * PredictModelsRequest bytes for the models over the rows of several requests, in order, as Row
 * messages (so that a Predictor's answer about a row reads as it would for the caller's own
 * rows), answered packed.
 */
export function encodePredictModelsRequest(models: readonly { readonly model: string; readonly version: number }[], parts: readonly PackedRows[]): Buffer {
  const refs = models.map(({ model, version }) => modelRefBytes(model, version));
  let size = rowMessagesSize(parts) + 2; // and packed_response (7) = true
  for (const ref of refs) size += fieldSize(ref.length);
  const out = Buffer.allocUnsafe(size);
  let pos = 0;
  for (const ref of refs) {
    out[pos++] = 0x0a;
    pos = writeVarint(out, pos, ref.length);
    pos += ref.copy(out, pos);
  }
  pos = writeRowMessages(out, pos, parts);
  out[pos++] = 0x38;
  out[pos++] = 1;
  return out;
}

/** Predict's codecs for the native gRPC path (runtime/serve/registration.ts: MethodWire). */
export const predictWire: MethodWire = {
  decodeRequest: decodePredictRequest,
  encodeResponse: (response) => (response instanceof PackedPredictResponse && response.rejectedRows === undefined ? encodePredictResponse(response) : undefined),
};

/** PredictModels' codecs for the native gRPC path. */
export const predictModelsWire: MethodWire = {
  decodeRequest: decodePredictModelsRequest,
  encodeResponse: (response) => (response instanceof PredictModelsAnswer ? encodePredictModelsResponse(response) : undefined),
};

/** PredictLabel's request codec (its response is small and left to protobuf-es). */
export const predictLabelWire: MethodWire = {
  decodeRequest: decodePredictLabelRequest,
  encodeResponse: () => undefined,
};

// Type checks: the decoded messages read as the generated message types.
void ((r: PackedPredictResponse): MessageInitShape<typeof PredictResponseSchema> => r);
void ((r: DecodedPredictRequest): Pick<PredictRequest, "$typeName" | "model" | "version" | "rows" | "invalidRows" | "packedValues" | "rowWidth" | "packedResponse"> => r);
void ((r: DecodedPredictModelsRequest): Pick<PredictModelsRequest, "$typeName" | "models" | "rows" | "invalidRows" | "packedValues" | "rowWidth" | "packedResponse"> => r);
void ((r: PredictModelsAnswer): MessageInitShape<typeof PredictModelsResponseSchema> => r);
void ((r: DecodedPredictLabelRequest): Pick<PredictLabelRequest, "$typeName" | "rows"> => r);

/** A ModelRef's bytes: fields 1 (model) and 2 (version), as in PredictRequest. */
function modelRefBytes(model: string, version: number): Buffer {
  const modelBytes = Buffer.byteLength(model, "utf8");
  const ref = Buffer.allocUnsafe(modelAndVersionSize(modelBytes, version));
  writeModelAndVersion(ref, model, modelBytes, version);
  return ref;
}

/** Writes the labels (field 3 of PredictResponse) at `pos`; returns the next position. */
function writeLabels(out: Buffer, pos: number, labelBytes: readonly Buffer[]): number {
  for (const label of labelBytes) {
    out[pos++] = 0x1a;
    pos = writeVarint(out, pos, label.length);
    pos += label.copy(out, pos);
  }
  return pos;
}

/** Bytes of fields 1 (model) and 2 (version), which PredictRequest and PredictResponse share. */
function modelAndVersionSize(modelBytes: number, version: number): number {
  return (modelBytes > 0 ? 1 + varintSize(modelBytes) + modelBytes : 0) + (version !== 0 ? 1 + varintSize(version) : 0);
}

/** Writes fields 1 (model) and 2 (version) at the start of `out`; returns the next position. */
function writeModelAndVersion(out: Buffer, model: string, modelBytes: number, version: number): number {
  let pos = 0;
  if (modelBytes > 0) {
    out[pos++] = 0x0a;
    pos = writeVarint(out, pos, modelBytes);
    pos += out.write(model, pos, "utf8");
  }
  if (version !== 0) {
    out[pos++] = 0x10;
    pos = writeVarint(out, pos, version);
  }
  return pos;
}
