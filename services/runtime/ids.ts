import { randomBytes } from "node:crypto";

/**
 * A UUIDv7 (RFC 9562: 48-bit millisecond timestamp, version 7, variant, random bits). Ids sort
 * by creation time, so list order is creation order and the last id is a stable page token.
 */
export function newId(): string {
  const random = randomBytes(10);
  random[0] = (random[0] & 0x0f) | 0x70; // version 7
  random[2] = (random[2] & 0x3f) | 0x80; // variant 10
  const hex = Date.now().toString(16).padStart(12, "0") + random.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}
