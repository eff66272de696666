import { once } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { create, toBinary, type DescMethod, type DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createContextValues, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { HeadersView } from "./headers-view.js";
import { decodeRequest, markValidated, undecodableRequest, type MethodWire } from "./registration.js";
import { methodMetrics } from "../observability/metrics.js";
import { requestFactsKey, type RequestFacts } from "../security/gatekeeper.js";

type AnyHandler = (input: unknown, ctx: HandlerContext) => unknown;
type AnyCall =
  | grpc.ServerUnaryCall<Buffer, unknown>
  | grpc.ServerReadableStream<Buffer, unknown>
  | grpc.ServerWritableStream<Buffer, unknown>
  | grpc.ServerDuplexStream<Buffer, unknown>;

/**
 * Serves a protobuf-es service implementation (connect-style handlers) on a @grpc/grpc-js
 * server, so the fast native-gRPC path and the connect-node path run the same handler code.
 * Request bytes are decoded here rather than by grpc-js, so that malformed bytes get
 * INVALID_ARGUMENT instead of grpc-js's INTERNAL.
 */
export function addServiceToGrpcServer(
  server: grpc.Server,
  service: DescService,
  impl: ServiceImpl<DescService>,
  options: { wire?: Readonly<Record<string, MethodWire>> },
): void {
  const definition: Record<string, grpc.MethodDefinition<Buffer, unknown>> = {};
  const handlers: grpc.UntypedServiceImplementation = {};
  const methods = impl as unknown as Record<string, AnyHandler>;
  for (const method of service.methods) {
    const metrics = methodMetrics(`/${service.typeName}/${method.name}`);
    const wire = options.wire?.[method.localName];
    definition[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      originalName: method.name,
      requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      requestSerialize: (bytes: Buffer) => bytes,
      requestDeserialize: (bytes: Buffer) => {
        metrics.requestSize("grpc", bytes.length);
        return bytes;
      },
      responseSerialize: (message: unknown) => {
        const bytes = asBuffer(wire?.encodeResponse(message) ?? toBinary(method.output, create(method.output, message as never)));
        metrics.responseSize("grpc", bytes.length);
        return bytes;
      },
      responseDeserialize: (bytes: Buffer) => bytes,
    };
    handlers[method.localName] = grpcHandler(method, methods[method.localName], wire);
  }
  server.addService(definition as grpc.ServiceDefinition, handlers);
}

/** The same bytes as a Buffer, without a copy. */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function grpcHandler(
  method: DescMethod,
  handler: AnyHandler,
  wire: MethodWire | undefined,
): grpc.UntypedHandleCall {
  const decode = (bytes: Buffer) => {
    const decoded = wire?.decodeRequest(bytes);
    if (decoded === undefined) return decodeRequest(method.input, bytes);
    markValidated(decoded);
    return decoded;
  };
  // Bytes that are no valid message still go through the pipeline (auth, log line, metrics),
  // which answers INVALID_ARGUMENT in place of validation.
  const decodeOrStandIn = (bytes: Buffer) => {
    try {
      return decode(bytes);
    } catch (err) {
      return undecodableRequest(err as ConnectError);
    }
  };
  switch (method.methodKind) {
    case "unary":
      return (call: grpc.ServerUnaryCall<Buffer, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const ctx = contextFor(method, call);
        ctx.requestBytes = call.request.length;
        answerOnce(handler(decodeOrStandIn(call.request), ctx), call, callback, ctx);
      };
    case "server_streaming":
      return (call: grpc.ServerWritableStream<Buffer, unknown>) => {
        const ctx = contextFor(method, call);
        ctx.requestBytes = call.request.length;
        void writeStream(call, handler(decodeOrStandIn(call.request), ctx) as AsyncIterable<unknown>, ctx);
      };
    case "bidi_streaming":
      return (call: grpc.ServerDuplexStream<Buffer, unknown>) => {
        const ctx = contextFor(method, call);
        const requests = decodeStream(call, decode);
        void writeStream(call, handler(requests, ctx) as AsyncIterable<unknown>, ctx);
      };
    case "client_streaming":
      return (call: grpc.ServerReadableStream<Buffer, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const ctx = contextFor(method, call);
        answerOnce(handler(decodeStream(call, decode), ctx), call, callback, ctx);
      };
  }
}

/** Sends a unary or client-streaming call's one answer: headers, then the response and trailers, or the error. */
function answerOnce(
  result: unknown,
  call: grpc.ServerUnaryCall<Buffer, unknown> | grpc.ServerReadableStream<Buffer, unknown>,
  callback: grpc.sendUnaryData<unknown>,
  ctx: GrpcHandlerContext,
): void {
  Promise.resolve(result).then(
    (response) => {
      ctx.settle();
      const header = ctx.responseMetadata();
      if (header) call.sendMetadata(header);
      callback(null, response, ctx.trailerMetadata());
    },
    (err: unknown) => {
      const error = toServiceError(err, ctx);
      ctx.settle();
      // Headers and trailers the handler set still go out with an error (a header it set
      // before failing, say a retry hint, is part of the answer).
      const header = ctx.responseMetadata();
      if (header) call.sendMetadata(header);
      callback(error);
    },
  );
}


async function* decodeStream(
  call: grpc.ServerDuplexStream<Buffer, unknown> | grpc.ServerReadableStream<Buffer, unknown>,
  decode: (bytes: Buffer) => unknown,
): AsyncIterable<unknown> {
  // A plain for-await destroys the duplex when the client half-closes, and with it the
  // response side before the status is sent; keep the call open for the responses.
  for await (const bytes of call.iterator({ destroyOnReturn: false })) yield decode(bytes as Buffer);
}

async function writeStream(
  call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>,
  responses: AsyncIterable<unknown>,
  ctx: GrpcHandlerContext,
): Promise<void> {
  let headerSent = false;
  try {
    for await (const response of responses) {
      if (call.cancelled) return;
      if (!headerSent) {
        headerSent = true;
        const header = ctx.responseMetadata();
        if (header) call.sendMetadata(header);
      }
      if (!call.write(response)) await once(call, "drain", { signal: ctx.signal });
    }
    ctx.settle();
    // A stream with no message still sends the headers its handler set.
    const header = headerSent ? undefined : ctx.responseMetadata();
    if (header) call.sendMetadata(header);
    call.end(ctx.trailerMetadata());
  } catch (err) {
    if (!call.cancelled) {
      if (!headerSent) {
        const header = ctx.responseMetadata();
        if (header) call.sendMetadata(header);
      }
      call.emit("error", toServiceError(err, ctx));
    }
    ctx.settle();
  }
}

/**
 * The HandlerContext of a grpc-js call. connect's createHandlerContext builds linked
 * AbortControllers, a deadline timer and Headers for every call, most of which a handler never
 * reads, and that machinery cost more than the whole grpc-js call on the hot path
 * (docs/benchmarks.md). Here headers are the call's grpc-js Metadata seen through the Headers
 * interface (no copies), and the signal is built on first use.
 */
class GrpcHandlerContext implements HandlerContext, RequestFacts {
  readonly requestMethod = "POST";
  /** The request message's size (unary and server-streaming calls; 0 for request streams). */
  requestBytes = 0;
  readonly protocolName = "grpc";
  readonly values = createContextValues();
  readonly url: string;
  readonly service: DescService;
  private readonly deadlineMs: number;
  private lazySignal: AbortSignal | undefined;
  private lazyRequestHeader: Headers | undefined;
  private responseHeaderMetadata: grpc.Metadata | undefined;
  private trailerMetadataValue: grpc.Metadata | undefined;
  /** Set once the answer is sent: grpc-js then reports every call as "cancelled", which is not a cancel. */
  private answered = false;
  private releaseSignal: (() => void) | undefined;
  private onCancelled: (() => void) | undefined;

  constructor(
    readonly method: DescMethod,
    private readonly call: AnyCall,
  ) {
    this.service = method.parent;
    this.url = `/${method.parent.typeName}/${method.name}`;
    this.values.set(requestFactsKey, this);
    const deadline = call.getDeadline();
    this.deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline;
  }

  timeoutMs(): number | undefined {
    return Number.isFinite(this.deadlineMs) ? Math.max(0, this.deadlineMs - Date.now()) : undefined;
  }

  /**
   * Aborts when the client cancels or the deadline passes. Not on shutdown: in-flight calls
   * are meant to finish; long-lived streams watch RunningServer.stopping instead.
   */
  get signal(): AbortSignal {
    if (this.lazySignal) return this.lazySignal;
    // (No closures bound to variables here: tsx names each with Object.defineProperty, per call.)
    const controller = new AbortController();
    this.lazySignal = controller.signal;
    const timeoutMs = this.timeoutMs();
    const emitter = this.call as NodeJS.EventEmitter;
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => controller.abort(new ConnectError("the deadline was exceeded", Code.DeadlineExceeded)), timeoutMs);
    timer?.unref();
    if (this.call.cancelled) {
      controller.abort(new ConnectError("the client cancelled the call", Code.Canceled));
      return this.lazySignal;
    }
    this.onCancelled = () => {
      if (!this.answered) controller.abort(new ConnectError("the client cancelled the call", Code.Canceled));
    };
    emitter.once("cancelled", this.onCancelled);
    this.releaseSignal = () => {
      clearTimeout(timer);
      emitter.removeListener("cancelled", this.onCancelled!);
    };
    return this.lazySignal;
  }

  /** The caller's IP address (grpc-js names peers "1.2.3.4:port" or "[::1]:port"). */
  peer(): string {
    return this.call.getPeer().replace(/^\[?(.*?)\]?:\d+$/, "$1");
  }

  /** The answer is on its way: the call can no longer be cancelled or time out. */
  settle(): void {
    this.answered = true;
    this.releaseSignal?.();
  }

  get requestHeader(): Headers {
    return (this.lazyRequestHeader ??= new MetadataHeaders(this.call.metadata));
  }

  get responseHeader(): Headers {
    return new MetadataHeaders((this.responseHeaderMetadata ??= new grpc.Metadata()));
  }

  get responseTrailer(): Headers {
    return new MetadataHeaders((this.trailerMetadataValue ??= new grpc.Metadata()));
  }

  /** Response headers set by the handler, as grpc-js metadata (undefined: none). */
  responseMetadata(): grpc.Metadata | undefined {
    return this.responseHeaderMetadata;
  }

  /** Trailers set by the handler, as grpc-js metadata (undefined: none). */
  trailerMetadata(): grpc.Metadata | undefined {
    return this.trailerMetadataValue;
  }
}

/**
 * grpc-js Metadata through the Fetch Headers interface that connect handlers use, without
 * copying it. Names are lowercase in both; several values of a name read as one, comma-joined
 * (as Headers does). Binary (-bin) values read and write as base64, as they do through
 * connect-node, so a handler sees the same text whichever stack carried the call.
 */
class MetadataHeaders extends HeadersView {
  constructor(private readonly metadata: grpc.Metadata) {
    super();
  }

  get(name: string): string | null {
    const values = this.metadata.get(name.toLowerCase()).map((v) => (typeof v === "string" ? v : v.toString("base64")));
    return values.length === 0 ? null : values.join(", ");
  }
  set(name: string, value: string): void {
    const key = name.toLowerCase();
    this.metadata.set(key, key.endsWith("-bin") ? Buffer.from(value, "base64") : value);
  }
  append(name: string, value: string): void {
    const key = name.toLowerCase();
    this.metadata.add(key, key.endsWith("-bin") ? Buffer.from(value, "base64") : value);
  }
  delete(name: string): void {
    this.metadata.remove(name.toLowerCase());
  }
  protected names(): string[] {
    return Object.keys(this.metadata.getMap());
  }
}

function contextFor(method: DescMethod, call: AnyCall): GrpcHandlerContext {
  return new GrpcHandlerContext(method, call);
}

function toMetadata(headers: Headers): grpc.Metadata {
  const metadata = new grpc.Metadata();
  headers.forEach((value, key) => metadata.set(key, key.endsWith("-bin") ? Buffer.from(value, "base64") : value));
  return metadata;
}

/** A handler's error as grpc-js sends it: status, message, the error's metadata, the trailers the handler set, and the details. */
function toServiceError(err: unknown, ctx: GrpcHandlerContext): grpc.ServiceError {
  const error = err instanceof ConnectError ? err : ConnectError.from(ctx.signal.aborted ? ctx.signal.reason : err);
  const metadata = toMetadata(error.metadata);
  const trailers = ctx.trailerMetadata();
  if (trailers) metadata.merge(trailers);
  if (error.details.length > 0) {
    // The details (a google.rpc.BadRequest, say) as every gRPC client reads them: a
    // google.rpc.Status in the grpc-status-details-bin trailer, encoded as connect-node does.
    const encoded = setTrailerStatus(new Headers(), error).get(statusDetailsTrailer);
    if (encoded !== null) metadata.set(statusDetailsTrailer, Buffer.from(encoded, "base64"));
  }
  return Object.assign(new Error(error.rawMessage), {
    code: error.code as number as grpc.status,
    details: error.rawMessage,
    metadata,
  });
}

const statusDetailsTrailer = "grpc-status-details-bin";
