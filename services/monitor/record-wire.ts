import { endianness } from "node:os";
import { toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { PredictionRecordSchema, type IngestRecordsRequest, type RecordBlock } from "../../gen/mlmesh/monitor/v1/monitor_pb.js";
import { ProtoWriter, writeRecord, type RecordFacts } from "../runtime/prediction-log/record-writer.js";
import { markValidated, type MethodWire } from "../runtime/serve/registration.js";

/*
 * What the monitor reads of each ingested PredictionRecord, straight from its bytes: the
 * columns it stores beside them and what its windows need (rows, probabilities, outlier
 * scores). The bytes themselves are stored as they came. At 50,000 records/s a protobuf-es
 * message per record would cost more than the database; the native gRPC path hands the
 * request's bytes here (ingestWire), other protocols' decoded messages are re-encoded first.
 *
 * A record is read here only when it satisfies its rules in monitor.proto; otherwise the
 * request is left to protobuf-es and protovalidate, whose error names the field.
 *
 * A RecordBlock (the senders' columns) becomes the PredictionRecords it stands for, each
 * encoded here as a sender would have: what is stored and answered does not depend on how the
 * record came.
 */

/** One record as the monitor keeps and counts it. */
export interface IngestedRecord {
  readonly requestId: string;
  readonly timeMs: number;
  readonly source: number;
  readonly model: string;
  readonly version: number;
  readonly status: number;
  readonly latencyMs: number;
  readonly rowCount: number;
  readonly parentRequestId: string | undefined;
  /** A classifier's rows: width and rowCount x width values. */
  readonly width: number;
  readonly values: Float32Array | undefined;
  readonly labels: readonly string[];
  readonly probabilities: Float32Array | undefined;
  readonly outlierScores: Float32Array | undefined;
  /** Rows with an outlier score above 0. */
  readonly outlierRows: number;
  /** The API that made it ("predict", "oip", "shadow", ...). */
  readonly api: string;
  /** A shadow's record: its comparison with the primary. */
  readonly shadow: RecordShadow | undefined;
  /** The record as sent. */
  readonly bytes: Uint8Array;
}

/** PredictionRecord.shadow (ShadowComparison). */
export interface RecordShadow {
  readonly primaryVersion: number;
  readonly rows: number;
  readonly agreeingRows: number;
  /** NaN when the sender could not compare. */
  readonly meanAbsDifference: number;
  readonly latencyDifferenceMs: number;
}

/** An IngestRecordsRequest read by ingestWire: its records, already checked. */
export class DecodedIngestRequest {
  readonly $typeName = "mlmesh.monitor.v1.IngestRecordsRequest" as const;
  constructor(readonly ingested: readonly IngestedRecord[]) {}
}

const maxRecords = 10_000;
/** google.rpc.Code's highest value (UNAUTHENTICATED). */
const maxCode = 16;
const maxSource = 3;

class Reader {
  at: number;
  constructor(
    readonly buf: Buffer,
    start: number,
    readonly end: number,
  ) {
    this.at = start;
  }

  /** An int64 or int32 varint, negative values included (two's complement over 64 bits). */
  signedVarint(): number {
    const value = this.varint();
    return value >= 2 ** 63 ? value - 2 ** 64 : value;
  }

  varint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.at >= this.end) throw bad;
      const byte = this.buf[this.at++];
      result += (byte & 0x7f) * scale;
      if (byte < 0x80) return result;
      scale *= 128;
    }
    throw bad;
  }

  /** The end of a length-delimited field whose length comes next. */
  delimited(): number {
    const length = this.varint();
    const end = this.at + length;
    if (end > this.end) throw bad;
    return end;
  }

  skip(wireType: number): void {
    if (wireType === 0) this.varint();
    else if (wireType === 1) this.at += 8;
    else if (wireType === 2) this.at = this.delimited();
    else if (wireType === 5) this.at += 4;
    else throw bad;
    if (this.at > this.end) throw bad;
  }

  /** A repeated varint field (packed, or one value), appended to `into`; zigzag-decoded for sint64. */
  varints(wireType: number, into: number[], zigzag: boolean): void {
    const end = wireType === 2 ? this.delimited() : wireType === 0 ? -1 : -2;
    if (end === -2) throw bad;
    do {
      const v = this.varint();
      into.push(zigzag ? (v % 2 === 0 ? v / 2 : -(v + 1) / 2) : v);
    } while (this.at < end);
    if (end !== -1 && this.at !== end) throw bad;
  }

  /** A string of at most `maxChars` characters (protovalidate counts code points). */
  string(maxChars: number): string {
    const end = this.delimited();
    const value = this.buf.toString("utf8", this.at, end);
    if (end - this.at > maxChars && [...value].length > maxChars) throw bad;
    this.at = end;
    return value;
  }

  /**
   * A repeated float field, appended to `into`: packed (wire type 2, the canonical form:
   * copied in one piece) or one value (wire type 5).
   */
  floats(wireType: number, into: FloatList): void {
    if (wireType === 5) {
      into.push(this.buf.readFloatLE(this.at));
      this.at += 4;
      return;
    }
    if (wireType !== 2) throw bad;
    const end = this.delimited();
    if ((end - this.at) % 4 !== 0) throw bad;
    into.append(this.buf, this.at, end);
    this.at = end;
  }
}

/** Floats read from a record, usually one packed field: kept as a copy of its bytes. */
class FloatList {
  #parts: Float32Array[] = [];
  #length = 0;

  get length(): number {
    return this.#length;
  }

  append(buf: Buffer, start: number, end: number): void {
    // A copy (the record's bytes need not be 4-byte aligned), as little-endian floats.
    const part = new Float32Array((end - start) / 4);
    if (littleEndian) new Uint8Array(part.buffer).set(buf.subarray(start, end));
    else for (let i = 0; i < part.length; i++) part[i] = buf.readFloatLE(start + i * 4);
    this.#parts.push(part);
    this.#length += part.length;
  }

  push(value: number): void {
    this.#parts.push(Float32Array.of(value));
    this.#length++;
  }

  /** The values, or undefined when there are none. */
  values(): Float32Array | undefined {
    if (this.#length === 0) return undefined;
    if (this.#parts.length === 1) return this.#parts[0];
    const all = new Float32Array(this.#length);
    let at = 0;
    for (const part of this.#parts) {
      all.set(part, at);
      at += part.length;
    }
    return all;
  }
}

const littleEndian = endianness() === "LE";

/** Thrown inside the reader: the bytes break a rule (or are no message); protobuf-es decides. */
const bad = new Error("not a canonical, valid record");

/** Reads the milliseconds of a Timestamp or Duration. */
function readTime(r: Reader): number {
  const end = r.delimited();
  let seconds = 0;
  let nanos = 0;
  while (r.at < end) {
    const tag = r.varint();
    if (tag === 8) seconds = r.varint();
    else if (tag === 16) nanos = r.varint();
    else r.skip(tag & 7);
  }
  if (nanos > 999_999_999) throw bad;
  return seconds * 1000 + nanos / 1e6;
}

/** Reads a ShadowComparison. */
function readShadow(r: Reader): RecordShadow {
  const end = r.delimited();
  let primaryVersion = 0;
  let rows = 0;
  let agreeingRows = 0;
  let meanAbsDifference = Number.NaN;
  let latencyDifferenceMs = 0;
  while (r.at < end) {
    const tag = r.varint();
    if (tag === 8) primaryVersion = r.varint();
    else if (tag === 16) rows = r.varint();
    else if (tag === 24) agreeingRows = r.varint();
    else if (tag === 33) {
      if (r.at + 8 > end) throw bad;
      meanAbsDifference = r.buf.readDoubleLE(r.at);
      r.at += 8;
    } else if (tag === 42) {
      const durationEnd = r.delimited();
      let seconds = 0;
      let nanos = 0;
      while (r.at < durationEnd) {
        const t = r.varint();
        if (t === 8) seconds = r.signedVarint();
        else if (t === 16) nanos = r.signedVarint();
        else r.skip(t & 7);
      }
      latencyDifferenceMs = seconds * 1000 + nanos / 1e6;
    } else r.skip(tag & 7);
  }
  return { primaryVersion, rows, agreeingRows, meanAbsDifference, latencyDifferenceMs };
}

/** Reads one stored record (its bytes were checked when it was ingested). */
export function readRecord(bytes: Uint8Array): IngestedRecord {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return readRecordAt(buf, 0, buf.length);
}

/** Reads one PredictionRecord occupying buf[start, end). */
function readRecordAt(buf: Buffer, start: number, end: number): IngestedRecord {
  const r = new Reader(buf, start, end);
  let requestId = "";
  let timeMs: number | undefined;
  let source = 0;
  let model = "";
  let version = 0;
  let status = 0;
  let latencyMs = 0;
  let rowCount = 0;
  let parentRequestId: string | undefined;
  let api = "";
  let shadow: RecordShadow | undefined;
  let width = 0;
  const values = new FloatList();
  const labels: string[] = [];
  const probabilities = new FloatList();
  const scores = new FloatList();
  while (r.at < end) {
    const tag = r.varint();
    const field = tag >>> 3;
    const wireType = tag & 7;
    switch (field) {
      case 1:
        requestId = r.string(128);
        break;
      case 2:
        timeMs = readTime(r);
        break;
      case 3:
        r.string(32);
        break;
      case 4:
        r.string(128);
        break;
      case 5:
        source = r.varint();
        break;
      case 6:
        api = r.string(64);
        break;
      case 9:
      case 10:
        r.string(64);
        break;
      case 7:
        model = r.string(128);
        break;
      case 8:
        version = r.varint();
        break;
      case 11: {
        const inputsEnd = r.delimited();
        while (r.at < inputsEnd) {
          const t = r.varint();
          if (t >>> 3 !== 1) {
            r.skip(t & 7);
            continue;
          }
          const rowsEnd = r.delimited();
          while (r.at < rowsEnd) {
            const rt = r.varint();
            if (rt === 8) width = r.varint();
            else if (rt >>> 3 === 2) r.floats(rt & 7, values);
            else r.skip(rt & 7);
          }
        }
        break;
      }
      case 12: {
        const outputsEnd = r.delimited();
        while (r.at < outputsEnd) {
          const t = r.varint();
          if (t >>> 3 !== 1) {
            r.skip(t & 7);
            continue;
          }
          const classEnd = r.delimited();
          while (r.at < classEnd) {
            const ct = r.varint();
            if (ct === 10) labels.push(r.string(Number.MAX_SAFE_INTEGER));
            else if (ct >>> 3 === 2) r.floats(ct & 7, probabilities);
            else r.skip(ct & 7);
          }
        }
        break;
      }
      case 13:
        latencyMs = readTime(r);
        break;
      case 14:
        status = r.varint();
        break;
      case 15:
        r.string(1024);
        break;
      case 16:
        r.floats(wireType, scores);
        break;
      case 17:
        rowCount = r.varint();
        break;
      case 18:
        parentRequestId = r.string(128) || undefined;
        break;
      case 20:
        if (wireType !== 2) throw bad;
        shadow = readShadow(r);
        break;
      default:
        r.skip(wireType);
    }
  }
  if (requestId === "" || model === "" || timeMs === undefined || source < 1 || source > maxSource || status > maxCode) throw bad;
  const outlierScores = scores.values();
  let outlierRows = 0;
  if (outlierScores !== undefined) for (const s of outlierScores) if (s > 0) outlierRows++;
  return {
    requestId,
    timeMs,
    source,
    model,
    version,
    status,
    latencyMs,
    rowCount,
    parentRequestId,
    width,
    values: values.values(),
    labels,
    probabilities: probabilities.values(),
    outlierScores,
    outlierRows,
    api,
    shadow,
    bytes: buf.subarray(start, end),
  };
}

/** A RecordBlock's header and columns, read by hand or from protobuf-es's message. */
interface BlockColumns {
  readonly source: number;
  readonly api: string;
  readonly model: string;
  readonly version: number;
  readonly alias: string;
  readonly arm: string;
  readonly caller: string;
  readonly width: number;
  readonly labels: readonly string[];
  readonly requestIds: readonly string[];
  readonly traceIds: readonly string[];
  readonly startMs: number;
  readonly offsetsUs: readonly number[];
  readonly latenciesUs: readonly number[];
  readonly rowCounts: readonly number[];
  readonly features: Float32Array;
  readonly probabilities: Float32Array;
  readonly scores: Float32Array;
}

/** Reads a RecordBlock occupying buf[start, end), as far as its own rules go (blockRecords checks its columns agree). */
function readBlockAt(buf: Buffer, start: number, end: number): BlockColumns {
  const r = new Reader(buf, start, end);
  let source = 0;
  let api = "";
  let model = "";
  let version = 0;
  let alias = "";
  let arm = "";
  let caller = "";
  let width = 0;
  let startMs: number | undefined;
  const labels: string[] = [];
  const requestIds: string[] = [];
  const traceIds: string[] = [];
  const offsetsUs: number[] = [];
  const latenciesUs: number[] = [];
  const rowCounts: number[] = [];
  const features = new FloatList();
  const probabilities = new FloatList();
  const scores = new FloatList();
  while (r.at < end) {
    const tag = r.varint();
    const wireType = tag & 7;
    switch (tag >>> 3) {
      case 1:
        source = r.varint();
        break;
      case 2:
        api = r.string(64);
        break;
      case 3:
        model = r.string(128);
        break;
      case 4:
        version = r.varint();
        break;
      case 5:
        alias = r.string(64);
        break;
      case 6:
        arm = r.string(64);
        break;
      case 7:
        caller = r.string(128);
        break;
      case 8:
        width = r.varint();
        break;
      case 9:
        labels.push(r.string(Number.MAX_SAFE_INTEGER));
        break;
      case 10: {
        const id = r.string(128);
        if (id === "") throw bad;
        requestIds.push(id);
        break;
      }
      case 11:
        traceIds.push(r.string(32));
        break;
      case 12:
        startMs = readTime(r);
        break;
      case 13:
        r.varints(wireType, offsetsUs, true);
        break;
      case 14:
        r.varints(wireType, latenciesUs, false);
        break;
      case 15:
        r.varints(wireType, rowCounts, false);
        break;
      case 16:
        r.floats(wireType, features);
        break;
      case 17:
        r.floats(wireType, probabilities);
        break;
      case 18:
        r.floats(wireType, scores);
        break;
      default:
        r.skip(wireType);
    }
  }
  if (model === "" || source < 1 || source > maxSource || startMs === undefined || requestIds.length === 0 || requestIds.length > maxRecords) throw bad;
  const none = new Float32Array(0);
  return {
    source,
    api,
    model,
    version,
    alias,
    arm,
    caller,
    width,
    labels,
    requestIds,
    traceIds,
    startMs,
    offsetsUs,
    latenciesUs,
    rowCounts,
    features: features.values() ?? none,
    probabilities: probabilities.values() ?? none,
    scores: scores.values() ?? none,
  };
}

/** A RecordBlock message's columns (protobuf-es, already checked against its rules). */
function columnsOf(block: RecordBlock): BlockColumns {
  return {
    ...block,
    startMs: Number(block.time?.seconds ?? 0n) * 1000 + (block.time?.nanos ?? 0) / 1e6,
    offsetsUs: block.timeOffsetsUs.map(Number),
    latenciesUs: block.latenciesUs,
    features: Float32Array.from(block.features),
    probabilities: Float32Array.from(block.probabilities),
    scores: Float32Array.from(block.outlierScores),
  };
}

/** Why a block's columns disagree with its record count, or undefined when they agree. */
function blockProblem(b: BlockColumns): string | undefined {
  const n = b.requestIds.length;
  const perRecord = [
    ["trace_ids", b.traceIds.length === 0 ? n : b.traceIds.length],
    ["time_offsets_us", b.offsetsUs.length],
    ["latencies_us", b.latenciesUs.length],
    ["row_counts", b.rowCounts.length],
  ] as const;
  for (const [name, length] of perRecord) if (length !== n) return `${n} request ids but ${length} ${name} (one per record${name === "trace_ids" ? ", or none" : ""})`;
  const rows = b.rowCounts.reduce((sum, count) => sum + count, 0);
  if (b.features.length !== rows * b.width) return `${b.features.length} features, but ${rows} rows of width ${b.width} need ${rows * b.width}`;
  if (b.probabilities.length !== rows * b.labels.length) return `${b.probabilities.length} probabilities, but ${rows} rows of ${b.labels.length} labels need ${rows * b.labels.length}`;
  if (b.scores.length !== 0 && b.scores.length !== rows) return `${b.scores.length} outlier scores for ${rows} rows (one per row, or none)`;
  return undefined;
}

/** The records a block stands for, each encoded as its sender would have written it. */
function blockRecords(b: BlockColumns): IngestedRecord[] {
  const n = b.requestIds.length;
  const { width, labels } = b;
  const w = new ProtoWriter(Buffer.allocUnsafe(160 * n + 4 * (b.features.length + b.probabilities.length + b.scores.length)));
  // First every record's bytes, then the records (with the same fields, in the same order, as
  // readRecordAt's: the windows and counters that read them see one shape).
  const facts = new Array<RecordFacts & { readonly rows: { readonly values: Float32Array }; readonly classification: { readonly probabilities: Float32Array } }>(n);
  const spans = new Int32Array(n + 1);
  let row = 0;
  for (let i = 0; i < n; i++) {
    const rowCount = b.rowCounts[i];
    facts[i] = {
      requestId: b.requestIds[i],
      traceId: b.traceIds[i] || undefined,
      caller: b.caller || undefined,
      source: b.source as RecordFacts["source"],
      api: b.api,
      model: b.model,
      version: b.version,
      alias: b.alias || undefined,
      arm: b.arm || undefined,
      timeMs: b.startMs + b.offsetsUs[i] / 1000,
      latencyMs: b.latenciesUs[i] / 1000,
      status: 0,
      rowCount,
      rows: { width, values: b.features.subarray(row * width, (row + rowCount) * width) },
      classification: { labels, probabilities: b.probabilities.subarray(row * labels.length, (row + rowCount) * labels.length) },
      outlierScores: b.scores.length === 0 ? undefined : b.scores.subarray(row, row + rowCount),
    };
    row += rowCount;
    writeRecord(w, facts[i], false);
    spans[i + 1] = w.at;
  }
  const bytes = w.buffer;
  const records = new Array<IngestedRecord>(n);
  for (let i = 0; i < n; i++) {
    const f = facts[i];
    let outlierRows = 0;
    if (f.outlierScores !== undefined) for (const s of f.outlierScores) if (s > 0) outlierRows++;
    records[i] = {
      requestId: f.requestId,
      timeMs: f.timeMs,
      source: f.source,
      model: f.model,
      version: f.version,
      status: 0,
      latencyMs: f.latencyMs,
      rowCount: f.rowCount,
      parentRequestId: undefined,
      width,
      values: f.rows.values,
      labels,
      probabilities: f.classification.probabilities,
      outlierScores: f.outlierScores,
      outlierRows,
      api: f.api,
      shadow: undefined,
      bytes: bytes.subarray(spans[i], spans[i + 1]),
    };
  }
  return records;
}

/** Reads an IngestRecordsRequest's bytes; undefined when any record breaks a rule. */
export function decodeIngestRequest(bytes: Buffer): DecodedIngestRequest | undefined {
  try {
    const r = new Reader(bytes, 0, bytes.length);
    const ingested: IngestedRecord[] = [];
    while (r.at < bytes.length) {
      const tag = r.varint();
      const end = r.delimited();
      if (tag === 10) ingested.push(readRecordAt(bytes, r.at, end));
      else if (tag === 18) {
        // Field 2, a block: its records, once its columns agree.
        const block = readBlockAt(bytes, r.at, end);
        if (blockProblem(block) !== undefined) return undefined;
        for (const record of blockRecords(block)) ingested.push(record);
      } else return undefined; // only fields 1 and 2
      r.at = end;
      if (ingested.length > maxRecords) return undefined;
    }
    if (ingested.length === 0) return undefined;
    const decoded = new DecodedIngestRequest(ingested);
    markValidated(decoded);
    return decoded;
  } catch {
    return undefined;
  }
}

/**
 * The records of a request however it was decoded (a message from protobuf-es has passed its
 * rules already); INVALID_ARGUMENT for a block whose columns disagree, or past 10,000 records.
 */
export function ingestedRecords(request: IngestRecordsRequest | DecodedIngestRequest): readonly IngestedRecord[] {
  if (request instanceof DecodedIngestRequest) return request.ingested;
  const records = request.records.map((record) => readRecord(toBinary(PredictionRecordSchema, record)));
  request.blocks.forEach((block, i) => {
    const columns = columnsOf(block);
    const problem = blockProblem(columns);
    if (problem !== undefined) throw new ConnectError(`blocks[${i}]: ${problem}`, Code.InvalidArgument);
    records.push(...blockRecords(columns));
    if (records.length > maxRecords) throw new ConnectError(`a message holds at most ${maxRecords} records, blocks' records included`, Code.InvalidArgument);
  });
  return records;
}

/** IngestRecords' codec on the native gRPC path. */
export const ingestWire: MethodWire = {
  decodeRequest: decodeIngestRequest,
  encodeResponse: () => undefined,
};
