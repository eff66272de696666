import { once } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary, type DescMessage, type DescMethod, type DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createHandlerContext, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { logRpc } from "./instrument.js";
import type { Logger } from "./logger.js";

type AnyHandler = (input: unknown, ctx: HandlerContext) => unknown;
type AnyCall = grpc.ServerUnaryCall<Buffer, unknown> | grpc.ServerWritableStream<Buffer, unknown> | grpc.ServerDuplexStream<Buffer, unknown>;

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
  options: { logger: Logger; shutdownSignal: AbortSignal },
): void {
  const definition: Record<string, grpc.MethodDefinition<Buffer, unknown>> = {};
  const handlers: grpc.UntypedServiceImplementation = {};
  const methods = impl as unknown as Record<string, AnyHandler>;
  for (const method of service.methods) {
    definition[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      originalName: method.name,
      requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      requestSerialize: (bytes: Buffer) => bytes,
      requestDeserialize: (bytes: Buffer) => bytes,
      responseSerialize: (message: unknown) => Buffer.from(toBinary(method.output, create(method.output, message as never))),
      responseDeserialize: (bytes: Buffer) => bytes,
    };
    handlers[method.localName] = grpcHandler(method, methods[method.localName], options);
  }
  server.addService(definition as grpc.ServiceDefinition, handlers);
}

function grpcHandler(
  method: DescMethod,
  handler: AnyHandler,
  options: { logger: Logger; shutdownSignal: AbortSignal },
): grpc.UntypedHandleCall {
  const decode = (bytes: Buffer) => decodeRequest(method.input, bytes);
  switch (method.methodKind) {
    case "unary":
      return (call: grpc.ServerUnaryCall<Buffer, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const ctx = contextFor(method, call, options.shutdownSignal);
        let request: unknown;
        try {
          request = decode(call.request);
        } catch (err) {
          callback(rejectUndecodable(method, ctx, err as ConnectError, options.logger));
          return;
        }
        Promise.resolve(handler(request, ctx)).then(
          (response) => {
            call.sendMetadata(toMetadata(ctx.responseHeader));
            callback(null, response, toMetadata(ctx.responseTrailer));
          },
          (err: unknown) => callback(toServiceError(err, ctx)),
        );
      };
    case "server_streaming":
      return (call: grpc.ServerWritableStream<Buffer, unknown>) => {
        const ctx = contextFor(method, call, options.shutdownSignal);
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
        const ctx = contextFor(method, call, options.shutdownSignal);
        const requests = decodeStream(call, decode);
        void writeStream(call, handler(requests, ctx) as AsyncIterable<unknown>, ctx);
      };
    case "client_streaming":
      throw new Error(`${method.parent.typeName}/${method.name}: client streaming is not supported`);
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

async function* decodeStream(call: grpc.ServerDuplexStream<Buffer, unknown>, decode: (bytes: Buffer) => unknown): AsyncIterable<unknown> {
  // A plain for-await destroys the duplex when the client half-closes, and with it the
  // response side before the status is sent; keep the call open for the responses.
  for await (const bytes of call.iterator({ destroyOnReturn: false })) yield decode(bytes as Buffer);
}

/** The handler never ran for undecodable bytes; log the RPC here so it is not silent. */
function rejectUndecodable(method: DescMethod, ctx: HandlerContext, error: ConnectError, logger: Logger): grpc.ServiceError {
  logRpc(logger, {
    rpc: `/${method.parent.typeName}/${method.name}`,
    protocol: "grpc",
    requestId: ctx.requestHeader.get("x-request-id") ?? "",
    ms: 0,
    error,
  });
  return toServiceError(error, ctx);
}

async function writeStream(call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>, responses: AsyncIterable<unknown>, ctx: HandlerContext): Promise<void> {
  try {
    call.sendMetadata(toMetadata(ctx.responseHeader));
    for await (const response of responses) {
      if (call.cancelled) return;
      if (!call.write(response)) await once(call, "drain", { signal: ctx.signal });
    }
    call.end(toMetadata(ctx.responseTrailer));
  } catch (err) {
    if (!call.cancelled) call.emit("error", toServiceError(err, ctx));
  }
}

/** The connect HandlerContext of a grpc-js call: deadline, cancellation and headers. */
function contextFor(method: DescMethod, call: AnyCall, shutdownSignal: AbortSignal): HandlerContext {
  const deadline = call.getDeadline();
  const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline;
  const cancelled = new AbortController();
  (call as NodeJS.EventEmitter).on("cancelled", () => cancelled.abort(new ConnectError("the client cancelled the call", Code.Canceled)));
  return createHandlerContext({
    service: method.parent,
    method,
    protocolName: "grpc",
    requestMethod: "POST",
    url: `/${method.parent.typeName}/${method.name}`,
    timeoutMs: Number.isFinite(deadlineMs) ? Math.max(0, deadlineMs - Date.now()) : undefined,
    requestSignal: cancelled.signal,
    shutdownSignal,
    requestHeader: fromMetadata(call.metadata),
  });
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
