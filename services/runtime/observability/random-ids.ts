import { randomFillSync } from "node:crypto";

/*
 * Random ids for every call (request ids, trace and span ids), from a pool of random bytes
 * refilled 4 KiB at a time: one crypto call per ~250 ids.
 */

const pool = Buffer.alloc(4096);
let poolOffset = pool.length;

function take(bytes: number): number {
  if (poolOffset + bytes > pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  poolOffset += bytes;
  return poolOffset - bytes;
}

/** `bytes` random bytes as lower-case hex. */
export function randomHex(bytes: number): string {
  const at = take(bytes);
  return pool.toString("hex", at, at + bytes);
}

const hexDigits = Buffer.from("0123456789abcdef", "latin1");
const uuidText = Buffer.alloc(36);
/** Where each of the 16 bytes' two digits go in "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx". */
const uuidPositions = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
uuidText[8] = uuidText[13] = uuidText[18] = uuidText[23] = 0x2d; // "-"

/**
 * A random UUID (version 4, RFC 9562) as one flat string. crypto.randomUUID builds its string
 * from pieces, and every later read of its characters (the prediction log writes each request
 * id) must first copy them into one.
 */
export function randomUuid(): string {
  const at = take(16);
  for (let i = 0; i < 16; i++) {
    let byte = pool[at + i];
    if (i === 6) byte = (byte & 0x0f) | 0x40; // version 4
    else if (i === 8) byte = (byte & 0x3f) | 0x80; // the RFC's variant
    const position = uuidPositions[i];
    uuidText[position] = hexDigits[byte >> 4];
    uuidText[position + 1] = hexDigits[byte & 0x0f];
  }
  return uuidText.toString("latin1", 0, 36);
}
