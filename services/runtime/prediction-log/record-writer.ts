import { endianness } from "node:os";

/*
 * Encodes mlmesh.monitor.v1.PredictionRecord (proto/mlmesh/monitor/v1/monitor.proto) by hand,
 * from the arrays a service already holds: the prediction log writes one record per call on the
 * serving path, where building protobuf-es messages cost more than the call's own encoding.
 * test/prediction-log.test.ts decodes what this writes with protobuf-es, field by field.
 */

/** PredictionRecord.source (RecordSource). */
export const RecordSource = { predictor: 1, proxy: 2, batch: 3 } as const;

/** A tensor as the record keeps it (monitor.proto Tensor): raw little-endian contents. */
export interface RecordTensor {
  readonly name: string;
  /** The Open Inference Protocol datatype name (FP32, INT64, BYTES, ...). */
  readonly datatype: string;
  readonly shape: readonly number[];
  /** The elements as the protocol's raw contents; dropped from a truncated record. */
  readonly contents: Uint8Array;
}

/** What a service knows of one prediction. */
export interface RecordFacts {
  readonly requestId: string;
  readonly parentRequestId?: string;
  readonly traceId?: string;
  readonly caller?: string;
  readonly source: (typeof RecordSource)[keyof typeof RecordSource];
  readonly api: string;
  readonly model: string;
  readonly version: number;
  readonly alias?: string;
  readonly arm?: string;
  /** Epoch milliseconds of the answer. */
  readonly timeMs: number;
  readonly latencyMs: number;
  /** The gRPC status code (0: OK) and, when not OK, its message. */
  readonly status: number;
  readonly error?: string;
  readonly rowCount: number;
  /** A classifier's rows, packed row-major: rowCount x width. */
  readonly rows?: { readonly width: number; readonly values: Float32Array };
  /** A classifier's answer: rowCount x labels.length probabilities. */
  readonly classification?: { readonly labels: readonly string[]; readonly probabilities: Float32Array };
  readonly inputTensors?: readonly RecordTensor[];
  readonly outputTensors?: readonly RecordTensor[];
  readonly images?: readonly { readonly sha256: string; readonly sizeBytes: number }[];
  /** Per row: the outlier model's score (above 0: an outlier). */
  readonly outlierScores?: Float32Array;
  /** A shadow's record: how its answer compared with the primary's (monitor.proto ShadowComparison). */
  readonly shadow?: {
    readonly primaryVersion: number;
    readonly rows: number;
    readonly agreeingRows: number;
    /** NaN: not comparable (left out). */
    readonly meanAbsDifference: number;
    /** Shadow minus primary; may be negative. */
    readonly latencyDifferenceMs: number;
  };
}

const lengthDelimited = 2;

/** Scratch for writing a float's four bytes one by one (little-endian on every host). */
const floatScratch = new Float32Array(1);
const floatBytes = new Uint8Array(floatScratch.buffer);
const floatByteOrder = endianness() === "LE" ? [0, 1, 2, 3] : [3, 2, 1, 0];
const [f0, f1, f2, f3] = floatByteOrder;
/** Above this many floats, one bulk copy costs less than writing them one by one. */
const bulkFloats = 64;

/**
 * A growable protobuf writer. A nested message (begin .. end) reserves room for its length and
 * moves its bytes when the length needs more or less room (rare: the reservation fits the
 * usual size). Written without closures or views: the prediction log runs it once per call.
 */
export class ProtoWriter {
  at = 0;

  /** Writes into `buffer` (from its start), growing past it when it is full. */
  constructor(public buffer: Buffer) {}

  ensure(more: number): void {
    if (this.at + more <= this.buffer.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.at + more));
    this.buffer.copy(grown, 0, 0, this.at);
    this.buffer = grown;
  }

  varint(value: number): void {
    this.ensure(10);
    const b = this.buffer;
    while (value > 0x7f) {
      b[this.at++] = (value & 0x7f) | 0x80;
      value = Math.floor(value / 128);
    }
    b[this.at++] = value;
  }

  tag(field: number, wireType: number): void {
    this.varint((field << 3) | wireType);
  }

  uint(field: number, value: number): void {
    if (value === 0) return;
    this.tag(field, 0);
    this.varint(value);
  }

  bool(field: number, value: boolean): void {
    if (value) this.uint(field, 1);
  }

  string(field: number, value: string | undefined): void {
    if (value === undefined || value === "") return;
    // A record's strings are short and mostly ASCII (ids, names, labels): written here, they
    // skip two calls into C++ (byteLength, write) that cost more than the copy. A one-byte tag
    // and length need a field under 16 and under 128 characters.
    if (field < 16 && value.length < 128) {
      this.ensure(2 + value.length);
      const b = this.buffer;
      const start = this.at;
      let i = 0;
      for (; i < value.length; i++) {
        // Not value.charCodeAt(i): a record's strings come in more internal kinds (literals,
        // joined, sliced, decoded) than an optimized property load handles, and V8 took its
        // generic load on every character. Nor a module constant's .call: V8 called that
        // generically. Reached from the String global, the target is known and compiles to a
        // string check and a load (checked with --print-opt-code in a loaded Predictor).
        const c = String.prototype.charCodeAt.call(value, i);
        if (c > 0x7f) break; // not ASCII: the general path below writes over these bytes
        b[start + 2 + i] = c;
      }
      if (i === value.length) {
        b[start] = (field << 3) | lengthDelimited;
        b[start + 1] = value.length;
        this.at = start + 2 + value.length;
        return;
      }
    }
    const length = Buffer.byteLength(value);
    this.tag(field, lengthDelimited);
    this.varint(length);
    this.ensure(length);
    this.at += this.buffer.write(value, this.at, "utf8");
  }

  bytes(field: number, value: Uint8Array): void {
    if (value.length === 0) return;
    this.tag(field, lengthDelimited);
    this.varint(value.length);
    this.raw(value);
  }

  /** Bytes written as they are (an encoded part of a message). */
  raw(value: Uint8Array): void {
    this.ensure(value.length);
    const b = this.buffer;
    const at = this.at;
    // A few bytes (a label list) are copied here: in optimized code, looking up `set` after
    // ensure() took V8's generic property-load path on every record.
    if (value.length <= 64) for (let i = 0; i < value.length; i++) b[at + i] = value[i];
    else b.set(value, at);
    this.at = at + value.length;
  }

  /** A packed repeated float field. */
  floats(field: number, values: Float32Array): void {
    if (values.length === 0) return;
    const length = values.length * 4;
    this.tag(field, lengthDelimited);
    this.varint(length);
    this.ensure(length);
    const b = this.buffer;
    if (values.length > bulkFloats && floatByteOrder[0] === 0) {
      b.set(new Uint8Array(values.buffer, values.byteOffset, length), this.at);
      this.at += length;
      return;
    }
    let at = this.at;
    for (let i = 0; i < values.length; i++) {
      floatScratch[0] = values[i];
      b[at] = floatBytes[f0];
      b[at + 1] = floatBytes[f1];
      b[at + 2] = floatBytes[f2];
      b[at + 3] = floatBytes[f3];
      at += 4;
    }
    this.at = at;
  }

  /** A packed repeated int64 field of small non-negative values (tensor shapes). */
  int64s(field: number, values: readonly number[]): void {
    if (values.length === 0) return;
    const lengthAt = this.begin(field);
    for (const v of values) this.varint(Math.max(0, v));
    this.end(lengthAt);
  }

  /**
   * Starts a nested message (field `field`), reserving `lengthBytes` for its length; returns
   * where the length goes, for end().
   */
  begin(field: number, lengthBytes = 1): number {
    this.tag(field, lengthDelimited);
    this.ensure(lengthBytes);
    const lengthAt = this.at;
    this.at += lengthBytes;
    return lengthAt;
  }

  /**
   * Ends the nested message begun at `lengthAt` with `lengthBytes` reserved: writes its length,
   * moving its bytes when the length takes other room. An empty one is taken back unless
   * `keepEmpty` (which fields under 16 alone may leave unset: their tag is one byte).
   */
  end(lengthAt: number, keepEmpty = false, lengthBytes = 1): void {
    const start = lengthAt + lengthBytes;
    const length = this.at - start;
    if (length === 0 && !keepEmpty) {
      this.at = lengthAt - 1; // back over the tag: one byte, as the field is under 16
      return;
    }
    const needed = varintSize(length);
    if (needed !== lengthBytes) {
      this.ensure(needed - lengthBytes);
      this.buffer.copyWithin(lengthAt + needed, start, this.at);
      this.at += needed - lengthBytes;
    }
    const b = this.buffer;
    let at = lengthAt;
    let value = length;
    while (value > 0x7f) {
      b[at++] = (value & 0x7f) | 0x80;
      value = Math.floor(value / 128);
    }
    b[at] = value;
  }

  /** A double field (wire type 1), written even when 0 (for optional fields). */
  double(field: number, value: number): void {
    this.tag(field, 1);
    this.ensure(8);
    this.buffer.writeDoubleLE(value, this.at);
    this.at += 8;
  }

  /** An int64 or int32 field that may be negative (two's complement, 10 bytes when negative). */
  int(field: number, value: number): void {
    if (value === 0) return;
    if (value > 0) return this.uint(field, value);
    this.tag(field, 0);
    this.ensure(10);
    let v = BigInt.asUintN(64, BigInt(value));
    while (v > 0x7fn) {
      this.buffer[this.at++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.buffer[this.at++] = Number(v);
  }

  /** A google.protobuf.Duration from milliseconds, which may be negative (seconds and nanos share its sign). */
  signedDuration(field: number, ms: number): void {
    const seconds = Math.trunc(ms / 1000);
    const nanos = Math.trunc((ms - seconds * 1000) * 1e6);
    const lengthAt = this.begin(field);
    this.int(1, seconds);
    this.int(2, nanos);
    this.end(lengthAt, true);
  }

  /** A google.protobuf.Timestamp or Duration from milliseconds. */
  time(field: number, ms: number): void {
    const seconds = Math.floor(ms / 1000);
    const nanos = Math.floor((ms - seconds * 1000) * 1e6);
    const lengthAt = this.begin(field);
    this.uint(1, seconds);
    this.uint(2, nanos);
    this.end(lengthAt, true);
  }
}

function varintSize(value: number): number {
  let size = 1;
  while (value > 0x7f) {
    value = Math.floor(value / 128);
    size++;
  }
  return size;
}

/** A label list as the record writes it (ClassificationOutput.labels), encoded once per list. */
const encodedLabels = new WeakMap<readonly string[], Uint8Array>();

function labelsBytes(labels: readonly string[]): Uint8Array {
  let bytes = encodedLabels.get(labels);
  if (bytes === undefined) {
    const w = new ProtoWriter(Buffer.allocUnsafe(64));
    for (const label of labels) w.string(1, label);
    bytes = Uint8Array.prototype.slice.call(w.buffer.subarray(0, w.at));
    encodedLabels.set(labels, bytes);
  }
  return bytes;
}

/**
 * Writes the record of `facts` at the writer's position. A `truncated` record (its inputs and
 * outputs together over the limit: see payloadBytes) keeps them as their shapes only (rows'
 * width, tensors' name, type and shape) and is marked so.
 */
export function writeRecord(w: ProtoWriter, facts: RecordFacts, truncated: boolean): void {
  w.string(1, facts.requestId);
  w.time(2, facts.timeMs);
  w.string(3, facts.traceId);
  w.string(4, facts.caller);
  w.uint(5, facts.source);
  w.string(6, facts.api);
  w.string(7, facts.model);
  w.uint(8, facts.version);
  w.string(9, facts.alias);
  w.string(10, facts.arm);
  const { rows, inputTensors, images } = facts;
  // Inputs: one row set is mostly over 127 bytes past a few rows; tensors and images vary.
  const inputsAt = w.begin(11);
  if (rows !== undefined) {
    // Room for the length of the width and the floats, whose size is known before they are written.
    const lengthBytes = truncated ? 1 : varintSize(rows.values.length * 4 + 8);
    const rowsAt = w.begin(1, lengthBytes);
    w.uint(1, rows.width);
    if (!truncated) w.floats(2, rows.values);
    w.end(rowsAt, true, lengthBytes);
  }
  if (inputTensors !== undefined) for (const tensor of inputTensors) writeTensor(w, 2, tensor, truncated);
  if (images !== undefined) {
    for (const image of images) {
      const imageAt = w.begin(3);
      w.string(1, image.sha256);
      w.uint(2, image.sizeBytes);
      w.end(imageAt);
    }
  }
  w.end(inputsAt);
  const { classification, outputTensors } = facts;
  const outputsAt = w.begin(12);
  if (classification !== undefined) {
    const classificationAt = w.begin(1);
    w.raw(labelsBytes(classification.labels));
    if (!truncated) w.floats(2, classification.probabilities);
    w.end(classificationAt, true);
  }
  if (outputTensors !== undefined) for (const tensor of outputTensors) writeTensor(w, 2, tensor, truncated);
  w.end(outputsAt);
  w.time(13, facts.latencyMs);
  w.uint(14, facts.status);
  w.string(15, facts.error === undefined ? undefined : facts.error.slice(0, 1024));
  if (facts.outlierScores !== undefined) w.floats(16, facts.outlierScores);
  w.uint(17, facts.rowCount);
  w.string(18, facts.parentRequestId);
  w.bool(19, truncated);
  const shadow = facts.shadow;
  if (shadow !== undefined) {
    const shadowAt = w.begin(20);
    w.uint(1, shadow.primaryVersion);
    w.uint(2, shadow.rows);
    w.uint(3, shadow.agreeingRows);
    if (!Number.isNaN(shadow.meanAbsDifference)) w.double(4, shadow.meanAbsDifference);
    w.signedDuration(5, shadow.latencyDifferenceMs);
    w.end(shadowAt, true);
  }
}

/** The record's bytes, a copy of its own (tests and benchmarks; the prediction log writes records in place). */
export function encodeRecord(facts: RecordFacts, maxPayloadBytes: number): Uint8Array {
  const w = new ProtoWriter(Buffer.allocUnsafe(1024));
  writeRecord(w, facts, payloadBytes(facts) > maxPayloadBytes);
  return Uint8Array.prototype.slice.call(w.buffer.subarray(0, w.at));
}

/** Bytes of field 1 (records) of an IngestRecordsRequest holding a record of `length` bytes. */
function framedRecordBytes(length: number): number {
  return 1 + varintSize(length) + length;
}

function writeTensor(w: ProtoWriter, field: number, tensor: RecordTensor, truncated: boolean): void {
  // Room for the length of the contents and what names and shapes mostly take.
  const lengthBytes = truncated ? 1 : varintSize(tensor.contents.length + 32);
  const tensorAt = w.begin(field, lengthBytes);
  w.string(1, tensor.name);
  w.string(2, tensor.datatype);
  w.int64s(3, tensor.shape);
  if (!truncated) w.bytes(4, tensor.contents);
  w.end(tensorAt, false, lengthBytes);
}

/** Bytes of the record's inputs and outputs contents (what truncation drops). */
export function payloadBytes(facts: RecordFacts): number {
  // Float32Array lengths times 4, not byteLength: a getter the serving path need not call.
  let bytes = (facts.rows === undefined ? 0 : facts.rows.values.length * 4) + (facts.classification === undefined ? 0 : facts.classification.probabilities.length * 4);
  if (facts.inputTensors !== undefined) for (const t of facts.inputTensors) bytes += t.contents.length;
  if (facts.outputTensors !== undefined) for (const t of facts.outputTensors) bytes += t.contents.length;
  return bytes;
}

/** An IngestRecordsRequest holding encoded records: each as field 1 (records), length-delimited. */
export function encodeIngestRequest(records: readonly Uint8Array[]): Uint8Array {
  let size = 0;
  for (const r of records) size += framedRecordBytes(r.length);
  const w = new ProtoWriter(Buffer.allocUnsafe(size));
  for (const r of records) w.bytes(1, r);
  return w.buffer.subarray(0, w.at);
}
