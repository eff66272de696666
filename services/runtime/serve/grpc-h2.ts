import type * as http2 from "node:http2";
import { gunzipSync, inflateSync } from "node:zlib";
import { create, toBinary, type DescMethod, type DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createContextValues, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { methodMetrics, type MethodMetrics } from "../observability/metrics.js";
import { requestFactsKey, type RequestFacts } from "../security/gatekeeper.js";
import { toConnectError } from "./errors.js";
import { HeadersView } from "./headers-view.js";
import { decodeRequest, markValidated, undecodableRequest, type MethodWire } from "./registration.js";

/*
 * Native gRPC served on node:http2 directly (GRPC_STACK=node-http2): the protocol's framing,
 * deadlines, metadata, trailers and status written here, in one pass per call, where grpc-js
 * builds a call object, a metadata copy, a status object and several event hops for each. The
 * handlers are the same connect-style ones every other path runs (pipeline.ts wraps them);
 * requests are decoded here (or by a method's MethodWire) so malformed bytes get
 * INVALID_ARGUMENT. Checked by the same suites as the grpc-js path (test/peer-suites.test.ts).
 * Responses are never compressed (the protocol lets a server answer identity to any client).
 */

/** The message encodings this server decodes. */
export const nativeGrpcEncodings = ["identity", "gzip", "deflate"];
const acceptEncoding = nativeGrpcEncodings.join(",");
const waitForTrailers: http2.ServerStreamResponseOptions = { waitForTrailers: true };

type AnyHandler = (input: unknown, ctx: HandlerContext) => unknown;

/** One RPC as served here. */
interface NativeMethod {
  readonly method: DescMethod;
  readonly handler: AnyHandler;
  readonly wire: MethodWire | undefined;
  readonly metrics: MethodMetrics;
}

/** The native gRPC methods of a server, by path ("/pkg.Service/Method"), and how to serve a stream of one. */
export class NativeGrpcRoutes {
  readonly #methods = new Map<string, NativeMethod>();

  constructor(private readonly maxMessageBytes: number) {}

  add(service: DescService, impl: ServiceImpl<DescService>, wire?: Readonly<Record<string, MethodWire>>): void {
    const handlers = impl as unknown as Record<string, AnyHandler>;
    for (const method of service.methods) {
      const path = `/${service.typeName}/${method.name}`;
      this.#methods.set(path, { method, handler: handlers[method.localName], wire: wire?.[method.localName], metrics: methodMetrics(path) });
    }
  }

  /** Serves one HTTP/2 stream of native gRPC (POST, application/grpc[+proto], a known encoding). */
  serve(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    const path = headers[":path"] ?? "";
    const route = this.#methods.get(path);
    const call = new NativeCall(stream, headers, route, this.maxMessageBytes);
    if (route === undefined) {
      call.fail(new ConnectError(`${path} is not a method served here`, Code.Unimplemented));
      return;
    }
    call.run();
  }
}

/**
 * One call: the request's frames in, the handler's answer out. Also the handler's context: headers
 * are read from the request's own object and written to plain ones (no copies), and the
 * signal is only built when a handler or the pipeline asks for it.
 */
class NativeCall implements HandlerContext, RequestFacts {
  readonly requestMethod = "POST";
  readonly protocolName = "grpc";
  readonly values = createContextValues();
  readonly url: string;
  readonly service: DescService;
  readonly method: DescMethod;
  requestBytes = 0;
  readonly #deadline: number;
  #signal: AbortController | undefined;
  #deadlineTimer: NodeJS.Timeout | undefined;
  #requestHeader: Headers | undefined;
  readonly #responseHeaders: Record<string, string | string[]> = {};
  readonly #trailers: Record<string, string | string[]> = {};
  #headersSent = false;
  /** The status is on its way (or the stream is gone): nothing more is sent. */
  #ended = false;
  // Request framing.
  #pending: Buffer | undefined;
  readonly #messages: Buffer[] = [];
  #requestEnded = false;
  #wake: (() => void) | undefined;
  #readError: ConnectError | undefined;

  constructor(
    private readonly stream: http2.ServerHttp2Stream,
    private readonly headers: http2.IncomingHttpHeaders,
    private readonly route: NativeMethod | undefined,
    private readonly maxMessageBytes: number,
  ) {
    this.url = headers[":path"] ?? "";
    this.method = route?.method as DescMethod;
    this.service = route?.method.parent as DescService;
    this.values.set(requestFactsKey, this);
    const timeout = parseTimeout(headers["grpc-timeout"]);
    this.#deadline = timeout === undefined ? Infinity : Date.now() + timeout;
    if (timeout !== undefined) {
      // The deadline ends the call whatever the handler does with its signal.
      this.#deadlineTimer = setTimeout(() => this.#expire(), timeout);
    }
    stream.on("close", () => this.#closed());
    stream.on("error", () => {}); // a reset stream: 'close' follows
  }

  // HandlerContext.
  timeoutMs(): number | undefined {
    return Number.isFinite(this.#deadline) ? Math.max(0, Math.floor(this.#deadline - Date.now())) : undefined;
  }
  get signal(): AbortSignal {
    if (this.#signal === undefined) {
      this.#signal = new AbortController();
      if (this.stream.closed && !this.#ended) this.#signal.abort(new ConnectError("the client cancelled the call", Code.Canceled));
    }
    return this.#signal.signal;
  }
  get requestHeader(): Headers {
    return (this.#requestHeader ??= new ObjectHeaders(this.headers as Record<string, string | string[] | undefined>, true));
  }
  get responseHeader(): Headers {
    return new ObjectHeaders(this.#responseHeaders, false);
  }
  get responseTrailer(): Headers {
    return new ObjectHeaders(this.#trailers, false);
  }
  /** The caller's IP address. */
  peer(): string {
    return this.stream.session?.socket?.remoteAddress ?? "unknown";
  }

  run(): void {
    const { method, handler } = this.route!;
    const streamingRequest = method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming";
    this.stream.on("data", (chunk: Buffer) => this.#received(chunk));
    this.stream.on("end", () => this.#receivedAll());
    if (streamingRequest) {
      const requests = this.#requestStream();
      if (method.methodKind === "client_streaming") void this.#answerOnce(() => handler(requests, this));
      else void this.#answerStream(() => handler(requests, this) as AsyncIterable<unknown>);
      return;
    }
    // Unary and server-streaming: exactly one request message, read in full first.
    void this.#oneRequest().then(
      (request) => {
        if (this.#ended) return;
        this.requestBytes = request.length;
        const input = this.#decodeOrStandIn(request);
        if (method.methodKind === "unary") void this.#answerOnce(() => handler(input, this));
        else void this.#answerStream(() => handler(input, this) as AsyncIterable<unknown>);
      },
      (err: unknown) => this.fail(toConnectError(err)),
    );
  }

  /** Ends the call with `error` (trailers-only when nothing was sent yet). */
  fail(error: ConnectError): void {
    if (this.#ended) return;
    this.#end(error);
  }

  // Reading: 5-byte prefixed messages (flag, big-endian length), possibly compressed.

  #received(chunk: Buffer): void {
    if (this.#readError) return;
    let buffer = this.#pending === undefined ? chunk : Buffer.concat([this.#pending, chunk]);
    while (buffer.length >= 5) {
      const length = buffer.readUInt32BE(1);
      if (length > this.maxMessageBytes) {
        this.#readFailed(new ConnectError(`the request message is ${length} bytes; the limit is ${this.maxMessageBytes} (MAX_MESSAGE_BYTES)`, Code.ResourceExhausted));
        return;
      }
      if (buffer.length < 5 + length) break;
      const flag = buffer[0];
      const body = buffer.subarray(5, 5 + length);
      buffer = buffer.subarray(5 + length);
      const message = this.#decompress(flag, body);
      if (message === undefined) return;
      this.#messages.push(message);
    }
    this.#pending = buffer.length > 0 ? buffer : undefined;
    this.#wake?.();
  }

  #decompress(flag: number, body: Buffer): Buffer | undefined {
    if (flag === 0) return body;
    const encoding = this.headers["grpc-encoding"] ?? "identity";
    if (flag !== 1 || encoding === "identity") {
      this.#readFailed(new ConnectError(`a message flagged ${flag === 1 ? "compressed" : `with flags ${flag}`} on a call whose grpc-encoding is ${encoding}`, Code.Internal));
      return undefined;
    }
    try {
      const options = { maxOutputLength: this.maxMessageBytes };
      return encoding === "gzip" ? gunzipSync(body, options) : inflateSync(body, options);
    } catch (err) {
      const tooLarge = (err as { code?: string }).code === "ERR_BUFFER_TOO_LARGE";
      this.#readFailed(
        tooLarge
          ? new ConnectError(`the request message decompresses beyond ${this.maxMessageBytes} bytes (MAX_MESSAGE_BYTES)`, Code.ResourceExhausted)
          : new ConnectError(`the request message is not valid ${encoding}`, Code.Internal),
      );
      return undefined;
    }
  }

  #receivedAll(): void {
    this.#requestEnded = true;
    if (this.#pending !== undefined && !this.#readError) {
      this.#readFailed(new ConnectError("the request stream ended inside a message", Code.Internal));
      return;
    }
    this.#wake?.();
  }

  #readFailed(error: ConnectError): void {
    this.#readError = error;
    this.#pending = undefined;
    this.stream.removeAllListeners("data");
    this.stream.resume(); // drop the rest
    this.#wake?.();
    this.fail(error);
  }

  /** Waits until a message, the end of the request, or a read error. */
  #next(): Promise<void> {
    return new Promise((resolve) => (this.#wake = resolve));
  }

  async #oneRequest(): Promise<Buffer> {
    while (!this.#requestEnded && !this.#readError) await this.#next();
    if (this.#readError) throw this.#readError;
    if (this.#messages.length !== 1) {
      throw new ConnectError(`${this.method.name} takes one request message; the stream held ${this.#messages.length}`, Code.Unimplemented);
    }
    return this.#messages[0];
  }

  async *#requestStream(): AsyncIterable<unknown> {
    for (;;) {
      const message = this.#messages.shift();
      if (message !== undefined) {
        this.route!.metrics.requestSize("grpc", message.length);
        yield this.#decode(message);
        continue;
      }
      if (this.#readError) throw this.#readError;
      if (this.#requestEnded || this.#ended) return;
      await this.#next();
    }
  }

  #decode(bytes: Buffer): unknown {
    const wire = this.route!.wire;
    const decoded = wire?.decodeRequest(bytes);
    if (decoded !== undefined) {
      markValidated(decoded);
      return decoded;
    }
    return decodeRequest(this.method.input, bytes);
  }

  /** Bytes that are no valid message still go through the pipeline, which answers INVALID_ARGUMENT. */
  #decodeOrStandIn(bytes: Buffer): unknown {
    this.route!.metrics.requestSize("grpc", bytes.length);
    try {
      return this.#decode(bytes);
    } catch (err) {
      return undecodableRequest(err as ConnectError);
    }
  }

  // Writing.

  async #answerOnce(run: () => unknown): Promise<void> {
    try {
      const response = await run();
      if (this.#ended) return;
      this.#sendHeaders();
      this.stream.write(this.#frame(response));
      this.#end(undefined);
    } catch (err) {
      this.fail(toConnectError(err, this.#signal?.signal));
    }
  }

  async #answerStream(run: () => AsyncIterable<unknown>): Promise<void> {
    try {
      for await (const response of run()) {
        if (this.#ended) return;
        this.#sendHeaders();
        if (!this.stream.write(this.#frame(response))) await this.#drained();
      }
      if (this.#ended) return;
      this.#sendHeaders();
      this.#end(undefined);
    } catch (err) {
      this.fail(toConnectError(err, this.#signal?.signal));
    }
  }

  #drained(): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        this.stream.off("drain", done);
        this.stream.off("close", done);
        resolve();
      };
      this.stream.on("drain", done);
      this.stream.on("close", done);
    });
  }

  #frame(response: unknown): Buffer {
    const { method, wire, metrics } = this.route!;
    const message = wire?.encodeResponse(response) ?? toBinary(method.output, create(method.output, response as never));
    metrics.responseSize("grpc", message.length);
    const frame = Buffer.allocUnsafe(5 + message.length);
    frame[0] = 0;
    frame.writeUInt32BE(message.length, 1);
    frame.set(message, 5);
    return frame;
  }

  #sendHeaders(): void {
    if (this.#headersSent || this.stream.closed) return;
    this.#headersSent = true;
    // The handler's headers object itself, completed (no copy: this is once per call).
    const headers: http2.OutgoingHttpHeaders = this.#responseHeaders;
    headers[":status"] = 200;
    headers["content-type"] = "application/grpc";
    headers["grpc-accept-encoding"] = acceptEncoding;
    this.stream.respond(headers, waitForTrailers);
  }

  /** Sends the status (OK when `error` is undefined) with the trailers, and ends the stream. */
  #end(error: ConnectError | undefined): void {
    this.#ended = true;
    clearTimeout(this.#deadlineTimer);
    if (this.stream.closed || this.stream.destroyed) return;
    const trailers: http2.OutgoingHttpHeaders = this.#trailers;
    if (error === undefined) {
      trailers["grpc-status"] = "0";
    } else {
      error.metadata.forEach((value, name) => (trailers[name] = value));
      setTrailerStatus(new Headers(), error).forEach((value, name) => (trailers[name] = value));
    }
    if (!this.#headersSent && Object.keys(this.#responseHeaders).length === 0) {
      // Trailers-only: one HEADERS frame with the status and the trailers. Not when the handler
      // (or the pipeline: x-request-id) set headers: clients read a trailers-only frame as
      // trailers, so those would be lost as headers.
      this.#headersSent = true;
      this.stream.respond({ ...trailers, ":status": 200, "content-type": "application/grpc", "grpc-accept-encoding": acceptEncoding }, { endStream: true });
      return;
    }
    this.#sendHeaders();
    this.stream.once("wantTrailers", () => this.stream.sendTrailers(trailers));
    this.stream.end();
  }

  #expire(): void {
    const error = new ConnectError("the deadline was exceeded", Code.DeadlineExceeded);
    this.#signal?.abort(error);
    this.fail(error);
  }

  #closed(): void {
    clearTimeout(this.#deadlineTimer);
    if (this.#ended) return;
    // Gone before its answer: the client cancelled (or reset) the call.
    this.#ended = true;
    this.#signal?.abort(new ConnectError("the client cancelled the call", Code.Canceled));
    this.#wake?.();
  }
}


/** grpc-timeout ("100m": up to 8 digits and a unit, H M S m u n) in milliseconds; undefined when absent or malformed. */
function parseTimeout(value: string | string[] | undefined): number | undefined {
  if (typeof value !== "string") return undefined;
  const match = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (match === null) return undefined;
  const unitMs = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 }[match[2] as "H" | "M" | "S" | "m" | "u" | "n"];
  return Number(match[1]) * unitMs;
}

/** Headers the pipeline and handlers never see: HTTP/2 pseudo-headers and the protocol's own. */
const hiddenRequestHeaders = new Set(["content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding"]);

/**
 * A header name lowercased. Names arrive as many kinds of V8 string, and name.toLowerCase
 * compiled to V8's generic property load per call (--print-opt-code); reached from the String
 * global the call is direct.
 */
function lowercase(name: string): string {
  return String.prototype.toLowerCase.call(name);
}

/**
 * A plain object of HTTP/2 headers through the Fetch Headers interface, without copying it.
 * Names are lowercase; several values read comma-joined. Binary (-bin) values are base64
 * text, as on the wire and as connect-node gives them. A request's pseudo-headers and the
 * protocol's own headers are not shown.
 */
class ObjectHeaders extends HeadersView {
  constructor(
    private readonly object: Record<string, string | string[] | undefined>,
    private readonly request: boolean,
  ) {
    super();
  }

  get(name: string): string | null {
    const value = this.object[lowercase(name)];
    if (value === undefined) return null;
    return typeof value === "string" ? value : value.join(", ");
  }
  set(name: string, value: string): void {
    this.object[lowercase(name)] = value;
  }
  append(name: string, value: string): void {
    const key = lowercase(name);
    const existing = this.object[key];
    this.object[key] = existing === undefined ? value : [...(typeof existing === "string" ? [existing] : existing), value];
  }
  delete(name: string): void {
    delete this.object[lowercase(name)];
  }
  protected names(): string[] {
    const names = Object.keys(this.object);
    return this.request ? names.filter((key) => !key.startsWith(":") && !hiddenRequestHeaders.has(key)) : names;
  }
}
