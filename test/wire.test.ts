// The hand-written wire codecs of services/model/wire/predict-wire.ts against protobuf-es
// and protovalidate, the definitions they must agree with: thousands of generated messages
// (seeded, so a failure reproduces), canonical and mangled.
//  - A request the fast decoder accepts must decode to the same fields with protobuf-es and be
//    valid for protovalidate; a canonical valid request must be accepted.
//  - A response must encode byte for byte as protobuf-es encodes it.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { createValidator } from "@bufbuild/protovalidate";
import { describe, expect, it } from "vitest";
import { PredictModelsRequestSchema, PredictModelsResponseSchema, PredictRequestSchema, PredictResponseSchema } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { PredictLabelRequestSchema } from "../gen/mlmesh/proxy/v1/proxy_pb.js";
import { ItemState, RegisterItemsRequestSchema, RegisterItemsResponseSchema, type ItemSchema } from "../gen/mlmesh/batch/v1/batch_pb.js";
import { decodeRegisterItemsRequest, encodeItemsResponse } from "../services/batch/register-wire.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  decodePredictLabelRequest,
  decodePredictModelsRequest,
  decodePredictRequest,
  encodePredictModelsRequest,
  encodePredictModelsResponse,
  encodePredictRequest,
  encodePredictResponse,
  PackedPredictResponse,
  PredictModelsAnswer,
  packRows,
  type PackedRows,
} from "../services/model/wire/predict-wire.js";
import { invalidArgument } from "../services/runtime/serve/errors.js";

const validator = createValidator();

/** A small seeded PRNG (mulberry32). */
function prng(seed: number) {
  let a = seed;
  const next = () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(items: readonly T[]): T => items[int(items.length)];
  return { next, int, pick };
}

const nameChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";
const specialFloats = [0, -0, 1, -1, 3.4e38, -3.4e38, 1e-45, -1e-45, 5.1, Math.fround(0.1), Number.NaN, Infinity, -Infinity];

function randomModel(r: ReturnType<typeof prng>): string {
  const length = r.pick([1, 2, 8, 8, 20, 20, 127, 128, 129]);
  let name = r.next() < 0.9 ? r.pick([..."abcXYZ019"]) : r.pick([".", "_", "@"]);
  while (name.length < length) name += nameChars[r.int(nameChars.length)];
  if (r.next() < 0.3) name += `@${r.pick(["production", "staging", "Prod", "1a", "latest", "", "a-b_c"])}`;
  if (r.next() < 0.05) name = r.pick(["", "é", "iris svc", "iris@", "@prod", "iris\u0000"]);
  return name;
}

function randomValue(r: ReturnType<typeof prng>, allowNonFinite: boolean): number {
  if (r.next() < 0.02) {
    const value = r.pick(specialFloats);
    return allowNonFinite || Number.isFinite(Math.fround(value)) ? value : 0.5;
  }
  return (r.next() - 0.5) * 10 ** r.int(6);
}

function randomRows(r: ReturnType<typeof prng>, allowEdge: boolean): { values: number[] }[] {
  const rowCount = allowEdge && r.next() < 0.05 ? r.pick([0, 10_001]) : 1 + r.int(40);
  const width = 1 + r.int(8);
  return Array.from({ length: rowCount }, () => {
    const count = allowEdge && r.next() < 0.03 ? r.pick([0, 1025, width + 1]) : width;
    return { values: Array.from({ length: count }, () => randomValue(r, allowEdge)) };
  });
}

/** The same request in a non-canonical form protobuf-es still reads: unpacked values, an unknown field, or split rows. */
function oddEncoding(r: ReturnType<typeof prng>, model: string, rows: { values: number[] }[]): Uint8Array {
  const w = new BinaryWriter();
  w.tag(1, WireType.LengthDelimited).string(model);
  const style = r.int(4);
  for (const row of rows) {
    w.tag(3, WireType.LengthDelimited).fork();
    if (style === 0) for (const v of row.values) w.tag(1, WireType.Bit32).float(v);
    else if (style === 1) {
      w.tag(1, WireType.LengthDelimited).fork();
      for (const v of row.values) w.float(v);
      w.join();
      w.tag(9, WireType.Varint).uint32(7);
    } else {
      const half = row.values.length >> 1;
      for (const part of [row.values.slice(0, half), row.values.slice(half)]) {
        w.tag(1, WireType.LengthDelimited).fork();
        for (const v of part) w.float(v);
        w.join();
      }
    }
    w.join();
  }
  if (style === 3) w.tag(15, WireType.Varint).uint32(1);
  return w.finish();
}

function mangle(r: ReturnType<typeof prng>, bytes: Uint8Array): Uint8Array {
  const copy = Uint8Array.from(bytes);
  switch (r.int(3)) {
    case 0:
      return copy.subarray(0, r.int(copy.length + 1));
    case 1:
      for (let i = 0; i < 1 + r.int(3); i++) copy[r.int(copy.length)] = r.int(256);
      return copy;
    default:
      return Uint8Array.from([...copy, ...copy.subarray(0, r.int(copy.length))]);
  }
}

/** What protobuf-es and protovalidate make of the bytes: the message, or why not. */
function reference(bytes: Uint8Array): { model: string; version: number; rows: number[][]; invalidRows: number } | "undecodable" | "invalid" {
  let message;
  try {
    message = fromBinary(PredictRequestSchema, bytes);
  } catch {
    return "undecodable";
  }
  if (validator.validate(PredictRequestSchema, message).kind !== "valid") return "invalid";
  return { model: message.model, version: message.version, rows: message.rows.map((row) => row.values), invalidRows: message.invalidRows };
}

// The two fuzz cases are CPU-bound (protovalidate checks every one of 12,000 encodings): about
// 17 s alone on this 2-core machine, 36 s beside the suite's other file and its browser, so
// they get a budget of their own rather than the suite's 30 s.
const fuzzBudgetMs = 120_000;

describe("hand-written Predict codecs (model/wire)", () => {
  it("decodes PredictRequest only as protobuf-es decodes it, and only when protovalidate finds it valid", () => {
    const r = prng(20261125);
    let accepted = 0;
    let canonicalValid = 0;
    for (let i = 0; i < 4000; i++) {
      const model = randomModel(r);
      const rows = randomRows(r, true);
      const version = r.pick([0, 1, 2, 300, 4294967295]);
      const invalidRows = r.pick([0, 0, 1, 2]);
      const canonical = toBinary(PredictRequestSchema, create(PredictRequestSchema, { model, version, rows, invalidRows }));
      const variants = [canonical, oddEncoding(r, model, rows), mangle(r, canonical)];
      for (const [v, bytes] of variants.entries()) {
        const fast = decodePredictRequest(Buffer.from(bytes));
        const expected = reference(bytes);
        if (fast !== undefined) {
          accepted++;
          expect(expected, `variant ${v} of case ${i}`).not.toBeTypeOf("string");
          expect({ model: fast.model, version: fast.version, rows: fast.rows.map((row) => row.values), invalidRows: fast.invalidRows }).toEqual(expected);
        } else if (v === 0 && typeof expected === "object") {
          throw new Error(`case ${i}: a canonical valid request was not decoded: ${JSON.stringify({ model, version, rows: rows.length, invalidRows })}`);
        }
        if (v === 0 && typeof expected === "object") canonicalValid++;
      }
    }
    expect(canonicalValid).toBeGreaterThan(1000);
    expect(accepted).toBeGreaterThanOrEqual(canonicalValid);
    // InvalidRows values its defined_only rule refuses: never decoded here, refused by protovalidate.
    for (const invalidRows of [3, 99, 2 ** 31 - 1]) {
      const bytes = toBinary(PredictRequestSchema, create(PredictRequestSchema, { model: "iris_svc", rows: [{ values: [1, 2, 3, 4] }], invalidRows }));
      expect(decodePredictRequest(Buffer.from(bytes)), String(invalidRows)).toBeUndefined();
      expect(reference(bytes), String(invalidRows)).toBe("invalid");
    }
  }, fuzzBudgetMs);

  it("decodes packed_values with row_width as protobuf-es and protovalidate read them", () => {
    const r = prng(20261202);
    const rowsOf = ({ features, offsets, rowCount }: PackedRows) => Array.from({ length: rowCount }, (_, i) => Array.from(features.subarray(offsets[i], offsets[i + 1])));
    let accepted = 0;
    for (let i = 0; i < 1500; i++) {
      const width = r.next() < 0.1 ? r.pick([0, 1024, 1025]) : 1 + r.int(8);
      const rowCount = r.next() < 0.02 ? r.pick([0, 10_001]) : 1 + r.int(40);
      const count = rowCount * Math.min(width, 1025) + (r.next() < 0.05 ? 1 : 0);
      const packedValues = Array.from({ length: count }, () => Math.fround(randomValue(r, true)));
      const rows = r.next() < 0.05 ? [{ values: [1, 2] }] : [];
      const rowWidth = r.next() < 0.05 ? 0 : width;
      const init = { model: r.pick(["iris_svc", "iris_svc@production", "bad name"]), version: r.pick([0, 2]), packedValues, rowWidth, rows, packedResponse: r.next() < 0.5 };
      const canonical = toBinary(PredictRequestSchema, create(PredictRequestSchema, init));
      for (const [v, bytes] of [canonical, mangle(r, canonical)].entries()) {
        let expected: { model: string; version: number; rows: number[][]; rowWidth: number; packedResponse: boolean } | undefined;
        try {
          const message = fromBinary(PredictRequestSchema, bytes);
          if (validator.validate(PredictRequestSchema, message).kind === "valid") {
            const { model, version, rowWidth: w, packedResponse } = message;
            const packedRows = Array.from({ length: message.packedValues.length / (w || 1) }, (_, j) => message.packedValues.slice(j * w, (j + 1) * w));
            expected = { model, version, rows: message.rows.length > 0 ? message.rows.map((row) => row.values) : packedRows, rowWidth: w, packedResponse };
          }
        } catch {
          expected = undefined;
        }
        const fast = decodePredictRequest(Buffer.from(bytes));
        if (fast !== undefined) {
          accepted++;
          expect(expected, `variant ${v} of case ${i}`).toBeDefined();
          expect({ model: fast.model, version: fast.version, rows: rowsOf(fast.packed), rowWidth: fast.rowWidth, packedResponse: fast.packedResponse }).toEqual(expected);
          // Read as protobuf-es would: the rows stay in packed_values.
          expect(fast.rows).toEqual(fast.rowWidth > 0 ? [] : expected!.rows.map((values) => ({ $typeName: "mlmesh.predictor.v1.Row", values })));
        } else if (v === 0 && expected !== undefined) {
          throw new Error(`case ${i}: a canonical valid packed request was not decoded: ${JSON.stringify({ width, rowCount, rowWidth, rows: rows.length })}`);
        }
      }
    }
    expect(accepted).toBeGreaterThan(500);
    // The contract's own words for each way a packed request can be wrong.
    const refusal = (init: object) => {
      const result = validator.validate(PredictRequestSchema, create(PredictRequestSchema, { model: "iris_svc", ...init }));
      return result.kind === "invalid" ? result.violations.map((violation) => violation.toString()).join("; ") : result.kind;
    };
    expect(refusal({ packedValues: [1, 2, 3, 4], rowWidth: 4 })).toBe("valid");
    expect(refusal({})).toMatch(/rows or as packed_values/);
    expect(refusal({ rows: [{ values: [1] }], packedValues: [1], rowWidth: 1 })).toMatch(/not both/);
    expect(refusal({ packedValues: [1, 2, 3, 4] })).toMatch(/row_width must be 1\.\.1024/);
    expect(refusal({ rows: [{ values: [1] }], rowWidth: 4 })).toMatch(/row_width must be 1\.\.1024 when packed_values is set, and 0 otherwise/);
    expect(refusal({ packedValues: [1, 2, 3], rowWidth: 2 })).toMatch(/whole rows/);
    expect(refusal({ packedValues: [1, Number.NaN], rowWidth: 2 })).toMatch(/packed_values\[1\].*finite/);
  }, fuzzBudgetMs);

  it("decodes PredictLabelRequest rows under the same rules", () => {
    const r = prng(7);
    for (let i = 0; i < 2000; i++) {
      const rows = randomRows(r, true);
      const canonical = toBinary(PredictLabelRequestSchema, create(PredictLabelRequestSchema, { rows }));
      for (const bytes of [canonical, mangle(r, canonical)]) {
        const fast = decodePredictLabelRequest(Buffer.from(bytes));
        let expected: number[][] | undefined;
        try {
          const message = fromBinary(PredictLabelRequestSchema, bytes);
          if (validator.validate(PredictLabelRequestSchema, message).kind === "valid") expected = message.rows.map((row) => row.values);
        } catch {
          expected = undefined;
        }
        if (fast !== undefined) expect(fast.rows.map((row) => row.values)).toEqual(expected);
        else if (bytes === canonical) expect(expected).toBeUndefined();
      }
    }
  }, fuzzBudgetMs);

  it("decodes the batch service's RegisterItemsRequest (items of Row's shape) under the same rules", () => {
    const r = prng(11);
    for (let i = 0; i < 2000; i++) {
      const items = randomRows(r, true);
      const canonical = toBinary(RegisterItemsRequestSchema, create(RegisterItemsRequestSchema, { items }));
      for (const bytes of [canonical, mangle(r, canonical)]) {
        const fast = decodeRegisterItemsRequest(Buffer.from(bytes));
        let expected: number[][] | undefined;
        try {
          const message = fromBinary(RegisterItemsRequestSchema, bytes);
          if (validator.validate(RegisterItemsRequestSchema, message).kind === "valid") expected = message.items.map((item) => item.values);
        } catch {
          expected = undefined;
        }
        if (fast !== undefined) expect(fast.items.map((item) => item.values)).toEqual(expected);
        else if (bytes === canonical) expect(expected).toBeUndefined();
      }
    }
  }, fuzzBudgetMs);

  it("encodes RegisterItemsResponse byte for byte as protobuf-es does, leaving it what it refuses", () => {
    const r = prng(23);
    const strings = ["", "a", "01J9Z5R8X4", "é", "日本", "x".repeat(130)];
    const time = () =>
      r.next() < 0.2 ? undefined : { $typeName: "google.protobuf.Timestamp" as const, seconds: BigInt(r.pick([0, 1, 127, 128, 1_764_000_000, 2 ** 40, -5])), nanos: r.pick([0, 1, 999_999_999, 123_000_000]) };
    let encoded = 0;
    for (let i = 0; i < 2000; i++) {
      const items: MessageInitShape<typeof ItemSchema>[] = Array.from({ length: r.pick([0, 1, 3, 50]) }, () => ({
        id: r.pick(strings),
        values: Array.from({ length: r.pick([0, 1, 4, 40]) }, () => (r.next() < 0.01 ? r.pick([1e39, Number.NaN, Infinity]) : Math.fround(randomValue(r, false)))),
        state: r.pick([ItemState.UNSPECIFIED, ItemState.PENDING, ItemState.PREDICTED, ItemState.FAILED]),
        probabilities: Array.from({ length: r.pick([0, 3]) }, () => r.next()),
        labels: Array.from({ length: r.pick([0, 3]) }, () => r.pick(strings)),
        label: r.pick(strings),
        model: r.pick(strings),
        modelVersion: r.pick([0, 1, 128, 4294967295]),
        error: r.pick(strings),
        attempts: r.pick([0, 1, 300]),
        createTime: time(),
        updateTime: time(),
        predictTime: time(),
      }));
      let expected: Uint8Array | undefined;
      try {
        expected = toBinary(RegisterItemsResponseSchema, create(RegisterItemsResponseSchema, { items }));
      } catch {
        expected = undefined; // a float beyond float32's range: protobuf-es refuses it
      }
      const fast = encodeItemsResponse({ items });
      if (fast === undefined) continue;
      encoded++;
      expect(expected, `case ${i}: protobuf-es refused what the fast encoder wrote`).toBeDefined();
      expect(Buffer.from(fast).equals(Buffer.from(expected!)), `case ${i}`).toBe(true);
    }
    expect(encoded).toBeGreaterThan(500); // the rest hold a time before 1970 or a float beyond float32
  });

  it("encodes PredictResponse byte for byte as protobuf-es does", () => {
    const r = prng(42);
    const labelPool = ["setosa", "versicolor", "virginica", "", "é", "日本", "a".repeat(200)];
    for (let i = 0; i < 3000; i++) {
      const classCount = r.pick([0, 1, 2, 3, 3, 3, 10, 40]);
      const rowCount = r.pick([0, 1, 1, 5, 30]);
      const labels = Array.from({ length: classCount }, () => r.pick(labelPool));
      const probabilities = Float32Array.from({ length: classCount * rowCount }, () =>
        r.next() < 0.15 ? r.pick([0, -0, Number.NaN, 1, 0.5]) : r.next(),
      );
      const outlierScores = r.next() < 0.3 ? Float32Array.from({ length: rowCount }, () => r.pick([0, -0, 0.5, -0.25, 3])) : undefined;
      const packed = r.next() < 0.3;
      const response = new PackedPredictResponse(r.pick(["iris_svc", "", "ü"]), r.pick([0, 1, 127, 128, 4294967295]), labels, probabilities, rowCount, undefined, outlierScores, packed);
      const expected = toBinary(PredictResponseSchema, create(PredictResponseSchema, response));
      expect(Buffer.from(encodePredictResponse(response)).equals(Buffer.from(expected)), `case ${i}`).toBe(true);
      // And protobuf-es reads the predictions back as the packed response describes them.
      const decoded = fromBinary(PredictResponseSchema, encodePredictResponse(response));
      expect(decoded.predictions).toHaveLength(packed ? 0 : rowCount);
      expect(decoded.packedProbabilities).toHaveLength(packed ? probabilities.length : 0);
      expect(decoded.packedOutlierScores).toHaveLength(packed && outlierScores ? rowCount : 0);
    }
  });

  it("encodes a PredictRequest over several packed requests byte for byte as protobuf-es does", () => {
    const r = prng(99);
    for (let i = 0; i < 2000; i++) {
      const parts = Array.from({ length: 1 + r.int(4) }, () => randomRows(r, false).map((row) => ({ values: row.values.map((v) => Math.fround(v)) })));
      const model = r.pick(["iris_svc_setosa@production", "", "ü", "m"]);
      const version = r.pick([0, 1, 128, 4294967295]);
      const expected = toBinary(PredictRequestSchema, create(PredictRequestSchema, { model, version, rows: parts.flat() }));
      expect(encodePredictRequest(model, version, parts.map(packRows)).equals(Buffer.from(expected)), `case ${i}`).toBe(true);
    }
  });

  it("decodes PredictModelsRequest (models, rows or packed_values) as protobuf-es and protovalidate read it", () => {
    const r = prng(160);
    const rowsOf = ({ features, offsets, rowCount }: PackedRows) => Array.from({ length: rowCount }, (_, i) => Array.from(features.subarray(offsets[i], offsets[i + 1])));
    let accepted = 0;
    for (let i = 0; i < 2000; i++) {
      const models = Array.from({ length: r.pick([0, 1, 1, 3, 3, 16, 17]) }, () => ({ model: randomModel(r), version: r.pick([0, 0, 1, 4294967295]) }));
      const packed = r.next() < 0.4;
      const rows = randomRows(r, r.next() < 0.3);
      const width = rows[0]?.values.length ?? 1;
      const init = packed
        ? { models, packedValues: rows.flatMap((row) => row.values.slice(0, width).concat(Array(Math.max(0, width - row.values.length)).fill(1))), rowWidth: width }
        : { models, rows, invalidRows: r.pick([0, 1, 2]) };
      const canonical = toBinary(PredictModelsRequestSchema, create(PredictModelsRequestSchema, { ...init, packedResponse: r.next() < 0.5 }));
      for (const [v, bytes] of [canonical, mangle(r, canonical)].entries()) {
        let expected: { models: { model: string; version: number }[]; rows: number[][]; rowWidth: number; packedResponse: boolean; invalidRows: number } | undefined;
        try {
          const message = fromBinary(PredictModelsRequestSchema, bytes);
          if (validator.validate(PredictModelsRequestSchema, message).kind === "valid") {
            const w = message.rowWidth;
            const packedRows = Array.from({ length: message.packedValues.length / (w || 1) }, (_, j) => message.packedValues.slice(j * w, (j + 1) * w));
            expected = {
              models: message.models.map(({ model, version }) => ({ model, version })),
              rows: message.rows.length > 0 ? message.rows.map((row) => row.values) : packedRows,
              rowWidth: w,
              packedResponse: message.packedResponse,
              invalidRows: message.invalidRows,
            };
          }
        } catch {
          expected = undefined;
        }
        const fast = decodePredictModelsRequest(Buffer.from(bytes));
        if (fast !== undefined) {
          accepted++;
          expect(expected, `variant ${v} of case ${i}`).toBeDefined();
          const models = fast.models.map(({ model, version }) => ({ model, version }));
          expect({ models, rows: rowsOf(fast.packed), rowWidth: fast.rowWidth, packedResponse: fast.packedResponse, invalidRows: fast.invalidRows }).toEqual(expected);
        } else if (v === 0 && expected !== undefined) {
          throw new Error(`case ${i}: a canonical valid PredictModelsRequest was not decoded`);
        }
      }
    }
    expect(accepted).toBeGreaterThan(300);
  }, fuzzBudgetMs);

  it("encodes PredictModels' request and response byte for byte as protobuf-es does", () => {
    const r = prng(2026);
    for (let i = 0; i < 1000; i++) {
      const models = Array.from({ length: 1 + r.int(4) }, () => ({ model: r.pick(["iris_svc_setosa@production", "m", "ü"]), version: r.pick([0, 1, 128]) }));
      const parts = Array.from({ length: 1 + r.int(3) }, () => randomRows(r, false).map((row) => ({ values: row.values.map((v) => Math.fround(v)) })));
      const expectedRequest = toBinary(PredictModelsRequestSchema, create(PredictModelsRequestSchema, { models, rows: parts.flat(), packedResponse: true }));
      expect(encodePredictModelsRequest(models, parts.map(packRows)).equals(Buffer.from(expectedRequest)), `request ${i}`).toBe(true);

      const rowCount = r.pick([1, 3, 20]);
      const answer = new PredictModelsAnswer(
        models.map(({ model, version }) => {
          const roll = r.next();
          if (roll < 0.2) return { model, version, error: new ConnectError(r.pick(["model \"x\" not found", "", "é"]), r.pick([Code.NotFound, Code.FailedPrecondition])) };
          if (roll < 0.3) return { model, version, error: invalidArgument("rows[0] has 3 values", [{ field: "rows[0]", reason: "ROW_WIDTH", description: "has 3 values" }]) };
          const labels = r.pick([["a", "b"], ["setosa", "versicolor", "virginica"]]);
          const probabilities = Float32Array.from({ length: labels.length * rowCount }, () => r.next());
          const outliers = r.next() < 0.3 ? Float32Array.from({ length: rowCount }, () => r.next() - 0.5) : undefined;
          return { model, version, response: new PackedPredictResponse(model, 1, labels, probabilities, rowCount, undefined, outliers, r.next() < 0.5) };
        }),
      );
      const expected = toBinary(PredictModelsResponseSchema, create(PredictModelsResponseSchema, answer));
      expect(Buffer.from(encodePredictModelsResponse(answer)!).equals(Buffer.from(expected)), `response ${i}`).toBe(true);
    }
  });
});
