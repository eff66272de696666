import * as net from "node:net";
import * as tls from "node:tls";
import { HpackDecoder, HpackError, type HeaderFields } from "./hpack.js";

/**
 * The client side of one HTTP/2 connection (RFC 9113), written for the mesh's calls: a request
 * is one HEADERS frame and its body, the response is read straight off the socket. Compared with
 * node:http2's client it keeps no per-stream objects or event emitters and writes every frame of
 * one turn of the event loop in one socket write: about 1.4x the calls per second on one core
 * (docs/benchmarks.md, "Serving path").
 *
 * It does what a conforming client must: honours the server's SETTINGS (frame size, initial
 * window, concurrent streams), flow control both ways, CONTINUATION, padding, PING, RST_STREAM,
 * GOAWAY (streams the server never saw fail as refused; the others finish), and connection
 * errors. It does not do server push (disabled in its SETTINGS), priorities or upgrades.
 */

/** What a stream's owner is told, in order: headers, data, then end or failure (exactly one). */
export interface StreamHandler {
  /** A header block: the response headers, or the trailers (`endStream`). */
  onHeaders(fields: HeaderFields, endStream: boolean): void;
  onData(chunk: Buffer): void;
  /** The server ended the stream (after its last headers or data). */
  onEnd(): void;
  /** The stream cannot complete: reset by the server, refused, or the connection was lost. */
  onFail(reason: StreamFailure): void;
}

/** Why a stream failed: `refused` when the server never processed it (safe to send again). */
export interface StreamFailure {
  readonly message: string;
  readonly refused: boolean;
  /** The RST_STREAM or GOAWAY error code, when the server sent one. */
  readonly errorCode?: number;
}

/** RFC 9113 section 7 error codes the client sends or reads. */
export const h2Error = { noError: 0, protocol: 1, internal: 2, flowControl: 3, frameSize: 6, refusedStream: 7, cancel: 8, compression: 9, enhanceYourCalm: 11 } as const;

const frame = { data: 0, headers: 1, priority: 2, rstStream: 3, settings: 4, pushPromise: 5, ping: 6, goaway: 7, windowUpdate: 8, continuation: 9 } as const;
const flag = { endStream: 0x1, ack: 0x1, endHeaders: 0x4, padded: 0x8, priority: 0x20 } as const;
const setting = { headerTableSize: 1, enablePush: 2, maxConcurrentStreams: 3, initialWindowSize: 4, maxFrameSize: 5 } as const;

const preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
const defaultWindow = 65_535;
const maxWindow = 2 ** 31 - 1;
const maxStreamId = 2 ** 31 - 1;
/** This side's receive windows (the servers' own, services/runtime/serve/server.ts). */
const receiveStreamWindow = 4 * 1024 * 1024;
const receiveConnectionWindow = 16 * 1024 * 1024;
/** The largest frame this side accepts (the protocol's default; SETTINGS_MAX_FRAME_SIZE is not raised). */
const maxReceiveFrame = 16_384;
/** A turn's frames up to this size are copied into one buffer for the socket; larger, written as they are. */
const maxCopiedWriteBytes = 64 * 1024;

/** How to reach the server. */
export interface H2Endpoint {
  readonly host: string;
  readonly port: number;
  /** TLS: the CAs to verify the server with and this side's certificate, if any. */
  readonly tls?: { readonly ca?: string | Buffer; readonly cert?: string | Buffer; readonly key?: string | Buffer };
}

interface Stream {
  readonly id: number;
  readonly handler: StreamHandler;
  /** The body still to send, in parts (flow control holds it back); undefined once all is sent. */
  pending: Uint8Array[] | undefined;
  /** Bytes of `pending`. */
  pendingBytes: number;
  sendWindow: number;
  /** Bytes received since this side last opened the stream's window. */
  unacknowledged: number;
  /** The server ended its side; the stream closes once this side has sent its body. */
  remoteEnded: boolean;
}

/** A request: waiting for the server's concurrency limit until it has a stream id. */
interface Request {
  readonly headerBlock: Buffer;
  readonly body: Uint8Array[];
  readonly handler: StreamHandler;
  id: number | undefined;
  cancelled: boolean;
}

/** A stream's handle: cancel() resets it (RST_STREAM CANCEL) or drops it before it starts. */
export interface StreamHandle {
  cancel(): void;
}

export class H2Connection {
  /** False once the connection is closing, lost, or out of stream ids: open a new one for new calls. */
  usable = true;
  private readonly socket: net.Socket;
  private readonly decoder = new HpackDecoder();
  private readonly streams = new Map<number, Stream>();
  private readonly waiting: Request[] = [];
  private nextStreamId = 1;
  private peerMaxFrame = 16_384;
  private peerInitialWindow = defaultWindow;
  private peerMaxStreams = Infinity;
  private connectionSendWindow = defaultWindow;
  private connectionUnacknowledged = 0;
  /** Frames written in this turn of the event loop, sent together. */
  private outgoing: Uint8Array[] = [];
  private flushQueued = false;
  private received: Buffer | undefined;
  /** The stream whose header block continues in CONTINUATION frames, and its parts so far. */
  private continuing: { streamId: number; endStream: boolean; parts: Buffer[] } | undefined;
  private closed = false;

  constructor(
    endpoint: H2Endpoint,
    /** Called once when the connection can take no more streams (closing, lost, GOAWAY). */
    private readonly onUnusable: () => void,
  ) {
    const { host, port } = endpoint;
    this.socket = endpoint.tls
      ? tls.connect({
          host,
          port,
          servername: net.isIP(host) === 0 ? host : undefined,
          ca: endpoint.tls.ca,
          cert: endpoint.tls.cert,
          key: endpoint.tls.key,
          ALPNProtocols: ["h2"],
        })
      : net.connect({ host, port });
    this.socket.setNoDelay(true);
    this.socket.unref(); // an idle connection must not keep a process alive (calls in flight hold timers)
    if (this.socket instanceof tls.TLSSocket) {
      const secure = this.socket;
      secure.once("secureConnect", () => {
        if (secure.alpnProtocol !== "h2") this.destroy("the server did not agree to HTTP/2 over TLS (ALPN)");
      });
    }
    this.socket.on("data", (chunk: Buffer) => this.read(chunk));
    this.socket.on("error", (err) => this.destroy(err.message));
    this.socket.on("close", () => this.destroy("the connection closed"));

    // Writes before the socket connects are queued by Node; the peer's SETTINGS are not needed
    // before the first request (the protocol's defaults hold until they come).
    const settings = Buffer.alloc(12);
    settings.writeUInt16BE(setting.enablePush, 0);
    settings.writeUInt32BE(0, 2);
    settings.writeUInt16BE(setting.initialWindowSize, 6);
    settings.writeUInt32BE(receiveStreamWindow, 8);
    const windowUpdate = Buffer.alloc(4);
    windowUpdate.writeUInt32BE(receiveConnectionWindow - defaultWindow, 0);
    this.write(preface);
    this.write(frameHeader(settings.length, frame.settings, 0, 0), settings);
    this.write(frameHeader(4, frame.windowUpdate, 0, 0), windowUpdate);
  }

  /**
   * Opens a stream: `headerBlock` (HPACK, hpack.ts) then `body` with END_STREAM. The body's
   * parts are sent as they are, not copied: they must not change until the call has ended
   * (and the array is the connection's from then on).
   */
  request(headerBlock: Buffer, body: Uint8Array[], handler: StreamHandler): StreamHandle {
    if (!this.usable) throw new Error("the connection takes no new streams");
    if (headerBlock.length > 16_384) throw new Error(`a header block of ${headerBlock.length} bytes is larger than a frame`);
    const request: Request = { headerBlock, body, handler, id: undefined, cancelled: false };
    if (this.streams.size >= this.peerMaxStreams) this.waiting.push(request);
    else this.start(request);
    return {
      cancel: () => {
        request.cancelled = true;
        if (request.id !== undefined) this.reset(request.id, h2Error.cancel);
      },
    };
  }

  /** How many streams are open or waiting for the server's concurrency limit. */
  get active(): number {
    return this.streams.size + this.waiting.length;
  }

  /** Stops taking streams; the socket closes once the open ones have finished. */
  close(): void {
    this.markUnusable();
    this.closeIfIdle();
  }

  private start(request: Request): void {
    const { headerBlock, body, handler } = request;
    const id = this.nextStreamId;
    request.id = id;
    this.nextStreamId += 2;
    if (this.nextStreamId > maxStreamId) this.markUnusable();
    this.write(frameHeader(headerBlock.length, frame.headers, flag.endHeaders, id), headerBlock);
    let bytes = 0;
    for (const part of body) bytes += part.length;
    const stream: Stream = { id, handler, pending: body, pendingBytes: bytes, sendWindow: this.peerInitialWindow, unacknowledged: 0, remoteEnded: false };
    this.streams.set(id, stream);
    this.sendBody(stream);
  }

  /** Sends as much of a stream's body as the windows allow, in frames the server accepts. */
  private sendBody(stream: Stream): void {
    const parts = stream.pending;
    while (parts !== undefined) {
      const size = Math.min(stream.pendingBytes, this.peerMaxFrame, stream.sendWindow, this.connectionSendWindow);
      if (size <= 0 && stream.pendingBytes > 0) break; // wait for WINDOW_UPDATE (a window may be below 0 after SETTINGS)
      const last = size === stream.pendingBytes;
      this.write(frameHeader(size, frame.data, last ? flag.endStream : 0, stream.id));
      // The frame's payload: `size` bytes off the front of the parts.
      for (let left = size; left > 0; ) {
        const part = parts[0];
        if (part.length <= left) {
          this.write(part);
          parts.shift();
          left -= part.length;
        } else {
          this.write(part.subarray(0, left));
          parts[0] = part.subarray(left);
          left = 0;
        }
      }
      stream.sendWindow -= size;
      this.connectionSendWindow -= size;
      stream.pendingBytes -= size;
      if (last) {
        stream.pending = undefined;
        break;
      }
    }
    if (stream.pending === undefined && stream.remoteEnded) this.forget(stream.id);
  }

  private write(...buffers: Uint8Array[]): void {
    if (this.closed) return;
    this.outgoing.push(...buffers);
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(() => this.flush());
    }
  }

  private flush(): void {
    this.flushQueued = false;
    const out = this.outgoing;
    this.outgoing = [];
    if (this.closed || out.length === 0) return;
    if (out.length === 1) return void this.socket.write(out[0]);
    let bytes = 0;
    for (const b of out) bytes += b.length;
    if (bytes <= maxCopiedWriteBytes) return void this.socket.write(Buffer.concat(out, bytes));
    // Large bodies go as they are, in one gathered write (no copy, no large buffer to collect).
    this.socket.cork();
    for (const b of out) this.socket.write(b);
    this.socket.uncork();
  }

  private read(chunk: Buffer): void {
    let data = this.received === undefined ? chunk : Buffer.concat([this.received, chunk]);
    this.received = undefined;
    let at = 0;
    try {
      while (!this.closed && data.length - at >= 9) {
        const length = data.readUIntBE(at, 3);
        if (length > maxReceiveFrame) throw new ConnectionError(h2Error.frameSize, `a frame of ${length} bytes, above ${maxReceiveFrame}`);
        if (data.length - at < 9 + length) break;
        const type = data[at + 3];
        const flags = data[at + 4];
        const streamId = data.readUInt32BE(at + 5) & 0x7fffffff;
        const payload = data.subarray(at + 9, at + 9 + length);
        at += 9 + length;
        this.frame(type, flags, streamId, payload);
      }
    } catch (err) {
      if (err instanceof ConnectionError) return this.fail(err.code, err.message);
      if (err instanceof HpackError) return this.fail(h2Error.compression, err.message);
      throw err;
    }
    if (at < data.length) this.received = data.subarray(at);
  }

  private frame(type: number, flags: number, streamId: number, payload: Buffer): void {
    if (this.continuing !== undefined && (type !== frame.continuation || streamId !== this.continuing.streamId)) {
      throw new ConnectionError(h2Error.protocol, "a header block was interrupted by another frame");
    }
    switch (type) {
      case frame.data:
        return this.onData(streamId, flags, payload);
      case frame.headers:
        return this.onHeaders(streamId, flags, payload);
      case frame.continuation: {
        if (this.continuing === undefined) throw new ConnectionError(h2Error.protocol, "CONTINUATION without HEADERS");
        this.continuing.parts.push(payload);
        if (flags & flag.endHeaders) {
          const { streamId: id, endStream, parts } = this.continuing;
          this.continuing = undefined;
          this.onHeaderBlock(id, Buffer.concat(parts), endStream);
        }
        return;
      }
      case frame.rstStream: {
        if (payload.length !== 4) throw new ConnectionError(h2Error.frameSize, "an RST_STREAM frame not of 4 bytes");
        const code = payload.readUInt32BE(0);
        const stream = this.streams.get(streamId);
        if (stream === undefined) return;
        this.forget(streamId);
        if (stream.remoteEnded && code === h2Error.noError) return; // the response is complete; stop sending (RFC 9113 8.1)
        stream.handler.onFail({
          message: `the server reset the stream (HTTP/2 error ${code})`,
          refused: code === h2Error.refusedStream,
          errorCode: code,
        });
        return;
      }
      case frame.settings:
        return this.onSettings(flags, payload);
      case frame.ping:
        if (payload.length !== 8) throw new ConnectionError(h2Error.frameSize, "a PING frame not of 8 bytes");
        if ((flags & flag.ack) === 0) this.write(frameHeader(8, frame.ping, flag.ack, 0), payload);
        return;
      case frame.goaway:
        return this.onGoaway(payload);
      case frame.windowUpdate:
        return this.onWindowUpdate(streamId, payload);
      case frame.pushPromise:
        throw new ConnectionError(h2Error.protocol, "PUSH_PROMISE, though push is disabled");
      default:
        return; // PRIORITY and unknown frame types are ignored (RFC 9113 5.5)
    }
  }

  private onData(streamId: number, flags: number, payload: Buffer): void {
    if (streamId === 0) throw new ConnectionError(h2Error.protocol, "DATA on stream 0");
    const length = payload.length; // padding counts against the windows too
    this.connectionUnacknowledged += length;
    if (this.connectionUnacknowledged >= receiveConnectionWindow / 2) {
      this.write(frameHeader(4, frame.windowUpdate, 0, 0), uint32(this.connectionUnacknowledged));
      this.connectionUnacknowledged = 0;
    }
    const stream = this.streams.get(streamId);
    if (stream === undefined) return; // a stream this side reset: its data may still arrive
    if (stream.remoteEnded) return this.resetStream(stream, h2Error.protocol, "DATA after the end of the stream");
    stream.unacknowledged += length;
    const end = (flags & flag.endStream) !== 0;
    if (!end && stream.unacknowledged >= receiveStreamWindow / 2) {
      this.write(frameHeader(4, frame.windowUpdate, 0, streamId), uint32(stream.unacknowledged));
      stream.unacknowledged = 0;
    }
    const body = unpad(payload, flags);
    if (body.length > 0) stream.handler.onData(body);
    if (end) this.endRemote(stream);
  }

  private onHeaders(streamId: number, flags: number, payload: Buffer): void {
    if (streamId === 0) throw new ConnectionError(h2Error.protocol, "HEADERS on stream 0");
    let block = unpad(payload, flags);
    if (flags & flag.priority) block = block.subarray(5);
    const endStream = (flags & flag.endStream) !== 0;
    if (flags & flag.endHeaders) this.onHeaderBlock(streamId, block, endStream);
    else this.continuing = { streamId, endStream, parts: [block] };
  }

  private onHeaderBlock(streamId: number, block: Buffer, endStream: boolean): void {
    const fields = this.decoder.decode(block); // always: the table is the connection's
    const stream = this.streams.get(streamId);
    if (stream === undefined) return;
    if (stream.remoteEnded) return this.resetStream(stream, h2Error.protocol, "HEADERS after the end of the stream");
    stream.handler.onHeaders(fields, endStream);
    if (endStream) this.endRemote(stream);
  }

  /** The server ended its side: the stream is done for the caller. */
  private endRemote(stream: Stream): void {
    stream.remoteEnded = true;
    if (stream.pending === undefined) this.forget(stream.id);
    else this.reset(stream.id, h2Error.noError); // the answer came before the whole request: stop sending it
    stream.handler.onEnd();
  }

  private onSettings(flags: number, payload: Buffer): void {
    if (flags & flag.ack) return;
    if (payload.length % 6 !== 0) throw new ConnectionError(h2Error.frameSize, "a SETTINGS frame not a multiple of 6 bytes");
    for (let at = 0; at < payload.length; at += 6) {
      const id = payload.readUInt16BE(at);
      const value = payload.readUInt32BE(at + 2);
      if (id === setting.maxFrameSize) {
        if (value < 16_384 || value > 16_777_215) throw new ConnectionError(h2Error.protocol, `SETTINGS_MAX_FRAME_SIZE ${value}`);
        this.peerMaxFrame = value;
      } else if (id === setting.initialWindowSize) {
        if (value > maxWindow) throw new ConnectionError(h2Error.flowControl, `SETTINGS_INITIAL_WINDOW_SIZE ${value}`);
        const delta = value - this.peerInitialWindow;
        this.peerInitialWindow = value;
        for (const stream of this.streams.values()) stream.sendWindow += delta;
      } else if (id === setting.maxConcurrentStreams) {
        this.peerMaxStreams = value;
      }
      // The server's HEADER_TABLE_SIZE bounds a table this side's encoder never uses.
    }
    this.write(frameHeader(0, frame.settings, flag.ack, 0));
    this.pump();
  }

  private onWindowUpdate(streamId: number, payload: Buffer): void {
    if (payload.length !== 4) throw new ConnectionError(h2Error.frameSize, "a WINDOW_UPDATE frame not of 4 bytes");
    const increment = payload.readUInt32BE(0) & 0x7fffffff;
    if (streamId === 0) {
      if (increment === 0) throw new ConnectionError(h2Error.protocol, "a WINDOW_UPDATE of 0");
      this.connectionSendWindow += increment;
      if (this.connectionSendWindow > maxWindow) throw new ConnectionError(h2Error.flowControl, "the connection's window above 2^31-1");
      return this.pump();
    }
    const stream = this.streams.get(streamId);
    if (stream === undefined) return;
    if (increment === 0) return this.resetStream(stream, h2Error.protocol, "a WINDOW_UPDATE of 0");
    stream.sendWindow += increment;
    if (stream.sendWindow > maxWindow) return this.resetStream(stream, h2Error.flowControl, "a stream's window above 2^31-1");
    this.sendBody(stream);
  }

  private onGoaway(payload: Buffer): void {
    if (payload.length < 8) throw new ConnectionError(h2Error.frameSize, "a GOAWAY frame under 8 bytes");
    const lastStreamId = payload.readUInt32BE(0) & 0x7fffffff;
    const code = payload.readUInt32BE(4);
    this.markUnusable();
    // Streams above the last the server will process were never seen by it.
    for (const stream of [...this.streams.values()]) {
      if (stream.id <= lastStreamId) continue;
      this.forget(stream.id);
      stream.handler.onFail({ message: `the server is going away (HTTP/2 error ${code}) and did not take the call`, refused: true, errorCode: code });
    }
    this.failWaiting({ message: "the server is going away", refused: true, errorCode: code });
    this.closeIfIdle();
  }

  /** Sends what the windows now allow, and starts streams that waited for the server's limit. */
  private pump(): void {
    for (const stream of this.streams.values()) if (stream.pending !== undefined) this.sendBody(stream);
    while (this.usable && this.waiting.length > 0 && this.streams.size < this.peerMaxStreams) {
      const next = this.waiting.shift()!;
      if (!next.cancelled) this.start(next);
    }
  }

  private reset(streamId: number, code: number): void {
    if (!this.streams.has(streamId)) return;
    this.forget(streamId);
    this.write(frameHeader(4, frame.rstStream, 0, streamId), uint32(code));
  }

  /** Resets a stream the server broke the protocol on, and tells its owner. */
  private resetStream(stream: Stream, code: number, why: string): void {
    this.reset(stream.id, code);
    stream.handler.onFail({ message: `the server broke HTTP/2 on a stream: ${why}`, refused: false, errorCode: code });
  }

  private forget(streamId: number): void {
    this.streams.delete(streamId);
    if (this.waiting.length > 0) this.pump();
    else this.closeIfIdle();
  }

  private markUnusable(): void {
    if (!this.usable) return;
    this.usable = false;
    this.onUnusable();
  }

  /** Closes a connection that takes no more streams once none is left: GOAWAY, then the socket. */
  private closeIfIdle(): void {
    if (!this.usable && !this.closed && this.streams.size === 0 && this.waiting.length === 0) {
      this.write(frameHeader(8, frame.goaway, 0, 0), Buffer.alloc(8)); // last stream 0, NO_ERROR
      this.flush();
      this.closed = true;
      this.socket.end(() => this.socket.destroy());
    }
  }

  /** A connection error: GOAWAY with `code`, then every stream fails. */
  private fail(code: number, why: string): void {
    const goaway = Buffer.alloc(8 + Buffer.byteLength(why));
    goaway.writeUInt32BE(0, 0); // the last server-initiated stream processed: none
    goaway.writeUInt32BE(code, 4);
    goaway.write(why, 8);
    this.write(frameHeader(goaway.length, frame.goaway, 0, 0), goaway);
    this.flush();
    this.destroy(`the server broke HTTP/2: ${why}`);
  }

  /** The connection is gone: every stream fails. */
  private destroy(why: string): void {
    this.markUnusable();
    if (!this.closed) {
      this.closed = true;
      this.socket.destroy();
    }
    const streams = [...this.streams.values()];
    this.streams.clear();
    for (const stream of streams) stream.handler.onFail({ message: why, refused: false });
    this.failWaiting({ message: why, refused: true });
  }

  private failWaiting(reason: StreamFailure): void {
    const waiting = this.waiting.splice(0);
    for (const w of waiting) if (!w.cancelled) w.handler.onFail(reason);
  }
}

class ConnectionError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/** A frame's 9-byte header (RFC 9113 4.1). */
export function frameHeader(length: number, type: number, flags: number, streamId: number): Buffer {
  const header = Buffer.allocUnsafe(9);
  header.writeUIntBE(length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(streamId, 5);
  return header;
}

function uint32(value: number): Buffer {
  const bytes = Buffer.allocUnsafe(4);
  bytes.writeUInt32BE(value, 0);
  return bytes;
}

/** A DATA or HEADERS payload without its padding (RFC 9113 6.1). */
function unpad(payload: Buffer, flags: number): Buffer {
  if ((flags & flag.padded) === 0) return payload;
  const padding = payload[0];
  if (padding >= payload.length) throw new ConnectionError(h2Error.protocol, "padding as long as the frame");
  return payload.subarray(1, payload.length - padding);
}
