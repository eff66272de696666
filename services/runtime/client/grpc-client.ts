import { create, fromBinary, toBinary, type DescMethodClientStreaming, type DescMethodUnary, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { H2Connection, h2Error, type H2Endpoint, type StreamFailure, type StreamHandle, type StreamHandler } from "./h2-connection.js";
import { encodeHeaderBlock, staticName, type HeaderFields } from "./hpack.js";
import type { MeshCredentials } from "./mesh-credentials.js";

/** Options of one call. */
export interface CallOptions {
  /** Epoch ms; also sent as grpc-timeout. */
  readonly deadlineMs: number;
  readonly signal?: AbortSignal;
  /** The caller's span (W3C trace context, observability/tracing.ts). */
  readonly traceparent?: string;
  /** The call's own request id (x-request-id); unset: the server makes one. */
  readonly requestId?: string;
  /** The request id of the call this one is made on behalf of (the prediction log links them). */
  readonly parentRequestId?: string;
}

/** The header naming the request a call is made on behalf of (CallOptions.parentRequestId). */
export const parentRequestIdHeader = "x-mlmesh-parent-request-id";

/**
 * A native-gRPC client for unary (and send-all-at-once client-streaming) calls between mesh
 * services, over one long-lived HTTP/2 connection of our own (h2-connection.ts) with
 * protobuf-es messages. It speaks plain gRPC: no compression, no name resolution beyond
 * host:port; a lost or closing connection is replaced by a new one on the next call. Measured
 * against node:http2's client on the Proxy's path (docs/benchmarks.md): fewer objects and
 * one socket write per turn of the event loop.
 */
export class GrpcClient {
  private connection: H2Connection | undefined;
  private readonly endpoint: H2Endpoint;
  private readonly scheme: "http" | "https";
  /** Per method path: the header fields every call to it sends. */
  private readonly fixedFields = new Map<string, [number | string, string][]>();

  /** `credentials`: TLS (verify the server, optionally present a certificate) and this service's token. */
  constructor(
    readonly address: string,
    private readonly credentials: MeshCredentials = {},
  ) {
    const match = /^\[?([^\]]+)\]?:(\d+)$/.exec(address);
    if (!match) throw new Error(`"${address}" is not host:port`);
    this.endpoint = { host: match[1], port: Number(match[2]), tls: credentials.tls };
    this.scheme = credentials.tls ? "https" : "http";
  }

  /**
   * Calls a unary method. Rejects with a ConnectError carrying the gRPC status: the server's,
   * UNAVAILABLE when the server cannot be reached, DEADLINE_EXCEEDED at `deadlineMs` (epoch
   * ms; also sent as grpc-timeout), CANCELLED when `signal` aborts. `traceparent` names the
   * caller's span (W3C trace context, observability/tracing.ts).
   */
  unary<I extends DescMethodUnary>(
    method: I,
    request: MessageInitShape<I["input"]>,
    options: CallOptions,
  ): Promise<MessageShape<I["output"]>> {
    return this.unaryBytes(method, toBinary(method.input, create(method.input, request)), options).then((bytes) => {
      try {
        return fromBinary(method.output, bytes) as MessageShape<I["output"]>;
      } catch (err) {
        throw new ConnectError(`${this.address}: undecodable response: ${(err as Error).message}`, Code.Internal);
      }
    });
  }

  /** Calls a unary method with an encoded request; resolves to the encoded response (as unary). */
  unaryBytes(method: DescMethodUnary, payload: Uint8Array, options: CallOptions): Promise<Buffer> {
    return this.clientStreamBytes(method, [payload], options);
  }

  /**
   * Calls a client-streaming method (or a unary one, with one payload) with encoded request
   * messages, all sent at once; resolves to the encoded response. Errors as unary(). The
   * payloads are sent as they are, not copied: they must not change until the call has ended.
   */
  clientStreamBytes(method: DescMethodUnary | DescMethodClientStreaming, payloads: readonly Uint8Array[], options: CallOptions): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const timeoutMs = Math.ceil(options.deadlineMs - Date.now());
      if (timeoutMs <= 0) return reject(new ConnectError("the deadline passed before the call", Code.DeadlineExceeded));
      if (options.signal?.aborted) return reject(new ConnectError("cancelled before the call", Code.Canceled));

      // Each message: its 5-byte prefix (not compressed, length), then the payload as it is.
      const prefixes = Buffer.allocUnsafe(5 * payloads.length);
      const body: Uint8Array[] = [];
      for (let i = 0; i < payloads.length; i++) {
        const prefix = prefixes.subarray(i * 5, i * 5 + 5);
        prefix[0] = 0;
        prefix.writeUInt32BE(payloads[i].length, 1);
        body.push(prefix, payloads[i]);
      }
      const call = new UnaryCall(this.address, timeoutMs, options.signal, resolve, reject);
      try {
        call.start(this.connect().request(this.headerBlock(`/${method.parent.typeName}/${method.name}`, timeoutMs, options), body, call));
      } catch (err) {
        call.onFail({ message: (err as Error).message, refused: true });
      }
    });
  }

  /** Closes the connection once in-flight calls have finished. */
  close(): void {
    this.connection?.close();
    this.connection = undefined;
  }

  private headerBlock(path: string, timeoutMs: number, options: CallOptions): Buffer {
    let fixed = this.fixedFields.get(path);
    if (fixed === undefined) {
      fixed = [
        [staticName.path, path],
        [staticName.authority, this.address],
        [staticName.contentType, "application/grpc"],
        ["te", "trailers"],
      ];
      if (this.credentials.authorization !== undefined) fixed.push([staticName.authorization, this.credentials.authorization]);
      this.fixedFields.set(path, fixed);
    }
    const fields: [number | string, string][] = [...fixed, ["grpc-timeout", `${timeoutMs}m`]];
    if (options.traceparent !== undefined) fields.push(["traceparent", options.traceparent]);
    if (options.requestId !== undefined) fields.push(["x-request-id", options.requestId]);
    if (options.parentRequestId !== undefined) fields.push([parentRequestIdHeader, options.parentRequestId]);
    return encodeHeaderBlock(this.scheme, fields);
  }

  /** The current connection, or a new one when there is none or it takes no more calls. */
  private connect(): H2Connection {
    const current = this.connection;
    if (current?.usable) return current;
    const connection = new H2Connection(this.endpoint, () => {
      if (this.connection === connection) this.connection = undefined;
    });
    this.connection = connection;
    return connection;
  }
}

function decodeMessage(message: string): string {
  try {
    return decodeURIComponent(message);
  } catch {
    return message;
  }
}

/** gRPC's status for an HTTP status without one (gRPC's http-grpc-status-mapping.md). */
function codeOfHttpStatus(status: number): Code {
  switch (status) {
    case 400:
      return Code.Internal;
    case 401:
      return Code.Unauthenticated;
    case 403:
      return Code.PermissionDenied;
    case 404:
      return Code.Unimplemented;
    case 429:
    case 502:
    case 503:
    case 504:
      return Code.Unavailable;
    default:
      return Code.Unknown;
  }
}

/** gRPC's status for a stream reset with an HTTP/2 error code (gRPC's PROTOCOL-HTTP2.md). */
function codeOfReset(errorCode: number): Code {
  if (errorCode === h2Error.refusedStream) return Code.Unavailable;
  if (errorCode === h2Error.cancel) return Code.Canceled;
  if (errorCode === h2Error.enhanceYourCalm) return Code.ResourceExhausted;
  if (errorCode === 12 /* INADEQUATE_SECURITY */) return Code.PermissionDenied;
  return Code.Internal;
}

/**
 * One call in flight: reads the response and its status, enforces the deadline and the
 * caller's cancellation. (A class rather than closures: one object per call on this path.)
 */
class UnaryCall implements StreamHandler {
  private settled = false;
  private httpStatus = 0;
  private grpcStatus: string | undefined;
  private grpcMessage = "";
  private readonly chunks: Buffer[] = [];
  private readonly timer: NodeJS.Timeout;
  private readonly onAbort: () => void;
  private stream: StreamHandle | undefined;

  constructor(
    private readonly address: string,
    timeoutMs: number,
    private readonly signal: AbortSignal | undefined,
    private readonly resolve: (message: Buffer) => void,
    private readonly reject: (error: ConnectError) => void,
  ) {
    this.timer = setTimeout(() => this.finish(new ConnectError("the deadline was exceeded", Code.DeadlineExceeded)), timeoutMs);
    this.onAbort = () => this.finish(new ConnectError("the call was cancelled", Code.Canceled));
    signal?.addEventListener("abort", this.onAbort, { once: true });
  }

  start(stream: StreamHandle): void {
    if (this.settled) stream.cancel();
    else this.stream = stream;
  }

  onHeaders(fields: HeaderFields, endStream: boolean): void {
    if (this.httpStatus === 0) this.httpStatus = Number(fields.get(":status"));
    // The trailers carry the status; so do the headers of a trailers-only response.
    const status = fields.get("grpc-status");
    if (status !== undefined && (endStream || this.grpcStatus === undefined)) {
      this.grpcStatus = status;
      this.grpcMessage = decodeMessage(fields.get("grpc-message") ?? "");
    }
  }

  onData(chunk: Buffer): void {
    this.chunks.push(chunk);
  }

  onEnd(): void {
    this.stream = undefined;
    if (this.grpcStatus === undefined) {
      if (this.httpStatus !== 200) {
        return this.finish(new ConnectError(`${this.address}: HTTP status ${this.httpStatus} without a gRPC status`, codeOfHttpStatus(this.httpStatus)));
      }
      return this.finish(new ConnectError(`${this.address}: the response ended without a gRPC status`, Code.Internal));
    }
    const code = Number(this.grpcStatus);
    if (code !== 0) return this.finish(new ConnectError(this.grpcMessage, code as Code));
    const body = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    const length = body.length >= 5 ? body.readUInt32BE(1) : -1;
    if (length < 0 || body[0] !== 0 || body.length !== 5 + length) {
      return this.finish(new ConnectError(`${this.address}: malformed response message`, Code.Internal));
    }
    this.finish(undefined, body.subarray(5));
  }

  onFail(reason: StreamFailure): void {
    this.stream = undefined;
    const code = reason.errorCode === undefined || reason.refused ? Code.Unavailable : codeOfReset(reason.errorCode);
    this.finish(new ConnectError(`${this.address}: ${reason.message}`, code));
  }

  private finish(error: ConnectError | undefined, response?: Buffer): void {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.timer);
    this.signal?.removeEventListener("abort", this.onAbort);
    this.stream?.cancel();
    this.stream = undefined;
    if (error) this.reject(error);
    else this.resolve(response!);
  }
}
