/*
 * Tensors as mlmesh passes them between the wire and onnxruntime: the element types ONNX
 * models use, their Open Inference Protocol names, and host tensors (dims and a typed array,
 * or strings). No protocol and no onnxruntime here: codecs and sessions build on these.
 */

/** The element types mlmesh serves, as onnxruntime names them. */
export const dtypes = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool", "string"] as const;
export type Dtype = (typeof dtypes)[number];

/** The Open Inference Protocol's datatype of each element type. */
export const oipDatatypeOf: Readonly<Record<Dtype, string>> = {
  float16: "FP16",
  float32: "FP32",
  float64: "FP64",
  int8: "INT8",
  int16: "INT16",
  int32: "INT32",
  int64: "INT64",
  uint8: "UINT8",
  uint16: "UINT16",
  uint32: "UINT32",
  uint64: "UINT64",
  bool: "BOOL",
  string: "BYTES",
};

export const dtypeOfOipDatatype: ReadonlyMap<string, Dtype> = new Map(dtypes.map((d) => [oipDatatypeOf[d], d]));

/** Bytes per element in raw (little-endian) form; strings have none (length-prefixed). */
export const elementBytes: Readonly<Record<Exclude<Dtype, "string">, number>> = {
  float16: 2,
  float32: 4,
  float64: 8,
  int8: 1,
  int16: 2,
  int32: 4,
  int64: 8,
  uint8: 1,
  uint16: 2,
  uint32: 4,
  uint64: 8,
  bool: 1,
};

export function isDtype(value: string): value is Dtype {
  return (dtypes as readonly string[]).includes(value);
}

/** A tensor of a model's signature; -1 marks a dynamic dimension. */
export interface TensorSpec {
  readonly name: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
}

/** What a model takes and gives, read from its ONNX graph. */
export interface Signature {
  readonly inputs: readonly TensorSpec[];
  readonly outputs: readonly TensorSpec[];
}

/** A tensor's elements: a typed array of its element type (float16 as its bits, bool as 0/1 bytes), or strings. */
export type TensorData =
  | Float32Array
  | Float64Array
  | Int8Array
  | Int16Array
  | Int32Array
  | BigInt64Array
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | BigUint64Array
  | string[];

/** A tensor in the Predictor's memory. */
export interface HostTensor {
  readonly dtype: Dtype;
  readonly dims: readonly number[];
  readonly data: TensorData;
}

/** An empty typed array of `length` elements of `dtype` (strings: an array of empty strings). */
export function allocate(dtype: Dtype, length: number): TensorData {
  switch (dtype) {
    case "float16":
    case "uint16":
      return new Uint16Array(length);
    case "float32":
      return new Float32Array(length);
    case "float64":
      return new Float64Array(length);
    case "int8":
      return new Int8Array(length);
    case "int16":
      return new Int16Array(length);
    case "int32":
      return new Int32Array(length);
    case "int64":
      return new BigInt64Array(length);
    case "uint8":
    case "bool":
      return new Uint8Array(length);
    case "uint32":
      return new Uint32Array(length);
    case "uint64":
      return new BigUint64Array(length);
    case "string":
      return new Array<string>(length).fill("");
  }
}

/** The shape as text: [N, 4] for [-1, 4]. */
export function shapeText(shape: readonly (number | bigint)[]): string {
  return `[${shape.map((d) => (Number(d) < 0 ? "N" : String(d))).join(", ")}]`;
}

/** A float16 (its bits) as a number. */
export function halfToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 0x1f) return fraction === 0 ? sign * Number.POSITIVE_INFINITY : Number.NaN;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

/** A number as the bits of the nearest float16 (rounding to nearest even). */
export function numberToHalf(value: number): number {
  const f32 = new Float32Array([value]);
  const bits = new Uint32Array(f32.buffer)[0];
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  let mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  const e = exponent - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - e;
    const half = mantissa >> shift;
    const rest = mantissa & ((1 << shift) - 1);
    const midpoint = 1 << (shift - 1);
    return sign | (rest > midpoint || (rest === midpoint && half & 1) ? half + 1 : half);
  }
  let half = (e << 10) | (mantissa >> 13);
  const rest = mantissa & 0x1fff;
  // Rounding may carry into the exponent, up to infinity (0x7c00): the encoding allows it.
  if (rest > 0x1000 || (rest === 0x1000 && half & 1)) half++;
  return sign | half;
}
