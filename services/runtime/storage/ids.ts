import { randomFillSync } from "node:crypto";

let lastMs = 0;
let sequence = 0;

/** Random bytes from the CSPRNG, drawn 4 KiB at a time: one draw per 512 ids, not one per id. */
const randomPool = Buffer.allocUnsafe(4096);
let randomAt = randomPool.length;

function randomEight(): Buffer {
  if (randomAt + 8 > randomPool.length) {
    randomFillSync(randomPool);
    randomAt = 0;
  }
  randomAt += 8;
  return randomPool.subarray(randomAt - 8, randomAt);
}

/**
 * A UUIDv7 (RFC 9562: 48-bit millisecond timestamp, version 7, 12-bit sequence, variant, 62
 * random bits). Ids sort by creation time, and within one process strictly increase even in
 * the same millisecond (the sequence, RFC 9562 method 1), so list order is creation order and
 * the last id is a stable page token.
 */
export function newId(): string {
  let ms = Date.now();
  if (ms <= lastMs) {
    sequence++;
    if (sequence > 0xfff) {
      lastMs++; // borrow the next millisecond rather than wrap
      sequence = 0;
    }
    ms = lastMs;
  } else {
    lastMs = ms;
    sequence = 0;
  }
  const random = randomEight();
  random[0] = (random[0] & 0x3f) | 0x80; // variant 10
  const hex = ms.toString(16).padStart(12, "0") + "7" + sequence.toString(16).padStart(3, "0") + random.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}
