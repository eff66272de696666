// PROTOTYPE, not used by any service: how much a purpose-built HTTP/2 server would save per
// call against node:http2's (what services/runtime/serve/grpc-h2.ts serves native gRPC on), for
// docs/benchmarks.md. The mesh's client already runs on its own HTTP/2 connection
// (services/runtime/client/h2-connection.ts); this asks whether the server side should too.
//
// It speaks just enough HTTP/2 (RFC 9113) for unary gRPC calls: the request's headers decoded
// with the mesh's HPACK decoder (services/runtime/client/hpack.ts), pre-encoded response
// headers and trailers, one socket write per connection per turn of the event loop, windows
// opened wide at start and topped up. What a real one would add, and this one omits (so its
// figures are an upper bound of the gain): CONTINUATION, the peer's flow-control windows for
// large responses (it answers 1-row calls: one frame), RST_STREAM and GOAWAY handling,
// deadlines, TLS.
import * as net from "node:net";
import { frameHeader } from "../../services/runtime/client/h2-connection.js";
import { HpackDecoder } from "../../services/runtime/client/hpack.js";

const frameType = { data: 0, headers: 1, settings: 4, ping: 6, windowUpdate: 8 } as const;
const flag = { endStream: 0x1, ack: 0x1, endHeaders: 0x4, padded: 0x8, priority: 0x20 } as const;

/** ":status 200" (static index 8) and content-type application/grpc (a literal on static name 31). */
const responseHeaders = Buffer.concat([Buffer.from([0x88, 0x0f, 0x10, 16]), Buffer.from("application/grpc")]);
/** "grpc-status: 0" as a literal with a new name, not indexed. */
const okTrailers = Buffer.concat([Buffer.from([0x00, 11]), Buffer.from("grpc-status"), Buffer.from([1]), Buffer.from("0")]);

/** Serves unary calls on `port`: `answer` maps a request message to its response message (or a promise of it). */
export function startLeanServer(port: number, answer: (request: Buffer) => Buffer | Promise<Buffer>, listening: () => void): net.Server {
  const server = net.createServer({ noDelay: true }, (socket) => new LeanConnection(socket, answer));
  server.listen(port, "127.0.0.1", listening);
  return server;
}

class LeanConnection {
  private readonly decoder = new HpackDecoder();
  private readonly bodies = new Map<number, Buffer[]>();
  private received: Buffer | undefined;
  private prefaceSeen = false;
  private outgoing: Buffer[] = [];
  private flushQueued = false;
  private unacknowledged = 0;

  constructor(
    private readonly socket: net.Socket,
    private readonly answer: (request: Buffer) => Buffer | Promise<Buffer>,
  ) {
    const settings = Buffer.alloc(6);
    settings.writeUInt16BE(0x4, 0); // SETTINGS_INITIAL_WINDOW_SIZE
    settings.writeUInt32BE(4 * 1024 * 1024, 2);
    const windowUpdate = Buffer.alloc(4);
    windowUpdate.writeUInt32BE(16 * 1024 * 1024, 0);
    this.write(frameHeader(6, frameType.settings, 0, 0), settings, frameHeader(4, frameType.windowUpdate, 0, 0), windowUpdate);
    socket.on("data", (chunk: Buffer) => this.read(chunk));
    socket.on("error", () => socket.destroy());
  }

  private write(...buffers: Buffer[]): void {
    this.outgoing.push(...buffers);
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(() => {
        this.flushQueued = false;
        const out = this.outgoing;
        this.outgoing = [];
        if (!this.socket.destroyed) this.socket.write(out.length === 1 ? out[0] : Buffer.concat(out));
      });
    }
  }

  private read(chunk: Buffer): void {
    let data = this.received === undefined ? chunk : Buffer.concat([this.received, chunk]);
    this.received = undefined;
    if (!this.prefaceSeen) {
      if (data.length < 24) {
        this.received = data;
        return;
      }
      this.prefaceSeen = true;
      data = data.subarray(24);
    }
    let at = 0;
    while (data.length - at >= 9) {
      const length = data.readUIntBE(at, 3);
      if (data.length - at < 9 + length) break;
      this.frame(data[at + 3], data[at + 4], data.readUInt32BE(at + 5) & 0x7fffffff, data.subarray(at + 9, at + 9 + length));
      at += 9 + length;
    }
    if (at < data.length) this.received = data.subarray(at);
  }

  private frame(type: number, flags: number, streamId: number, payload: Buffer): void {
    if (type === frameType.settings) {
      if ((flags & flag.ack) === 0) this.write(frameHeader(0, frameType.settings, flag.ack, 0));
    } else if (type === frameType.ping) {
      if ((flags & flag.ack) === 0) this.write(frameHeader(8, frameType.ping, flag.ack, 0), payload);
    } else if (type === frameType.headers) {
      let block = flags & flag.padded ? payload.subarray(1, payload.length - payload[0]) : payload;
      if (flags & flag.priority) block = block.subarray(5);
      this.decoder.decode(block); // the path is not needed: one method is served
      this.bodies.set(streamId, []);
    } else if (type === frameType.data) {
      this.bodies.get(streamId)?.push(payload);
      this.unacknowledged += payload.length;
      if (this.unacknowledged >= 8 * 1024 * 1024) {
        const increment = Buffer.allocUnsafe(4);
        increment.writeUInt32BE(this.unacknowledged, 0);
        this.write(frameHeader(4, frameType.windowUpdate, 0, 0), increment);
        this.unacknowledged = 0;
      }
      if (flags & flag.endStream) {
        const parts = this.bodies.get(streamId) ?? [];
        this.bodies.delete(streamId);
        const body = parts.length === 1 ? parts[0] : Buffer.concat(parts);
        const response = this.answer(body.subarray(5));
        if (response instanceof Promise) void response.then((message) => this.respond(streamId, message));
        else this.respond(streamId, response);
      }
    }
  }

  private respond(streamId: number, response: Buffer): void {
    const framed = message(response);
    this.write(
      frameHeader(responseHeaders.length, frameType.headers, flag.endHeaders, streamId),
      responseHeaders,
      frameHeader(framed.length, frameType.data, 0, streamId),
      framed,
      frameHeader(okTrailers.length, frameType.headers, flag.endHeaders | flag.endStream, streamId),
      okTrailers,
    );
  }
}

/** A gRPC message frame: not compressed, its length, the bytes. */
function message(bytes: Buffer): Buffer {
  const framed = Buffer.allocUnsafe(5 + bytes.length);
  framed[0] = 0;
  framed.writeUInt32BE(bytes.length, 1);
  bytes.copy(framed, 5);
  return framed;
}
