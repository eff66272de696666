// The prediction log's hand encoder (runtime/prediction-log/record-writer.ts) and its record
// blocks (record-block.ts) against protobuf-es: every field it writes decodes to what it was
// given, and the monitor reads a block's records back as they would have been sent alone.
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { decodeIngestRequest, ingestedRecords } from "../services/monitor/record-wire.js";
import { IngestRecordsRequestSchema, IngestRecordsResponseSchema, PredictionRecordSchema, RecordSource as Source, type IngestRecordsRequest } from "../gen/mlmesh/monitor/v1/monitor_pb.js";
import { createLogger } from "../services/runtime/observability/logger.js";
import { metricsText } from "../services/runtime/observability/metrics.js";
import { PredictionLog } from "../services/runtime/prediction-log/prediction-log.js";
import { fitsBlock, RecordBlock } from "../services/runtime/prediction-log/record-block.js";
import { encodeIngestRequest, encodeRecord, ProtoWriter, RecordSource, type RecordFacts } from "../services/runtime/prediction-log/record-writer.js";

const facts: RecordFacts = {
  requestId: "req-1",
  parentRequestId: "parent-1",
  traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
  caller: "mesh-batch",
  source: RecordSource.predictor,
  api: "shadow",
  model: "iris_svc",
  version: 3,
  alias: "production",
  arm: "shadow",
  timeMs: 1_764_000_000_123,
  latencyMs: 2.5,
  status: 9,
  error: "shadow failed",
  rowCount: 2,
  rows: { width: 2, values: Float32Array.from([1, 2, 3, 4]) },
  classification: { labels: ["a", "b"], probabilities: Float32Array.from([0.25, 0.75, 0.5, 0.5]) },
  outlierScores: Float32Array.from([-0.5, 1.5]),
  inputTensors: [{ name: "x", datatype: "INT64", shape: [2, 1], contents: Uint8Array.from([1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]) }],
  images: [{ sha256: "ab".repeat(32), sizeBytes: 300 }],
  shadow: { primaryVersion: 1, rows: 2, agreeingRows: 1, meanAbsDifference: 0.125, latencyDifferenceMs: -1.5 },
};

describe("the prediction record encoder", () => {
  it("writes strings ASCII or not, short or long, in low and high fields, as protobuf-es reads them", () => {
    const long = "é".repeat(70) + "x".repeat(200); // over 127 bytes and characters: lengths of two bytes
    const strings = {
      requestId: "r".repeat(127), // the longest one-byte length
      caller: "Zoë the caller",
      model: "модель",
      alias: "a\u{1F600}b", // a surrogate pair
      error: long,
      parentRequestId: "parent ✓", // field 18: a two-byte tag
    };
    const record = fromBinary(PredictionRecordSchema, encodeRecord({ ...facts, ...strings, classification: { labels: ["setosa", "ñandú"], probabilities: Float32Array.from([0.5, 0.5, 0.5, 0.5]) } }, 1 << 20));
    expect(record).toMatchObject(strings);
    expect(record.outputs?.classification?.labels).toEqual(["setosa", "ñandú"]);
  });

  it("writes every field protobuf-es reads back, a negative latency difference included", () => {
    const record = fromBinary(PredictionRecordSchema, encodeRecord(facts, 1 << 20));
    expect(record).toMatchObject({
      requestId: "req-1",
      parentRequestId: "parent-1",
      traceId: facts.traceId,
      caller: "mesh-batch",
      source: Source.PREDICTOR,
      api: "shadow",
      model: "iris_svc",
      version: 3,
      alias: "production",
      arm: "shadow",
      status: 9,
      error: "shadow failed",
      rowCount: 2,
      truncated: false,
      outlierScores: [-0.5, 1.5],
    });
    expect(record.time).toMatchObject({ seconds: 1_764_000_000n, nanos: 123_000_000 });
    expect(record.latency).toMatchObject({ seconds: 0n, nanos: 2_500_000 });
    expect(record.inputs?.rows).toMatchObject({ width: 2, values: [1, 2, 3, 4] });
    expect(record.inputs?.tensors[0]).toMatchObject({ name: "x", datatype: "INT64", shape: [2n, 1n] });
    expect(record.inputs?.images[0]).toMatchObject({ sha256: facts.images![0].sha256, sizeBytes: 300n });
    expect(record.outputs?.classification).toMatchObject({ labels: ["a", "b"], probabilities: [0.25, 0.75, 0.5, 0.5] });
    expect(record.shadow).toMatchObject({ primaryVersion: 1, rows: 2, agreeingRows: 1, meanAbsDifference: 0.125 });
    expect(record.shadow?.latencyDifference).toMatchObject({ seconds: 0n, nanos: -1_500_000 });
  });

  it("leaves a comparison's difference out when it is NaN, and keeps shapes alone past the payload limit", () => {
    const record = fromBinary(PredictionRecordSchema, encodeRecord({ ...facts, shadow: { ...facts.shadow!, meanAbsDifference: Number.NaN, latencyDifferenceMs: -2500 } }, 8));
    expect(record.shadow?.meanAbsDifference).toBeUndefined();
    expect(record.shadow?.latencyDifference).toMatchObject({ seconds: -2n, nanos: -500_000_000 });
    expect(record.truncated).toBe(true);
    expect(record.inputs?.rows).toMatchObject({ width: 2, values: [] });
    expect(record.inputs?.tensors[0].contents.length).toBe(0);
  });

  it("frames records as an IngestRecordsRequest", () => {
    const records = [encodeRecord(facts, 1 << 20), encodeRecord({ ...facts, requestId: "req-2", shadow: undefined }, 1 << 20)];
    const request = fromBinary(IngestRecordsRequestSchema, encodeIngestRequest(records));
    expect(request.records.map((r) => r.requestId)).toEqual(["req-1", "req-2"]);
    expect(request.records[1].shadow).toBeUndefined();
  });
});

/**
 * An HTTP/2 server answering IngestRecords as the monitor does (every message must hold a record
 * or a block), handing each message to `received`; and a prediction log sending to it.
 */
async function fakeMonitor(received: (request: IngestRecordsRequest) => void): Promise<{ log: PredictionLog; close: () => Promise<unknown> }> {
  const server = http2.createServer();
  server.on("stream", (stream) => {
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      let body = Buffer.concat(chunks);
      let empty = false;
      while (body.length >= 5) {
        const length = body.readUInt32BE(1);
        const request = fromBinary(IngestRecordsRequestSchema, body.subarray(5, 5 + length));
        received(request);
        if (request.records.length === 0 && request.blocks.length === 0) empty = true;
        body = body.subarray(5 + length);
      }
      const status = empty ? { "grpc-status": "3", "grpc-message": "a message must hold at least one record or block" } : { "grpc-status": "0" };
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
      stream.on("wantTrailers", () => stream.sendTrailers(status));
      const reply = toBinary(IngestRecordsResponseSchema, create(IngestRecordsResponseSchema, {}));
      const framed = Buffer.alloc(5 + reply.length);
      framed.writeUInt32BE(reply.length, 1);
      framed.set(reply, 5);
      stream.end(framed);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const log = new PredictionLog(
    {
      monitorAddress: `127.0.0.1:${(server.address() as AddressInfo).port}`,
      sampleRates: new Map(),
      defaultSampleRate: 1,
      queueBytes: 4 * 1024 * 1024,
      maxPayloadBytes: 16 * 1024 * 1024,
      flushIntervalMs: 60_000,
    },
    createLogger("test", "error"),
    {},
  );
  return { log, close: () => new Promise((resolve) => server.close(resolve)) };
}

/** A successful call of a two-label classifier on `rowCount` rows of two features, traced when `i` is even. */
const labels = ["a", "b"];
function call(i: number, rowCount: number): RecordFacts {
  return {
    requestId: `call-${i}`,
    traceId: i % 2 === 0 ? "4bf92f3577b34da6a3ce929d0e0e4736" : undefined,
    source: RecordSource.predictor,
    api: "predict",
    model: "iris_svc",
    version: 2,
    alias: "production",
    timeMs: 1_764_000_000_000 + i,
    latencyMs: 0.25 * (i + 1),
    status: 0,
    rowCount,
    rows: { width: 2, values: Float32Array.from({ length: 2 * rowCount }, (_, k) => i + k / 8) },
    classification: { labels, probabilities: Float32Array.from({ length: 2 * rowCount }, (_, k) => (k % 2 === 0 ? 0.25 : 0.75)) },
    outlierScores: Float32Array.from({ length: rowCount }, (_, k) => k - 0.5),
  };
}

describe("record blocks", () => {
  it("hold successful classifier calls, and nothing a block has no column for", () => {
    expect(fitsBlock(call(0, 1))).toBe(true);
    expect(fitsBlock({ ...call(0, 1), outlierScores: undefined, traceId: undefined })).toBe(true);
    for (const other of [{ status: 9 }, { error: "x" }, { parentRequestId: "p" }, { shadow: facts.shadow }, { inputTensors: [] }, { images: [] }, { rows: undefined }, { classification: undefined }, { rowCount: 2 }]) {
      expect(fitsBlock({ ...call(0, 1), ...other })).toBe(false);
    }
  });

  it("take a call that shares the block's header only", () => {
    const block = new RecordBlock();
    block.start(call(0, 1));
    expect(block.accepts(call(1, 5))).toBe(true);
    for (const other of [{ version: 3 }, { alias: undefined }, { arm: "b" }, { caller: "someone" }, { api: "oip" }, { outlierScores: undefined }]) {
      expect(block.accepts({ ...call(1, 1), ...other })).toBe(false);
    }
    // Labels are compared by content (the Proxy makes its list per call).
    expect(block.accepts({ ...call(1, 1), classification: { labels: [...labels], probabilities: Float32Array.of(0.5, 0.5) } })).toBe(true);
    expect(block.accepts({ ...call(1, 1), classification: { labels: ["a", "c"], probabilities: Float32Array.of(0.5, 0.5) } })).toBe(false);
  });

  it("are read back by the monitor as the records a sender would have written one by one", () => {
    const calls = [call(0, 1), call(1, 3), call(2, 1)];
    const block = new RecordBlock();
    block.start(calls[0]);
    for (const c of calls) {
      expect(block.accepts(c)).toBe(true);
      block.add(c);
    }
    const w = new ProtoWriter(Buffer.allocUnsafe(16));
    block.writeTo(w);
    expect(block.records).toBe(0);
    const bytes = Buffer.from(w.buffer.subarray(0, w.at));
    const request = fromBinary(IngestRecordsRequestSchema, bytes);
    expect(request.blocks[0]).toMatchObject({
      source: Source.PREDICTOR,
      model: "iris_svc",
      version: 2,
      alias: "production",
      width: 2,
      labels,
      requestIds: ["call-0", "call-1", "call-2"],
      traceIds: [calls[0].traceId, "", calls[0].traceId],
      timeOffsetsUs: [0n, 1000n, 2000n],
      latenciesUs: [250, 500, 750],
      rowCounts: [1, 3, 1],
      outlierScores: [-0.5, -0.5, 0.5, 1.5, -0.5],
    });
    const alone = calls.map((c) => fromBinary(PredictionRecordSchema, encodeRecord(c, 1 << 20)));
    // The native gRPC path (read by hand) and every other (protobuf-es) store the same bytes.
    const byHand = decodeIngestRequest(bytes)!.ingested;
    expect(byHand.map((r) => fromBinary(PredictionRecordSchema, r.bytes))).toEqual(alone);
    expect(byHand.map((r) => r.outlierRows)).toEqual([0, 2, 0]);
    expect(ingestedRecords(request).map((r) => r.bytes)).toEqual(byHand.map((r) => r.bytes));
  });

  it("are sent by the log, full ones first, the last one when the queue is sent, beside whole records", async () => {
    const ids: string[] = [];
    const messages: number[] = [];
    const monitor = await fakeMonitor((request) => {
      for (const record of request.records) ids.push(record.requestId);
      for (const block of request.blocks) ids.push(...block.requestIds);
      messages.push(request.records.length + request.blocks.reduce((sum, b) => sum + b.requestIds.length, 0));
    });
    try {
      for (let i = 0; i < 2500; i++) monitor.log.append(call(i, 1 + (i % 3)));
      monitor.log.append({ ...call(2500, 1), status: 3, error: "bad rows" });
      await monitor.log.close(5000);
      expect(ids.sort()).toEqual(Array.from({ length: 2501 }, (_, i) => `call-${i}`).sort());
      expect(messages.every((n) => n <= 10_000)).toBe(true);
      expect(monitor.log.queuedBytes).toBe(0);
    } finally {
      await monitor.close();
    }
  });

  it("are kept per version while a traffic policy interleaves the calls of several", async () => {
    const blocks: number[] = [];
    const ids: string[] = [];
    const monitor = await fakeMonitor((request) => {
      blocks.push(...request.blocks.map((b) => b.version));
      for (const block of request.blocks) ids.push(...block.requestIds);
    });
    try {
      for (let i = 0; i < 300; i++) monitor.log.append({ ...call(i, 1), version: 1 + (i % 3) });
      // Then more versions at once than blocks are kept: each new one writes out the oldest.
      for (let i = 300; i < 360; i++) monitor.log.append({ ...call(i, 1), version: 11 + (i % 6) });
      await monitor.log.close(5000);
      expect(blocks.slice(0, 3).sort()).toEqual([1, 2, 3]);
      expect(ids.sort()).toEqual(Array.from({ length: 360 }, (_, i) => `call-${i}`).sort());
    } finally {
      await monitor.close();
    }
  });
});

describe("the prediction log's queue", () => {
  it("sends no empty message when a record is dropped into a fresh one (the monitor would refuse the whole stream)", async () => {
    const messages: number[] = [];
    const { log, close } = await fakeMonitor((request) => messages.push(request.records.length));
    try {
      // A full message (10,000 records), then a record larger than the whole queue: dropped,
      // from the new message it was written into; then one more, and one too large again.
      const small: RecordFacts = { requestId: "", source: RecordSource.predictor, api: "predict", model: "iris_svc", version: 1, timeMs: 1, latencyMs: 1, status: 0, rowCount: 1 };
      for (let i = 0; i < 10_000; i++) log.append({ ...small, requestId: `req-${i}` });
      const huge = { ...small, rows: { width: 4, values: new Float32Array(1_250_000) } };
      log.append(huge);
      log.append({ ...small, requestId: "req-last" });
      log.append(huge);
      await log.close(5000);
      expect(messages).toEqual([10_000, 1]);
    } finally {
      await close();
    }
  });

  it("queues each record as it is appended; the queue gauge reads the queue when scraped", async () => {
    // No monitor answers: what is queued stays queued until close() gives up on it.
    const log = new PredictionLog(
      { monitorAddress: "127.0.0.1:9", sampleRates: new Map(), defaultSampleRate: 1, queueBytes: 4 * 1024 * 1024, maxPayloadBytes: 1024, flushIntervalMs: 60_000 },
      createLogger("test", "error"),
      {},
    );
    const queued = async () => Number(/^mlmesh_prediction_log_queue_bytes (\d+)/m.exec((await metricsText()).body)?.[1]);
    try {
      const one = { ...facts, requestId: "rec-000", inputTensors: undefined, images: undefined, shadow: undefined };
      const size = encodeRecord(one, 1024).length;
      log.append(one);
      // Each record framed as IngestRecordsRequest.records: a tag and two length bytes.
      expect(log.queuedBytes).toBe(size + 3);
      for (let i = 1; i < 64; i++) log.append({ ...one, requestId: `rec-${String(i).padStart(3, "0")}` });
      expect(log.queuedBytes).toBe(64 * (size + 3));
      expect(await queued()).toBe(64 * (size + 3));
    } finally {
      await log.close(100);
    }
    expect(await queued()).toBe(0); // a closed log no longer counts
  });
});
