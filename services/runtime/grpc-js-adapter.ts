import { once } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary, type DescMessage, type DescMethod, type DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createContextValues, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { codeName } from "./errors.js";
import { logRpc } from "./instrument.js";
import { methodMetrics } from "./observability/metrics.js";
import type { Logger } from "./observability/logger.js";

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
  options: { logger: Logger },
): void {
  const definition: Record<string, grpc.MethodDefinition<Buffer, unknown>> = {};
  const handlers: grpc.UntypedServiceImplementation = {};
  const methods = impl as unknown as Record<string, AnyHandler>;
  for (const method of service.methods) {
    const metrics = methodMetrics(`/${service.typeName}/${method.name}`);
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
        const bytes = Buffer.from(toBinary(method.output, create(method.output, message as never)));
        metrics.responseSize("grpc", bytes.length);
        return bytes;
      },
      responseDeserialize: (bytes: Buffer) => bytes,
    };
    handlers[method.localName] = grpcHandler(method, methods[method.localName], options);
  }
  server.addService(definition as grpc.ServiceDefinition, handlers);
}

function grpcHandler(
  method: DescMethod,
  handler: AnyHandler,
  options: { logger: Logger },
): grpc.UntypedHandleCall {
  const decode = (bytes: Buffer) => decodeRequest(method.input, bytes);
  switch (method.methodKind) {
    case "unary":
      return (call: grpc.ServerUnaryCall<Buffer, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const ctx = contextFor(method, call);
        let request: unknown;
        try {
          request = decode(call.request);
        } catch (err) {
          callback(rejectUndecodable(method, ctx, err as ConnectError, options.logger));
          return;
        }
        Promise.resolve(handler(request, ctx)).then(
          (response) => {
            const header = ctx.responseMetadata();
            if (header) call.sendMetadata(header);
            callback(null, response, ctx.trailerMetadata());
          },
          (err: unknown) => callback(toServiceError(err, ctx)),
        );
      };
    case "server_streaming":
      return (call: grpc.ServerWritableStream<Buffer, unknown>) => {
        const ctx = contextFor(method, call);
        let request: unknown;
        try {
          request = decode(call.request);
        } catch (err) {
          call.emit("error", rejectUndecodable(method, ctx, err as ConnectError, options.logger));
          return;
        }
        void writeStream(call, handler(request, ctx) as AsyncIterable<unknown>, ctx);
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
        Promise.resolve(handler(decodeStream(call, decode), ctx)).then(
          (response) => {
            const header = ctx.responseMetadata();
            if (header) call.sendMetadata(header);
            callback(null, response, ctx.trailerMetadata());
          },
          (err: unknown) => callback(toServiceError(err, ctx)),
        );
      };
  }
}

function decodeRequest(schema: DescMessage, bytes: Buffer): unknown {
  try {
    return fromBinary(schema, bytes);
  } catch (err) {
    throw new ConnectError(
      `request is not a valid ${schema.typeName}: ${(err as Error).message}`,
      Code.InvalidArgument,
    );
  }
}

async function* decodeStream(
  call: grpc.ServerDuplexStream<Buffer, unknown> | grpc.ServerReadableStream<Buffer, unknown>,
  decode: (bytes: Buffer) => unknown,
): AsyncIterable<unknown> {
  // A plain for-await destroys the duplex when the client half-closes, and with it the
  // response side before the status is sent; keep the call open for the responses.
  for await (const bytes of call.iterator({ destroyOnReturn: false })) yield decode(bytes as Buffer);
}

/** The handler never ran for undecodable bytes; log the RPC here so it is not silent. */
function rejectUndecodable(method: DescMethod, ctx: HandlerContext, error: ConnectError, logger: Logger): grpc.ServiceError {
  const metrics = methodMetrics(`/${method.parent.typeName}/${method.name}`);
  metrics.started();
  metrics.finished("grpc", codeName(error.code), 0);
  logRpc(logger, {
    rpc: `/${method.parent.typeName}/${method.name}`,
    protocol: "grpc",
    requestId: ctx.requestHeader.get("x-request-id") ?? "",
    ms: 0,
    error,
  });
  return toServiceError(error, ctx);
}

async function writeStream(
  call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>,
  responses: AsyncIterable<unknown>,
  ctx: GrpcHandlerContext,
): Promise<void> {
  try {
    let headerSent = false;
    for await (const response of responses) {
      if (call.cancelled) return;
      if (!headerSent) {
        headerSent = true;
        const header = ctx.responseMetadata();
        if (header) call.sendMetadata(header);
      }
      if (!call.write(response)) await once(call, "drain", { signal: ctx.signal });
    }
    call.end(ctx.trailerMetadata());
  } catch (err) {
    if (!call.cancelled) call.emit("error", toServiceError(err, ctx));
  }
}

/**
 * The HandlerContext of a grpc-js call. connect's createHandlerContext builds linked
 * AbortControllers, a deadline timer and Headers for every call, most of which a handler never
 * reads, and that machinery cost more than the whole grpc-js call on the hot path
 * (docs/benchmarks.md). Here each part is built on first use.
 */
class GrpcHandlerContext implements HandlerContext {
  readonly requestMethod = "POST";
  readonly protocolName = "grpc";
  readonly values = createContextValues();
  readonly url: string;
  readonly service: DescService;
  private readonly deadlineMs: number;
  private lazySignal: AbortSignal | undefined;
  private lazyRequestHeader: Headers | undefined;
  private lazyResponseHeader: Headers | undefined;
  private lazyResponseTrailer: Headers | undefined;

  constructor(
    readonly method: DescMethod,
    private readonly call: AnyCall,
  ) {
    this.service = method.parent;
    this.url = `/${method.parent.typeName}/${method.name}`;
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
    const controller = new AbortController();
    const cancel = () => controller.abort(new ConnectError("the client cancelled the call", Code.Canceled));
    if (this.call.cancelled) cancel();
    else (this.call as NodeJS.EventEmitter).once("cancelled", cancel);
    const timeoutMs = this.timeoutMs();
    const signals = [controller.signal];
    if (timeoutMs !== undefined) signals.push(deadlineSignal(timeoutMs));
    this.lazySignal = AbortSignal.any(signals);
    return this.lazySignal;
  }

  get requestHeader(): Headers {
    return (this.lazyRequestHeader ??= fromMetadata(this.call.metadata));
  }

  get responseHeader(): Headers {
    return (this.lazyResponseHeader ??= new Headers());
  }

  get responseTrailer(): Headers {
    return (this.lazyResponseTrailer ??= new Headers());
  }

  /** Response headers set by the handler, as grpc-js metadata (undefined: none). */
  responseMetadata(): grpc.Metadata | undefined {
    return this.lazyResponseHeader && toMetadata(this.lazyResponseHeader);
  }

  /** Trailers set by the handler, as grpc-js metadata (undefined: none). */
  trailerMetadata(): grpc.Metadata | undefined {
    return this.lazyResponseTrailer && toMetadata(this.lazyResponseTrailer);
  }
}

function deadlineSignal(timeoutMs: number): AbortSignal {
  const controller = new AbortController();
  setTimeout(() => controller.abort(new ConnectError("the deadline was exceeded", Code.DeadlineExceeded)), timeoutMs).unref();
  return controller.signal;
}

function contextFor(method: DescMethod, call: AnyCall): GrpcHandlerContext {
  return new GrpcHandlerContext(method, call);
}

function fromMetadata(metadata: grpc.Metadata): Headers {
  const headers = new Headers();
  for (const [key, value] of Object.entries(metadata.getMap())) {
    if (typeof value === "string") headers.set(key, value);
  }
  return headers;
}

function toMetadata(headers: Headers): grpc.Metadata {
  const metadata = new grpc.Metadata();
  headers.forEach((value, key) => metadata.set(key, value));
  return metadata;
}

function toServiceError(err: unknown, ctx: HandlerContext): grpc.ServiceError {
  const error = err instanceof ConnectError ? err : ConnectError.from(ctx.signal.aborted ? ctx.signal.reason : err);
  return Object.assign(new Error(error.rawMessage), {
    code: error.code as number as grpc.status,
    details: error.rawMessage,
    metadata: toMetadata(error.metadata),
  });
}
