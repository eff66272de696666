import { endianness } from "node:os";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { ItemInput, ItemSchema, RegisterItemsRequest } from "../../gen/mlmesh/batch/v1/batch_pb.js";
import { decodeRowList, varintSize, type PackedRows } from "../model/wire/predict-wire.js";
import type { MethodWire } from "../runtime/serve/registration.js";

/*
 * RegisterItems' codecs for the native gRPC path (runtime/serve/registration.ts: MethodWire),
 * under the same rules as the Predictor's (services/model/wire/predict-wire.ts; checked against
 * protobuf-es and protovalidate in test/wire.test.ts). A 1,000-item request was 1,000 messages
 * decoded by reflection and 1,000 `values` walked by protovalidate, and its answer 1,000 Items
 * encoded the same way: about 15 % of a registering batch service's CPU (docs/benchmarks.md).
 */

/** A RegisterItemsRequest decoded by decodeRegisterItemsRequest: ItemInput has Row's shape and rules. */
class DecodedRegisterItemsRequest {
  readonly $typeName = "mlmesh.batch.v1.RegisterItemsRequest" as const;
  #items: ItemInput[] | undefined;
  constructor(readonly packed: PackedRows) {}
  get items(): ItemInput[] {
    if (this.#items) return this.#items;
    const { features, offsets, rowCount } = this.packed;
    const items: ItemInput[] = new Array(rowCount);
    for (let i = 0; i < rowCount; i++) items[i] = { $typeName: "mlmesh.batch.v1.ItemInput", values: Array.from(features.subarray(offsets[i], offsets[i + 1])) };
    return (this.#items = items);
  }
}

/** RegisterItemsRequest (batch.proto), decoded and checked against its rules, or undefined. */
export function decodeRegisterItemsRequest(bytes: Buffer): DecodedRegisterItemsRequest | undefined {
  const packed = decodeRowList(bytes);
  return packed && new DecodedRegisterItemsRequest(packed);
}

type ItemInit = MessageInitShape<typeof ItemSchema>;

const lengthDelimited = 2;
const littleEndian = endianness() === "LE";
/** Floats staged for copying (little-endian machines), grown as needed. */
let staged = new Float32Array(1024);
const float32Max = 3.4028234663852886e38;

/** A Timestamp's encoded size, or -1 when it is not one this writer handles (negative seconds). */
function timestampSize(time: Timestamp | undefined): number {
  if (time === undefined) return 0;
  const seconds = Number(time.seconds);
  if (seconds < 0 || !Number.isSafeInteger(seconds) || time.nanos < 0) return -1;
  return (seconds === 0 ? 0 : 1 + varintSize(seconds)) + (time.nanos === 0 ? 0 : 1 + varintSize(time.nanos));
}

/** Writes protobuf fields into a buffer sized beforehand. */
class Writer {
  at = 0;
  constructor(readonly buffer: Buffer) {}

  varint(value: number): void {
    while (value >= 128) {
      this.buffer[this.at++] = (value % 128) | 0x80;
      value = Math.floor(value / 128);
    }
    this.buffer[this.at++] = value;
  }

  /** A field's tag, and its length when it is length-delimited. */
  field(field: number, wireType: number, length?: number): void {
    this.varint(field * 8 + wireType);
    if (length !== undefined) this.varint(length);
  }

  string(field: number, value: string, byteLength: number): void {
    if (byteLength === 0) return;
    this.field(field, lengthDelimited, byteLength);
    this.at += this.buffer.write(value, this.at, "utf8");
  }

  uint(field: number, value: number): void {
    if (value === 0) return;
    this.field(field, 0);
    this.varint(value);
  }

  floats(field: number, values: readonly number[]): void {
    if (values.length === 0) return;
    this.field(field, lengthDelimited, values.length * 4);
    if (littleEndian) {
      if (staged.length < values.length) staged = new Float32Array(values.length);
      staged.set(values);
      this.buffer.set(new Uint8Array(staged.buffer, 0, values.length * 4), this.at);
      this.at += values.length * 4;
    } else {
      for (const value of values) {
        this.buffer.writeFloatLE(value, this.at);
        this.at += 4;
      }
    }
  }

  timestamp(field: number, time: Timestamp | undefined, size: number): void {
    if (time === undefined) return;
    this.field(field, lengthDelimited, size);
    this.uint(1, Number(time.seconds));
    this.uint(2, time.nanos);
  }
}

/** An Item's parts whose sizes the writer needs, measured once. */
interface Measured {
  readonly item: ItemInit;
  readonly idBytes: number;
  readonly labelBytes: number[];
  readonly stringBytes: [number, number, number];
  readonly times: [number, number, number];
  readonly size: number;
}

function packedSize(count: number): number {
  return count === 0 ? 0 : 1 + varintSize(count * 4) + count * 4;
}

function stringSize(byteLength: number): number {
  return byteLength === 0 ? 0 : 1 + varintSize(byteLength) + byteLength;
}

/** An Item's encoded size and parts, or undefined when it holds what this writer leaves to protobuf-es. */
function measure(item: ItemInit): Measured | undefined {
  const values = item.values ?? [];
  const probabilities = item.probabilities ?? [];
  const labels = item.labels ?? [];
  const state = item.state ?? 0;
  if (state < 0 || item.modelVersion! < 0 || item.attempts! < 0) return undefined;
  // protobuf-es refuses a finite float beyond float32's range: left to it, to refuse.
  if (!floatsInRange(values) || !floatsInRange(probabilities)) return undefined;
  const idBytes = Buffer.byteLength(item.id ?? "");
  const labelBytes = labels.map((label) => Buffer.byteLength(label));
  const stringBytes: [number, number, number] = [Buffer.byteLength(item.label ?? ""), Buffer.byteLength(item.model ?? ""), Buffer.byteLength(item.error ?? "")];
  const times: [number, number, number] = [timestampSize(item.createTime as Timestamp | undefined), timestampSize(item.updateTime as Timestamp | undefined), timestampSize(item.predictTime as Timestamp | undefined)];
  if (times.includes(-1)) return undefined;
  let size = stringSize(idBytes) + packedSize(values.length) + (state === 0 ? 0 : 1 + varintSize(state)) + packedSize(probabilities.length);
  for (const bytes of labelBytes) size += 1 + varintSize(bytes) + bytes;
  for (const bytes of stringBytes) size += stringSize(bytes);
  const modelVersion = item.modelVersion ?? 0;
  const attempts = item.attempts ?? 0;
  size += (modelVersion === 0 ? 0 : 1 + varintSize(modelVersion)) + (attempts === 0 ? 0 : 1 + varintSize(attempts));
  const timeFields: (Timestamp | undefined)[] = [item.createTime as Timestamp | undefined, item.updateTime as Timestamp | undefined, item.predictTime as Timestamp | undefined];
  timeFields.forEach((time, i) => {
    if (time !== undefined) size += 1 + varintSize(times[i]) + times[i];
  });
  return { item, idBytes, labelBytes, stringBytes, times, size };
}

function floatsInRange(values: readonly number[]): boolean {
  for (const value of values) if (Number.isFinite(value) && (value > float32Max || value < -float32Max)) return false;
  return true;
}

/**
 * A RegisterItemsResponse (or any message whose field 1 is repeated Item) byte for byte as
 * protobuf-es writes it; undefined for what it leaves to protobuf-es (a timestamp before 1970,
 * a negative number where protobuf-es would write ten bytes).
 */
export function encodeItemsResponse(response: { readonly items?: readonly ItemInit[] }): Buffer | undefined {
  const measured: Measured[] = [];
  let total = 0;
  for (const item of response.items ?? []) {
    const m = measure(item);
    if (m === undefined) return undefined;
    measured.push(m);
    total += 1 + varintSize(m.size) + m.size;
  }
  const w = new Writer(Buffer.allocUnsafe(total));
  for (const { item, idBytes, labelBytes, stringBytes, times, size } of measured) {
    w.field(1, lengthDelimited, size);
    w.string(1, item.id ?? "", idBytes);
    w.floats(2, item.values ?? []);
    w.uint(3, item.state ?? 0);
    w.floats(4, item.probabilities ?? []);
    (item.labels ?? []).forEach((label, i) => {
      w.field(5, lengthDelimited, labelBytes[i]);
      w.at += w.buffer.write(label, w.at, "utf8");
    });
    w.string(6, item.label ?? "", stringBytes[0]);
    w.string(7, item.model ?? "", stringBytes[1]);
    w.uint(8, item.modelVersion ?? 0);
    w.string(9, item.error ?? "", stringBytes[2]);
    w.uint(10, item.attempts ?? 0);
    w.timestamp(11, item.createTime as Timestamp | undefined, times[0]);
    w.timestamp(12, item.updateTime as Timestamp | undefined, times[1]);
    w.timestamp(13, item.predictTime as Timestamp | undefined, times[2]);
  }
  return w.buffer;
}

/** RegisterItems' codecs. */
export const registerItemsWire: MethodWire = {
  decodeRequest: decodeRegisterItemsRequest,
  encodeResponse: (response) => encodeItemsResponse(response as { items?: ItemInit[] }),
};

// Type check: the decoded request reads as the generated message type.
void ((r: DecodedRegisterItemsRequest): Pick<RegisterItemsRequest, "$typeName" | "items"> => r);
