// PROTOTYPE, not used by any service: how much a purpose-built HTTP/2 client would save per
// mesh call, compared with node:http2's (services/runtime/client/grpc-client.ts), for docs/benchmarks.md. It
// speaks just enough HTTP/2 (RFC 9113) for unary gRPC calls on one connection: a pre-encoded
// HPACK header block per path (static-table indexes and literals, no dynamic table), one
// HEADERS and one DATA frame per call, SETTINGS and PING acknowledged, windows opened wide
// once at start.
//
// What a real one would add, and this one omits (so its figures are an upper bound of the
// gain): HPACK decoding of the response headers and trailers (grpc-status is not read: a call
// counts as answered when its trailers arrive), flow control beyond the initial windows, GOAWAY
// and RST_STREAM handling, reconnection, deadlines and cancellation.
import * as net from "node:net";

const frameType = { data: 0, headers: 1, rstStream: 3, settings: 4, ping: 6, goaway: 7 } as const;
const flag = { endStream: 0x1, ack: 0x1, endHeaders: 0x4, padded: 0x8, priority: 0x20 } as const;

function frameHeader(length: number, type: number, flags: number, streamId: number): Buffer {
  const header = Buffer.allocUnsafe(9);
  header.writeUIntBE(length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(streamId, 5);
  return header;
}

/** An HPACK string literal, not Huffman-coded (RFC 7541, 5.2), with a 7-bit length prefix. */
function hpackString(value: string): Buffer {
  const bytes = Buffer.from(value, "latin1");
  return Buffer.concat([hpackInteger(bytes.length, 7, 0), bytes]);
}

function hpackInteger(value: number, prefixBits: number, firstByte: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([firstByte | value]);
  const out = [firstByte | max];
  value -= max;
  while (value >= 128) {
    out.push((value % 128) | 128);
    value = Math.floor(value / 128);
  }
  out.push(value);
  return Buffer.from(out);
}

/** The request header block of a unary gRPC call to `path` (literal fields without indexing). */
function headerBlock(authority: string, path: string): Buffer {
  return Buffer.concat([
    Buffer.from([0x83, 0x86]), // :method POST, :scheme http (static table 3, 6)
    hpackInteger(4, 4, 0x00), // :path, name from static table 4
    hpackString(path),
    hpackInteger(1, 4, 0x00), // :authority, static table 1
    hpackString(authority),
    hpackInteger(31, 4, 0x00), // content-type, static table 31
    hpackString("application/grpc"),
    Buffer.from([0x00]), // te (not in the static table): new name
    hpackString("te"),
    hpackString("trailers"),
  ]);
}

interface Pending {
  chunks: Buffer[];
  resolve(message: Buffer): void;
  reject(error: Error): void;
}

export class LeanH2Client {
  private readonly socket: net.Socket;
  private readonly blocks = new Map<string, Buffer>();
  private readonly pending = new Map<number, Pending>();
  private nextStreamId = 1;
  private buffered: Buffer = Buffer.alloc(0);
  private readonly ready: Promise<void>;

  constructor(private readonly address: string) {
    const [host, port] = address.split(":");
    this.socket = net.connect({ host, port: Number(port), noDelay: true });
    this.ready = new Promise((resolve, reject) => {
      this.socket.once("connect", () => resolve());
      this.socket.once("error", reject);
    });
    // Preface, SETTINGS (push off, stream windows at the maximum), connection window at the maximum.
    const settings = Buffer.alloc(12);
    settings.writeUInt16BE(0x2, 0); // SETTINGS_ENABLE_PUSH
    settings.writeUInt32BE(0, 2);
    settings.writeUInt16BE(0x4, 6); // SETTINGS_INITIAL_WINDOW_SIZE
    settings.writeUInt32BE(0x7fffffff, 8);
    const windowUpdate = Buffer.alloc(4);
    windowUpdate.writeUInt32BE(0x7fffffff - 65_535, 0);
    this.socket.write(
      Buffer.concat([
        Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        frameHeader(settings.length, frameType.settings, 0, 0),
        settings,
        frameHeader(4, 8, 0, 0),
        windowUpdate,
      ]),
    );
    this.socket.on("data", (chunk: Buffer) => this.read(chunk));
    this.socket.on("error", (err) => this.failAll(err));
    this.socket.on("close", () => this.failAll(new Error("connection closed")));
  }

  /** A unary call: the request message's bytes in, the response message's bytes out. */
  async unary(path: string, message: Uint8Array): Promise<Buffer> {
    await this.ready;
    let block = this.blocks.get(path);
    if (block === undefined) this.blocks.set(path, (block = headerBlock(this.address, path)));
    const streamId = this.nextStreamId;
    this.nextStreamId += 2;
    const grpcFrame = Buffer.allocUnsafe(5 + message.length);
    grpcFrame[0] = 0;
    grpcFrame.writeUInt32BE(message.length, 1);
    grpcFrame.set(message, 5);
    return new Promise((resolve, reject) => {
      this.pending.set(streamId, { chunks: [], resolve, reject });
      this.socket.write(
        Buffer.concat([
          frameHeader(block.length, frameType.headers, flag.endHeaders, streamId),
          block,
          frameHeader(grpcFrame.length, frameType.data, flag.endStream, streamId),
          grpcFrame,
        ]),
      );
    });
  }

  close(): void {
    this.socket.end();
  }

  private read(chunk: Buffer): void {
    let data = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    while (data.length >= 9) {
      const length = data.readUIntBE(0, 3);
      if (data.length < 9 + length) break;
      const type = data[3];
      const flags = data[4];
      const streamId = data.readUInt32BE(5) & 0x7fffffff;
      const payload = data.subarray(9, 9 + length);
      data = data.subarray(9 + length);
      this.frame(type, flags, streamId, payload);
    }
    this.buffered = data;
  }

  private frame(type: number, flags: number, streamId: number, payload: Buffer): void {
    switch (type) {
      case frameType.settings:
        if ((flags & flag.ack) === 0) this.socket.write(frameHeader(0, frameType.settings, flag.ack, 0));
        return;
      case frameType.ping:
        if ((flags & flag.ack) === 0) this.socket.write(Buffer.concat([frameHeader(8, frameType.ping, flag.ack, 0), payload]));
        return;
      case frameType.data: {
        const call = this.pending.get(streamId);
        const padding = flags & flag.padded ? payload[0] : 0;
        call?.chunks.push(flags & flag.padded ? payload.subarray(1, payload.length - padding) : payload);
        return;
      }
      case frameType.headers: {
        if ((flags & flag.endStream) === 0) return; // response headers; trailers end the stream
        const call = this.pending.get(streamId);
        if (call === undefined) return;
        this.pending.delete(streamId);
        const body = Buffer.concat(call.chunks);
        call.resolve(body.subarray(5));
        return;
      }
      case frameType.rstStream:
      case frameType.goaway:
        this.failAll(new Error(`frame type ${type} from the server`));
        return;
    }
  }

  private failAll(error: Error): void {
    for (const call of this.pending.values()) call.reject(error);
    this.pending.clear();
  }
}
