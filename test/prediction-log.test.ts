// The prediction log's hand encoder (runtime/prediction-log/record-writer.ts) against
// protobuf-es: every field it writes decodes to what it was given.
import { fromBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { IngestRecordsRequestSchema, PredictionRecordSchema, RecordSource as Source } from "../gen/mlmesh/monitor/v1/monitor_pb.js";
import { encodeIngestRequest, encodeRecord, RecordSource, type RecordFacts } from "../services/runtime/prediction-log/record-writer.js";

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
