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

const littleEndian = endianness() === "LE";
const lengthDelimited = 2;

/**
 * A growable protobuf writer. A nested message reserves one byte for its length and moves its
 * bytes right when the length needs more (rare: records' parts are mostly under 128 bytes).
 */
class ProtoWriter {
  buffer = Buffer.allocUnsafe(1024);
  at = 0;

  reset(): void {
    this.at = 0;
  }

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
        const c = value.charCodeAt(i);
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
    this.ensure(value.length);
    this.buffer.set(value, this.at);
    this.at += value.length;
  }

  /** A packed repeated float field. */
  floats(field: number, values: Float32Array): void {
    if (values.length === 0) return;
    const length = values.length * 4;
    this.tag(field, lengthDelimited);
    this.varint(length);
    this.ensure(length);
    if (littleEndian) {
      this.buffer.set(new Uint8Array(values.buffer, values.byteOffset, length), this.at);
    } else {
      for (let i = 0; i < values.length; i++) this.buffer.writeFloatLE(values[i], this.at + i * 4);
    }
    this.at += length;
  }

  /** A packed repeated int64 field of small non-negative values (tensor shapes). */
  int64s(field: number, values: readonly number[]): void {
    if (values.length === 0) return;
    this.message(field, () => {
      for (const v of values) this.varint(Math.max(0, v));
    });
  }

  /** A nested message written by `write`; left out when it wrote nothing and `keepEmpty` is false. */
  message(field: number, write: () => void, keepEmpty = false): void {
    this.tag(field, lengthDelimited);
    this.ensure(1);
    const lengthAt = this.at++;
    const start = this.at;
    write();
    const length = this.at - start;
    if (length === 0 && !keepEmpty) {
      this.at = lengthAt - varintSize((field << 3) | lengthDelimited);
      return;
    }
    const extra = varintSize(length) - 1;
    if (extra > 0) {
      this.ensure(extra);
      this.buffer.copyWithin(start + extra, start, this.at);
      this.at += extra;
    }
    let at = lengthAt;
    let value = length;
    while (value > 0x7f) {
      this.buffer[at++] = (value & 0x7f) | 0x80;
      value = Math.floor(value / 128);
    }
    this.buffer[at] = value;
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
    this.message(field, () => {
      this.int(1, seconds);
      this.int(2, nanos);
    }, true);
  }

  /** A google.protobuf.Timestamp or Duration from milliseconds. */
  time(field: number, ms: number): void {
    const seconds = Math.floor(ms / 1000);
    const nanos = Math.floor((ms - seconds * 1000) * 1e6);
    this.message(field, () => {
      this.uint(1, seconds);
      this.uint(2, nanos);
    }, true);
  }

  /** The bytes written: a view of the writer's buffer, valid until the next record. */
  view(): Uint8Array {
    return this.buffer.subarray(0, this.at);
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

/** One writer per process: records are encoded one at a time, on the event loop. */
const writer = new ProtoWriter();

/**
 * The record's bytes, as a view valid until the next record is encoded (copy it to keep it).
 * When inputs and outputs together exceed `maxPayloadBytes` they are kept
 * as their shapes only (rows' width, tensors' name, type and shape) and the record is marked
 * truncated.
 */
export function encodeRecordView(facts: RecordFacts, maxPayloadBytes: number): Uint8Array {
  const truncated = payloadBytes(facts) > maxPayloadBytes;
  const w = writer;
  w.reset();
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
  w.message(11, () => {
    const { rows, inputTensors, images } = facts;
    if (rows !== undefined) {
      w.message(1, () => {
        w.uint(1, rows.width);
        if (!truncated) w.floats(2, rows.values);
      }, true);
    }
    for (const tensor of inputTensors ?? []) writeTensor(w, 2, tensor, truncated);
    for (const image of images ?? []) {
      w.message(3, () => {
        w.string(1, image.sha256);
        w.uint(2, image.sizeBytes);
      });
    }
  });
  w.message(12, () => {
    const { classification, outputTensors } = facts;
    if (classification !== undefined) {
      w.message(1, () => {
        for (const label of classification.labels) w.string(1, label);
        if (!truncated) w.floats(2, classification.probabilities);
      }, true);
    }
    for (const tensor of outputTensors ?? []) writeTensor(w, 2, tensor, truncated);
  });
  w.time(13, facts.latencyMs);
  w.uint(14, facts.status);
  w.string(15, facts.error === undefined ? undefined : facts.error.slice(0, 1024));
  if (facts.outlierScores !== undefined) w.floats(16, facts.outlierScores);
  w.uint(17, facts.rowCount);
  w.string(18, facts.parentRequestId);
  w.bool(19, truncated);
  const shadow = facts.shadow;
  if (shadow !== undefined) {
    w.message(20, () => {
      w.uint(1, shadow.primaryVersion);
      w.uint(2, shadow.rows);
      w.uint(3, shadow.agreeingRows);
      if (!Number.isNaN(shadow.meanAbsDifference)) w.double(4, shadow.meanAbsDifference);
      w.signedDuration(5, shadow.latencyDifferenceMs);
    }, true);
  }
  return w.view();
}

/** The record's bytes, a copy of its own. */
export function encodeRecord(facts: RecordFacts, maxPayloadBytes: number): Uint8Array {
  // Uint8Array's slice copies (a Buffer's would be a view of the writer's buffer).
  return Uint8Array.prototype.slice.call(encodeRecordView(facts, maxPayloadBytes));
}

/** Bytes of field 1 (records) of an IngestRecordsRequest holding a record of `length` bytes. */
export function framedRecordBytes(length: number): number {
  return 1 + varintSize(length) + length;
}

/** Writes a record as field 1 of an IngestRecordsRequest at `at`; returns the next position. */
export function writeFramedRecord(out: Uint8Array, at: number, record: Uint8Array): number {
  out[at++] = (1 << 3) | lengthDelimited;
  let value = record.length;
  while (value > 0x7f) {
    out[at++] = (value & 0x7f) | 0x80;
    value = Math.floor(value / 128);
  }
  out[at++] = value;
  out.set(record, at);
  return at + record.length;
}

function writeTensor(w: ProtoWriter, field: number, tensor: RecordTensor, truncated: boolean): void {
  w.message(field, () => {
    w.string(1, tensor.name);
    w.string(2, tensor.datatype);
    w.int64s(3, tensor.shape);
    if (!truncated) w.bytes(4, tensor.contents);
  });
}

/** Bytes of the record's inputs and outputs contents (what truncation drops). */
function payloadBytes(facts: RecordFacts): number {
  let bytes = (facts.rows?.values.byteLength ?? 0) + (facts.classification?.probabilities.byteLength ?? 0);
  for (const t of facts.inputTensors ?? []) bytes += t.contents.byteLength;
  for (const t of facts.outputTensors ?? []) bytes += t.contents.byteLength;
  return bytes;
}

/**
 * An IngestRecordsRequest holding encoded records: each as field 1 (records), length-delimited.
 */
export function encodeIngestRequest(records: readonly Uint8Array[]): Uint8Array {
  let size = 0;
  for (const r of records) size += framedRecordBytes(r.length);
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (const r of records) at = writeFramedRecord(out, at, r);
  return out;
}
