/**
 * HPACK (RFC 7541), as the mesh's HTTP/2 client needs it: a full decoder for what servers send
 * (static and dynamic tables, Huffman-coded strings, table size updates) and an encoder that
 * writes only literals without indexing, so the server never has to keep a table for us.
 */

/** Decoded header fields: the first value of each name (lower-case, as HTTP/2 requires). */
export type HeaderFields = Map<string, string>;

/** A header block the peer sent that breaks RFC 7541: the connection cannot go on (COMPRESSION_ERROR). */
export class HpackError extends Error {}

/** RFC 7541 Appendix A: the static table, indexes 1 to 61. */
const staticTable: readonly (readonly [string, string])[] = [
  [":authority", ""], [":method", "GET"], [":method", "POST"], [":path", "/"], [":path", "/index.html"],
  [":scheme", "http"], [":scheme", "https"], [":status", "200"], [":status", "204"], [":status", "206"],
  [":status", "304"], [":status", "400"], [":status", "404"], [":status", "500"], ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"], ["accept-language", ""], ["accept-ranges", ""], ["accept", ""],
  ["access-control-allow-origin", ""], ["age", ""], ["allow", ""], ["authorization", ""], ["cache-control", ""],
  ["content-disposition", ""], ["content-encoding", ""], ["content-language", ""], ["content-length", ""],
  ["content-location", ""], ["content-range", ""], ["content-type", ""], ["cookie", ""], ["date", ""], ["etag", ""],
  ["expect", ""], ["expires", ""], ["from", ""], ["host", ""], ["if-match", ""], ["if-modified-since", ""],
  ["if-none-match", ""], ["if-range", ""], ["if-unmodified-since", ""], ["last-modified", ""], ["link", ""],
  ["location", ""], ["max-forwards", ""], ["proxy-authenticate", ""], ["proxy-authorization", ""], ["range", ""],
  ["referer", ""], ["refresh", ""], ["retry-after", ""], ["server", ""], ["set-cookie", ""],
  ["strict-transport-security", ""], ["transfer-encoding", ""], ["user-agent", ""], ["vary", ""], ["via", ""],
  ["www-authenticate", ""],
];

/** Static-table indexes of the names the encoder writes (RFC 7541 Appendix A). */
export const staticName = { authority: 1, path: 4, authorization: 23, contentType: 31, userAgent: 58 } as const;

/**
 * RFC 7541 Appendix B: the Huffman code's length in bits for each symbol (bytes 0-255, then EOS).
 * The code is canonical (codes of one length are consecutive, in symbol order, after those of
 * shorter lengths), so the lengths are all a decoder needs.
 */
const huffmanCodeLengths = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
  6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
  13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
  15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
  20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
  22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
  26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
  20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
  30,
];
const eos = 256;
const maxCodeLength = 30;

/** The canonical code, as a decoder walks it: per length, its first code, how many, where its symbols start. */
const huffman = (() => {
  const symbols = Array.from({ length: 257 }, (_, s) => s).sort((a, b) => huffmanCodeLengths[a] - huffmanCodeLengths[b] || a - b);
  const firstCode = new Array<number>(maxCodeLength + 1).fill(0);
  const count = new Array<number>(maxCodeLength + 1).fill(0);
  const firstIndex = new Array<number>(maxCodeLength + 1).fill(0);
  for (const s of symbols) count[huffmanCodeLengths[s]]++;
  let code = 0;
  let index = 0;
  for (let length = 1; length <= maxCodeLength; length++) {
    firstCode[length] = code;
    firstIndex[length] = index;
    code = (code + count[length]) * 2;
    index += count[length];
  }
  return { symbols, firstCode, count, firstIndex };
})();

function huffmanDecode(bytes: Buffer): string {
  const out: number[] = [];
  let code = 0;
  let length = 0;
  for (const byte of bytes) {
    for (let bit = 7; bit >= 0; bit--) {
      code = code * 2 + ((byte >> bit) & 1);
      length++;
      const offset = code - huffman.firstCode[length];
      if (offset < huffman.count[length]) {
        const symbol = huffman.symbols[huffman.firstIndex[length] + offset];
        if (symbol === eos) throw new HpackError("a Huffman-coded string contains EOS");
        out.push(symbol);
        code = 0;
        length = 0;
      } else if (length === maxCodeLength) {
        throw new HpackError("an invalid Huffman code");
      }
    }
  }
  // Padding: fewer than 8 bits, all ones (the start of EOS).
  if (length > 7 || code !== 2 ** length - 1) throw new HpackError("bad Huffman padding");
  return Buffer.from(out).toString("latin1");
}

/**
 * Decodes the header blocks of one connection, in order: the dynamic table lives as long as the
 * connection. `maxTableSize` is the SETTINGS_HEADER_TABLE_SIZE this side announced.
 */
export class HpackDecoder {
  /** Newest first, as HPACK indexes them (index 62 is the newest). */
  private readonly table: [string, string][] = [];
  private tableSize = 0;
  private tableCapacity: number;

  constructor(private readonly maxTableSize = 4096) {
    this.tableCapacity = maxTableSize;
  }

  decode(block: Buffer): HeaderFields {
    const fields: HeaderFields = new Map();
    const reader = { block, at: 0 };
    while (reader.at < block.length) {
      const first = block[reader.at];
      if (first & 0x80) {
        // Indexed field.
        const [name, value] = this.entry(readInteger(reader, 7));
        if (!fields.has(name)) fields.set(name, value);
      } else if ((first & 0xe0) === 0x20) {
        // Dynamic table size update.
        const size = readInteger(reader, 5);
        if (size > this.maxTableSize) throw new HpackError(`a table size update to ${size} above the ${this.maxTableSize} announced`);
        this.tableCapacity = size;
        this.evict(0);
      } else {
        // A literal: with incremental indexing (01), without (0000) or never indexed (0001).
        const indexed = (first & 0xc0) === 0x40;
        const nameIndex = readInteger(reader, indexed ? 6 : 4);
        const name = nameIndex === 0 ? readString(reader) : this.entry(nameIndex)[0];
        const value = readString(reader);
        if (indexed) this.insert(name, value);
        if (!fields.has(name)) fields.set(name, value);
      }
    }
    return fields;
  }

  private entry(index: number): readonly [string, string] {
    if (index >= 1 && index <= staticTable.length) return staticTable[index - 1];
    const entry = this.table[index - staticTable.length - 1];
    if (entry === undefined) throw new HpackError(`header index ${index} is not in the table`);
    return entry;
  }

  private insert(name: string, value: string): void {
    const size = name.length + value.length + 32; // RFC 7541 4.1
    this.evict(size);
    if (size <= this.tableCapacity) {
      this.table.unshift([name, value]);
      this.tableSize += size;
    }
  }

  /** Evicts the oldest entries until `room` more octets fit (all of them when it cannot). */
  private evict(room: number): void {
    while (this.table.length > 0 && this.tableSize + room > this.tableCapacity) {
      const [name, value] = this.table.pop()!;
      this.tableSize -= name.length + value.length + 32;
    }
  }
}

function readInteger(reader: { block: Buffer; at: number }, prefixBits: number): number {
  const max = 2 ** prefixBits - 1;
  let value = reader.block[reader.at++] & max;
  if (value < max) return value;
  let shift = 1;
  for (;;) {
    if (reader.at >= reader.block.length) throw new HpackError("a header block ends inside an integer");
    const byte = reader.block[reader.at++];
    value += (byte & 0x7f) * shift;
    if (value > 0xffffffff) throw new HpackError("an integer too large in a header block");
    if ((byte & 0x80) === 0) return value;
    shift *= 128;
  }
}

function readString(reader: { block: Buffer; at: number }): string {
  if (reader.at >= reader.block.length) throw new HpackError("a header block ends before a string");
  const coded = (reader.block[reader.at] & 0x80) !== 0;
  const length = readInteger(reader, 7);
  if (reader.at + length > reader.block.length) throw new HpackError("a string runs past the end of its header block");
  const bytes = reader.block.subarray(reader.at, reader.at + length);
  reader.at += length;
  return coded ? huffmanDecode(bytes) : bytes.toString("latin1");
}

/** Appends an integer with a `prefixBits`-bit prefix, the prefix byte's other bits `flags` (RFC 7541 5.1). */
function writeInteger(out: number[], value: number, prefixBits: number, flags: number): void {
  const max = 2 ** prefixBits - 1;
  if (value < max) {
    out.push(flags | value);
    return;
  }
  out.push(flags | max);
  value -= max;
  while (value >= 128) {
    out.push((value % 128) | 128);
    value = Math.floor(value / 128);
  }
  out.push(value);
}

function writeString(out: number[], value: string): void {
  writeInteger(out, value.length, 7, 0);
  for (let i = 0; i < value.length; i++) out.push(value.charCodeAt(i) & 0xff);
}

/**
 * A header block of literals without indexing (RFC 7541 6.2.2): names given by static-table
 * index (a number) or spelled out (a string). `:method POST` and `:scheme` are indexed fields.
 */
export function encodeHeaderBlock(scheme: "http" | "https", fields: readonly (readonly [number | string, string])[]): Buffer {
  const out: number[] = [0x83, scheme === "https" ? 0x87 : 0x86]; // :method POST, :scheme (indexes 3, 7 or 6)
  for (const [name, value] of fields) {
    if (typeof name === "number") writeInteger(out, name, 4, 0);
    else {
      out.push(0);
      writeString(out, name);
    }
    writeString(out, value);
  }
  return Buffer.from(out);
}
