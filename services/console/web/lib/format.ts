import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";

/** A timestamp as "2026-12-02 06:10:11" (UTC), or "" when unset. */
export function utc(timestamp: Timestamp | Date | undefined): string {
  if (timestamp === undefined) return "";
  const date = timestamp instanceof Date ? timestamp : timestampDate(timestamp);
  return date.toISOString().slice(0, 19).replace("T", " ");
}

export function bytes(count: number | bigint): string {
  const n = Number(count);
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** A tensor as "input float32[-1, 4]". */
export function tensor(spec: { name: string; dtype: string; shape: readonly (bigint | number)[] } | undefined): string {
  if (spec === undefined) return "";
  return `${spec.name} ${spec.dtype}[${spec.shape.map((d) => (Number(d) < 0 ? "N" : String(d))).join(", ")}]`;
}

/** A JSON value of a Struct (parameters, evaluations) as short text. */
export function value(v: unknown): string {
  if (v === undefined) return "—";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(4);
  return typeof v === "string" ? v : JSON.stringify(v);
}

export const rate = (rps: number) => (rps >= 100 ? rps.toFixed(0) : rps >= 10 ? rps.toFixed(1) : rps.toFixed(2));
export const ms = (v: number | null | undefined) => (v === null || v === undefined ? "—" : v >= 100 ? `${v.toFixed(0)} ms` : `${v.toFixed(2)} ms`);
export const percent = (share: number) => `${(share * 100).toFixed(share > 0 && share < 0.01 ? 2 : 1)} %`;
