import { Code, ConnectError } from "@connectrpc/connect";
import { MonitorService } from "../../../gen/mlmesh/monitor/v1/monitor_pb.js";
import { GrpcClient } from "../client/grpc-client.js";
import type { MeshCredentials } from "../client/mesh-credentials.js";
import type { PredictionLogSettings } from "../env/settings.js";
import type { Logger } from "../observability/logger.js";
import { counter, gauge, hotCounter } from "../observability/metrics.js";
import { fitsBlock, RecordBlock } from "./record-block.js";
import { payloadBytes, ProtoWriter, writeRecord, type RecordFacts, type RecordTensor } from "./record-writer.js";

/*
 * The prediction log's sending side, one per process (the Predictor, the Proxy, the batch
 * service): each sampled prediction is encoded into the queue when it is appended, and a timer
 * sends the queue to the monitor's IngestRecords in streams of up to 4 MiB, one stream at a time.
 *
 * Why at once: the facts are fresh then (the call just made them). Encoding them later in runs
 * of up to 64 read 2-4 % worse in paired Predictor runs (55 rounds): by then the facts had gone
 * cold and some survived a scavenge (docs/benchmarks.md).
 *
 * The queue is a list of chunks, each the body of one IngestRecordsRequest (at most 1 MiB and
 * 10,000 records): a record costs its bytes and nothing per record besides, and a chunk is sent
 * as it is. A successful classifier call, the common case, joins a RecordBlock of calls like it
 * (its columns are cheaper to fill than a message is to write), which becomes part of a chunk
 * when it is full, when a fifth kind of call needs its room, or when the queue is sent; any
 * other record is written as a PredictionRecord.
 *
 * It never blocks or fails a prediction. The queue is bounded in bytes (chunks sent but not
 * yet acknowledged count too); a record that does not fit is dropped and counted, so a slow or
 * absent monitor costs records, never memory or latency. A stream that fails is resent whole
 * after a backoff: the monitor keeps one record per request id, so a resend of records it had
 * stored before the failure stores nothing twice. Records the monitor refuses (a bad record:
 * INVALID_ARGUMENT, or no permission) are dropped and counted, not retried forever.
 */

const sent = counter({ name: "mlmesh_prediction_log_sent_total", help: "Prediction records the monitor acknowledged." });
// Counted per prediction (a monitor down drops every record): hot counters, each child made once.
const dropped = hotCounter(
  "mlmesh_prediction_log_dropped_total",
  "Prediction records dropped, by reason: queue_full (the monitor is slow or down), rejected (the monitor refused them), shutdown (unsent when the process stopped).",
  ["reason"],
);
const droppedQueueFull = dropped.labels("queue_full");
const droppedRejected = dropped.labels("rejected");
const droppedShutdown = dropped.labels("shutdown");
const sampledOut = hotCounter("mlmesh_prediction_log_sampled_out_total", "Predictions not recorded because of PREDICTION_LOG_SAMPLE.", []).labels();
const sendFailures = counter({ name: "mlmesh_prediction_log_send_failures_total", help: "IngestRecords streams that failed (their records are resent)." });
/** Every open log, for the queue gauge (read when scraped: setting it per record cost an allocation each). */
const openLogs = new Set<PredictionLog>();
gauge({
  name: "mlmesh_prediction_log_queue_bytes",
  help: "Bytes of prediction records queued or in flight to the monitor.",
  collect() {
    let bytes = 0;
    for (const log of openLogs) bytes += log.queuedBytes;
    this.set(bytes);
  },
});

/** Records per IngestRecordsRequest message (the contract's limit) and bytes per message and per stream. */
const maxRecordsPerMessage = 10_000;
const maxMessageBytes = 1024 * 1024;
const maxStreamBytes = 4 * 1024 * 1024;
/**
 * A message's buffer: its limit and room for the record that crosses it (moved to the next
 * message). Buffers are kept for reuse once their message is sent: a steady stream of records
 * allocates none, since allocating large buffers at that rate would make V8 collect garbage
 * for the memory outside its heap.
 */
const chunkBufferBytes = maxMessageBytes + 64 * 1024;
/** Spare buffers kept: one stream's worth and the message being filled. */
const maxSpareBuffers = maxStreamBytes / maxMessageBytes + 1;
/** Blocks filled at once (RecordBlock: about 700 KiB each). */
const maxOpenBlocks = 4;
const sendTimeoutMs = 15_000;
const maxBackoffMs = 5000;

/** Codes after which resending the same records cannot succeed. */
const refusals = new Set([Code.InvalidArgument, Code.PermissionDenied, Code.Unauthenticated, Code.Unimplemented]);

/** One IngestRecordsRequest being filled: records written in place as its field 1, back to back. */
class Chunk {
  readonly writer: ProtoWriter;
  records = 0;

  constructor(buffer: Buffer) {
    this.writer = new ProtoWriter(buffer);
  }

  get length(): number {
    return this.writer.at;
  }

  get body(): Uint8Array {
    return this.writer.buffer.subarray(0, this.writer.at);
  }
}

export class PredictionLog {
  readonly #client: GrpcClient;
  /** Chunks to send, oldest first; the last one is being filled. */
  #queue: Chunk[] = [];
  #bytes = 0;
  #sending = false;
  #backoffMs = 0;
  #retryAt = 0;
  #timer: NodeJS.Timeout;
  #lastWarnAt = 0;
  /** The last record's size: the guess of the next one's when the queue is nearly full. */
  #lastFramedBytes = 0;
  /** Buffers of messages sent (or given up on), for the next messages. */
  #spareBuffers: Buffer[] = [];
  /**
   * Blocks being filled, one per header seen lately: a traffic policy (A/B, a canary) interleaves
   * the calls of two or three versions, and a block per version keeps each block long.
   */
  readonly #blocks: RecordBlock[] = [];
  /** The block given up first when another header comes and every block is taken. */
  #nextEvicted = 0;

  constructor(
    private readonly settings: PredictionLogSettings & { readonly monitorAddress: string },
    private readonly logger: Logger,
    credentials: MeshCredentials,
  ) {
    this.#client = new GrpcClient(settings.monitorAddress, credentials);
    this.#timer = setInterval(() => void this.#send(), settings.flushIntervalMs).unref();
    openLogs.add(this);
  }

  /** Bytes of records queued or in flight (the queue's bound counts them). */
  get queuedBytes(): number {
    return this.#bytes;
  }

  /** Whether this prediction of `model` is to be recorded (PREDICTION_LOG_SAMPLE); counts those left out. */
  sampled(model: string): boolean {
    const rate = this.settings.sampleRates.get(model) ?? this.settings.defaultSampleRate;
    if (rate >= 1 || Math.random() < rate) return true;
    sampledOut.inc();
    return false;
  }

  /**
   * Records one prediction: encodes it into the queue, or drops it (counted) when the queue is
   * full. Never throws.
   */
  append(facts: RecordFacts): void {
    // A full queue (the monitor down) drops without encoding: the CPU stays with predictions.
    if (this.#bytes + this.#lastFramedBytes > this.settings.queueBytes) {
      droppedQueueFull.inc();
      return;
    }
    const truncated = payloadBytes(facts) > this.settings.maxPayloadBytes;
    if (!truncated && fitsBlock(facts)) {
      const block = this.#blockFor(facts);
      const added = block.add(facts);
      this.#bytes += added;
      this.#lastFramedBytes = added;
      if (block.full) this.#writeBlock(block);
      return;
    }
    let chunk = this.#queue[this.#queue.length - 1];
    if (chunk === undefined || chunk.records >= maxRecordsPerMessage) chunk = this.#newChunk();
    // The record is written straight into the message it is sent in, then taken back if it
    // cannot stay.
    const w = chunk.writer;
    const start = w.at;
    try {
      // Two bytes for the record's length: what a record of 128 bytes to 16 KiB takes.
      const lengthAt = w.begin(1, 2);
      writeRecord(w, facts, truncated);
      w.end(lengthAt, true, 2);
    } catch (err) {
      this.#takeBack(chunk, start);
      this.#warn("a prediction record could not be encoded", err);
      droppedRejected.inc();
      return;
    }
    const framed = w.at - start;
    if (this.#bytes + framed > this.settings.queueBytes || framed > maxMessageBytes) {
      this.#takeBack(chunk, start);
      droppedQueueFull.inc();
      return;
    }
    if (w.at > maxMessageBytes) {
      // Past the message's size: the record starts the next message instead.
      const next = this.#newChunk();
      next.writer.raw(w.buffer.subarray(start, w.at));
      w.at = start;
      chunk = next;
    }
    chunk.records++;
    // The guess is of a record that was queued: one too large for any queue must not stop the rest.
    this.#lastFramedBytes = framed;
    this.#bytes += framed;
  }

  /** A block that takes `facts`: one holding calls like it, else an empty one (started for them). */
  #blockFor(facts: RecordFacts): RecordBlock {
    const blocks = this.#blocks;
    for (let i = 0; i < blocks.length; i++) if (blocks[i].records > 0 && blocks[i].accepts(facts)) return blocks[i];
    let block = blocks.find((b) => b.records === 0);
    if (block === undefined && blocks.length < maxOpenBlocks) blocks.push((block = new RecordBlock()));
    if (block === undefined) {
      block = blocks[this.#nextEvicted];
      this.#nextEvicted = (this.#nextEvicted + 1) % maxOpenBlocks;
      this.#writeBlock(block);
    }
    block.start(facts);
    return block;
  }

  /** Writes every block that holds records. */
  #writeBlocks(): void {
    for (const block of this.#blocks) this.#writeBlock(block);
  }

  /** Writes a block into the queue's tail message (a new one when it has no room), and empties it. */
  #writeBlock(block: RecordBlock): void {
    if (block.records === 0) return;
    let chunk = this.#queue[this.#queue.length - 1];
    // A block is at most 700 KiB or so; a message past its size is sent as it is.
    if (chunk === undefined || chunk.records + block.records > maxRecordsPerMessage || chunk.length > maxMessageBytes / 4) chunk = this.#newChunk();
    const before = chunk.writer.at;
    const counted = block.bytes;
    chunk.records += block.records;
    block.writeTo(chunk.writer);
    // The block's bytes were counted as its records came, about: now exactly.
    this.#bytes += chunk.writer.at - before - counted;
  }

  /**
   * Takes back a record written from `start` on; a message left with none leaves the queue (the
   * monitor refuses an empty IngestRecordsRequest, and with it the whole stream).
   */
  #takeBack(chunk: Chunk, start: number): void {
    chunk.writer.at = start;
    if (chunk.records === 0) {
      this.#queue.pop();
      this.#recycle([chunk]);
    }
  }

  /** A new message at the queue's tail. */
  #newChunk(): Chunk {
    const chunk = new Chunk(this.#spareBuffers.pop() ?? Buffer.allocUnsafe(chunkBufferBytes));
    this.#queue.push(chunk);
    return chunk;
  }

  /** Keeps the buffers of messages that are done with for the next ones (a buffer a huge record grew is let go). */
  #recycle(chunks: readonly Chunk[]): void {
    for (const chunk of chunks) {
      const { buffer } = chunk.writer;
      if (buffer.length === chunkBufferBytes && this.#spareBuffers.length < maxSpareBuffers) this.#spareBuffers.push(buffer);
    }
  }

  /** Sends what is queued, within `timeoutMs`; what is left is dropped and counted (reason "shutdown"). */
  async close(timeoutMs: number): Promise<void> {
    clearInterval(this.#timer);
    this.#writeBlocks();
    const until = Date.now() + timeoutMs;
    this.#retryAt = 0;
    while ((this.#queue.length > 0 || this.#sending) && Date.now() < until) {
      if (!this.#sending) await this.#send(until);
      else await new Promise((r) => setTimeout(r, 10));
      if (this.#backoffMs > 0) break; // the monitor is not answering: do not hold the shutdown
    }
    const left = this.#queue.reduce((sum, c) => sum + c.records, 0);
    if (left > 0) droppedShutdown.inc(left);
    this.#queue = [];
    openLogs.delete(this);
    this.#client.close();
  }

  /** One stream of the queue's head, when none is in flight and no backoff is running. */
  async #send(deadlineMs = Date.now() + sendTimeoutMs): Promise<void> {
    if (this.#sending || Date.now() < this.#retryAt) return;
    this.#writeBlocks();
    if (this.#queue.length === 0) return;
    this.#sending = true;
    // Up to 4 MiB of whole chunks; the last one taken stops being filled.
    let taken = 0;
    let bytes = 0;
    while (taken < this.#queue.length && (taken === 0 || bytes + this.#queue[taken].length <= maxStreamBytes)) bytes += this.#queue[taken++].length;
    const chunks = this.#queue.splice(0, taken);
    const records = chunks.reduce((sum, c) => sum + c.records, 0);
    try {
      await this.#client.clientStreamBytes(MonitorService.method.ingestRecords, chunks.map((c) => c.body), { deadlineMs });
      this.#release(bytes);
      // Answered after the monitor read the whole stream: no byte of it waits to be sent. (A
      // failed stream's buffers are not reused: the socket may still hold some of them.)
      this.#recycle(chunks);
      sent.inc(records);
      this.#backoffMs = 0;
    } catch (err) {
      const code = err instanceof ConnectError ? err.code : Code.Unknown;
      if (refusals.has(code)) {
        this.#release(bytes);
        droppedRejected.inc(records);
        this.#warn(`the monitor refused ${records} prediction records`, err);
      } else {
        // Back to the head of the queue, in order, for the next attempt.
        this.#queue.unshift(...chunks);
        sendFailures.inc();
        this.#backoffMs = Math.min(maxBackoffMs, Math.max(100, this.#backoffMs * 2));
        this.#retryAt = Date.now() + this.#backoffMs;
        this.#warn(`cannot send prediction records to the monitor at ${this.settings.monitorAddress} (retrying in ${this.#backoffMs} ms)`, err);
      }
    } finally {
      this.#sending = false;
    }
  }

  /** Records acknowledged or given up on no longer count against the queue's bound. */
  #release(bytes: number): void {
    this.#bytes -= bytes;
  }

  /** Logs at most one warning per 10 s: a monitor that is down must not flood the log. */
  #warn(message: string, err: unknown): void {
    const now = Date.now();
    if (now - this.#lastWarnAt < 10_000) return;
    this.#lastWarnAt = now;
    this.logger.warn({ err: err instanceof Error ? err.message : String(err) }, message);
  }
}

export type { RecordFacts, RecordTensor };
export { RecordSource } from "./record-writer.js";
