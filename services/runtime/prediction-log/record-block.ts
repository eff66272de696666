import { ProtoWriter, type RecordFacts } from "./record-writer.js";

/*
 * A RecordBlock (proto/mlmesh/monitor/v1/monitor.proto) being filled: the records of calls that
 * succeeded on a classifier and share their header (source, API, model, version, alias, arm,
 * caller, row width, labels, whether rows are scored), column by column. Adding a record copies
 * its two ids and its floats into columns and keeps three numbers; the block becomes protobuf
 * once, when it is full or about to be sent. At 1 row a call, encoding each record as a message
 * cost the Predictor 2-3 % more than this (paired runs, docs/benchmarks.md).
 */

/** Records per block, and floats of each column: a block stays well under a message's 1 MiB. */
const maxRecords = 1024;
const maxFloats = 48 * 1024;

/** Whether a record can be kept in a block: everything it holds has a column there. */
export function fitsBlock(facts: RecordFacts): boolean {
  const { rows, classification, outlierScores, rowCount } = facts;
  return (
    facts.status === 0 &&
    facts.error === undefined &&
    facts.parentRequestId === undefined &&
    facts.shadow === undefined &&
    facts.inputTensors === undefined &&
    facts.outputTensors === undefined &&
    facts.images === undefined &&
    rows !== undefined &&
    classification !== undefined &&
    rows.values.length === rowCount * rows.width &&
    classification.probabilities.length === rowCount * classification.labels.length &&
    (outlierScores === undefined || outlierScores.length === rowCount) &&
    // One record alone must fit an empty block.
    rows.values.length <= maxFloats &&
    classification.probabilities.length <= maxFloats &&
    rowCount <= maxFloats
  );
}

/** Whether two label lists are equal: mostly the same list (a loaded version's, shared by its calls). */
function sameLabels(a: readonly string[], b: readonly string[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** One column of floats, of fixed room. */
class FloatColumn {
  values = new Float32Array(maxFloats);
  length = 0;

  fits(more: number): boolean {
    return this.length + more <= maxFloats;
  }

  add(from: Float32Array): void {
    const to = this.values;
    let at = this.length;
    for (let i = 0; i < from.length; i++) to[at++] = from[i];
    this.length = at;
  }

  get filled(): Float32Array {
    return this.values.subarray(0, this.length);
  }
}

export class RecordBlock {
  /** Records held. */
  records = 0;
  /** About how many bytes the records held will take when written (what add() returned). */
  bytes = 0;
  #source = 0;
  #api = "";
  #model = "";
  #version = 0;
  #alias: string | undefined;
  #arm: string | undefined;
  #caller: string | undefined;
  #width = 0;
  #labels: readonly string[] = [];
  #scored = false;
  /** The request ids, each already written as field 10 (request_ids). */
  readonly #ids = new ProtoWriter(Buffer.allocUnsafe(64 * 1024));
  /** The trace ids, each already written as field 11 (trace_ids), empty ones included. */
  readonly #traces = new ProtoWriter(Buffer.allocUnsafe(48 * 1024));
  #traced = false;
  readonly #timesMs = new Float64Array(maxRecords);
  readonly #latenciesMs = new Float64Array(maxRecords);
  readonly #rowCounts = new Uint32Array(maxRecords);
  readonly #features = new FloatColumn();
  readonly #probabilities = new FloatColumn();
  readonly #scores = new FloatColumn();

  /** Whether `facts` (which fit a block) share this block's header, and there is room for them. */
  accepts(facts: RecordFacts): boolean {
    const rows = facts.rows!;
    const classification = facts.classification!;
    return (
      this.records < maxRecords &&
      facts.model === this.#model &&
      facts.version === this.#version &&
      facts.api === this.#api &&
      facts.source === this.#source &&
      facts.alias === this.#alias &&
      facts.arm === this.#arm &&
      facts.caller === this.#caller &&
      rows.width === this.#width &&
      sameLabels(classification.labels, this.#labels) &&
      (facts.outlierScores !== undefined) === this.#scored &&
      this.#features.fits(rows.values.length) &&
      this.#probabilities.fits(classification.probabilities.length) &&
      this.#scores.fits(facts.rowCount)
    );
  }

  /** Takes the header of `facts` (which fit a block); the block must be empty. */
  start(facts: RecordFacts): void {
    this.#source = facts.source;
    this.#api = facts.api;
    this.#model = facts.model;
    this.#version = facts.version;
    this.#alias = facts.alias;
    this.#arm = facts.arm;
    this.#caller = facts.caller;
    this.#width = facts.rows!.width;
    this.#labels = facts.classification!.labels;
    this.#scored = facts.outlierScores !== undefined;
  }

  /** Adds a record the block accepts; returns about how many bytes it adds to the block's encoding. */
  add(facts: RecordFacts): number {
    const idsBefore = this.#ids.at;
    const tracesBefore = this.#traces.at;
    this.#ids.string(10, facts.requestId);
    const traceId = facts.traceId;
    if (traceId === undefined || traceId === "") {
      this.#traces.tag(11, 2);
      this.#traces.varint(0);
    } else {
      this.#traces.string(11, traceId);
      this.#traced = true;
    }
    const i = this.records++;
    this.#timesMs[i] = facts.timeMs;
    this.#latenciesMs[i] = facts.latencyMs;
    this.#rowCounts[i] = facts.rowCount;
    const rows = facts.rows!.values;
    const probabilities = facts.classification!.probabilities;
    this.#features.add(rows);
    this.#probabilities.add(probabilities);
    if (facts.outlierScores !== undefined) this.#scores.add(facts.outlierScores);
    // The three varints are mostly 3, 2 and 1 bytes.
    const added = this.#ids.at - idsBefore + (this.#traces.at - tracesBefore) + 6 + 4 * (rows.length + probabilities.length + facts.rowCount);
    this.bytes += added;
    return added;
  }

  /** Whether the block should be written before another record: it is full, or its columns nearly are. */
  get full(): boolean {
    return this.records >= maxRecords || this.#ids.at > 60 * 1024 || this.#traces.at > 44 * 1024;
  }

  /** Writes the block as field 2 (blocks) of an IngestRecordsRequest, and empties it. */
  writeTo(w: ProtoWriter): void {
    const n = this.records;
    // A block takes at most about 700 KiB: its length fits three bytes.
    const blockAt = w.begin(2, 3);
    w.uint(1, this.#source);
    w.string(2, this.#api);
    w.string(3, this.#model);
    w.uint(4, this.#version);
    w.string(5, this.#alias);
    w.string(6, this.#arm);
    w.string(7, this.#caller);
    w.uint(8, this.#width);
    for (const label of this.#labels) w.string(9, label);
    w.raw(this.#ids.buffer.subarray(0, this.#ids.at));
    if (this.#traced) w.raw(this.#traces.buffer.subarray(0, this.#traces.at));
    const startMs = this.#timesMs[0];
    w.time(12, startMs);
    const offsetsAt = w.begin(13, 3);
    for (let i = 0; i < n; i++) {
      const us = Math.round((this.#timesMs[i] - startMs) * 1000);
      w.varint(us >= 0 ? us * 2 : -us * 2 - 1); // sint64: zigzag
    }
    w.end(offsetsAt, false, 3);
    const latenciesAt = w.begin(14, 3);
    for (let i = 0; i < n; i++) w.varint(Math.max(0, Math.round(this.#latenciesMs[i] * 1000)));
    w.end(latenciesAt, false, 3);
    const rowCountsAt = w.begin(15, 3);
    for (let i = 0; i < n; i++) w.varint(this.#rowCounts[i]);
    w.end(rowCountsAt, false, 3);
    w.floats(16, this.#features.filled);
    w.floats(17, this.#probabilities.filled);
    w.floats(18, this.#scores.filled);
    w.end(blockAt, true, 3);
    this.#clear();
  }

  #clear(): void {
    this.records = 0;
    this.bytes = 0;
    this.#ids.at = 0;
    this.#traces.at = 0;
    this.#traced = false;
    this.#features.length = 0;
    this.#probabilities.length = 0;
    this.#scores.length = 0;
  }
}
