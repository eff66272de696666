import { randomUUID } from "node:crypto";
import { create, type DescMessage, type DescMethod, type DescService, type MessageShape } from "@bufbuild/protobuf";
import { createValidator, type Validator } from "@bufbuild/protovalidate";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { codeName, toConnectError } from "./errors.js";
import type { Logger } from "./observability/logger.js";
import { methodMetrics, type MethodMetrics } from "./observability/metrics.js";
import { traceSpanKey, type Tracing } from "./observability/tracing.js";
import { principalKey } from "./security/credentials.js";
import type { Gatekeeper, Release } from "./security/gatekeeper.js";

/** Handlers of a service as written by its author; methods left out answer UNIMPLEMENTED. */
export type PartialServiceImpl<S extends DescService> = Partial<ServiceImpl<S>>;

/** A service descriptor with its (possibly partial) implementation. */
export interface ServiceRegistration<S extends DescService = DescService> {
  readonly service: S;
  readonly impl: PartialServiceImpl<S>;
  /** Hand-written codecs of some methods, for the native gRPC path (by method local name). */
  readonly wire?: Readonly<Record<string, MethodWire>>;
}

/**
 * A method's hand-written wire codec (runtime/wire/), used by the native gRPC path where
 * protobuf-es reflection and protovalidate cost more than the work (per-row messages).
 */
export interface MethodWire {
  /**
   * The request, decoded and checked against every rule of its .proto (marked as such with
   * markValidated), or undefined to leave the bytes to protobuf-es and protovalidate, whose
   * answer (errors included) then stands.
   */
  decodeRequest(bytes: Buffer): object | undefined;
  /** The response's bytes, exactly as protobuf-es writes them; undefined to leave it to protobuf-es. */
  encodeResponse(response: unknown): Uint8Array | undefined;
}

/** Builds a registration; the generic keeps the handler types checked against the descriptor. */
export function serve<S extends DescService>(service: S, impl: PartialServiceImpl<S>, wire?: ServiceRegistration["wire"]): ServiceRegistration {
  return { service, impl, wire } as unknown as ServiceRegistration;
}

/** Requests a MethodWire decoder has already checked against their rules. */
const validatedRequests = new WeakSet<object>();

/** Marks a request as checked against its contract's rules while decoded (MethodWire). */
export function markValidated(request: object): void {
  validatedRequests.add(request);
}

type AnyHandler = (input: unknown, ctx: HandlerContext) => unknown;

/** Options of instrumentService. */
export interface InstrumentOptions {
  readonly logger: Logger;
  readonly validator: Validator;
  readonly tracing: Tracing;
  /** Credentials, roles and per-client limits (security/gatekeeper.ts); none: every call admitted. */
  readonly gatekeeper?: Gatekeeper;
}

/** One validator per process: it caches the compiled rules of every message it has seen. */
export function createRequestValidator(): Validator {
  return createValidator();
}

/**
 * Wraps every handler of a service with what each RPC needs, whatever the transport that
 * carries it (grpc-js for native gRPC, connect-node for gRPC-web and Connect):
 *   1. a request id (the caller's x-request-id, or a new one), echoed in the response header;
 *   2. the gatekeeper: the caller's bearer token (UNAUTHENTICATED), its role against the
 *      method's policy (PERMISSION_DENIED), its limits on expensive calls (RESOURCE_EXHAUSTED);
 *   3. protovalidate: a request that breaks a rule of its .proto fails INVALID_ARGUMENT with
 *      the field path and rule id, before the handler runs (unless a MethodWire decoder
 *      already checked the same rules);
 *   4. error mapping (toConnectError): no stack trace or internal message reaches a client;
 *   5. a span of the caller's trace (W3C traceparent) or a new one, in ctx.values for the
 *      calls the handler makes (observability/tracing.ts);
 *   6. metrics: requests by protocol and code, latency, in flight (observability/metrics.ts);
 *   7. one JSON log line per RPC: method, status code, duration, request id, trace and span ids,
 *      the caller's name when authenticated (never its token).
 * Methods the author did not implement answer UNIMPLEMENTED.
 */
export function instrumentService(registration: ServiceRegistration, options: InstrumentOptions): ServiceImpl<DescService> {
  const { service, impl } = registration;
  const handlers = impl as Record<string, AnyHandler | undefined>;
  const result: Record<string, AnyHandler> = {};
  for (const method of service.methods) {
    const handler = handlers[method.localName]?.bind(impl) ?? unimplemented(method);
    result[method.localName] = instrumentMethod(method, handler, options);
  }
  return result as ServiceImpl<DescService>;
}

function unimplemented(method: DescMethod): AnyHandler {
  const message = `${method.parent.typeName}/${method.name} is not implemented yet`;
  if (method.methodKind === "unary") {
    return () => Promise.reject(new ConnectError(message, Code.Unimplemented));
  }
  return async function* () {
    yield* [];
    throw new ConnectError(message, Code.Unimplemented);
  };
}

function instrumentMethod(method: DescMethod, handler: AnyHandler, options: InstrumentOptions): AnyHandler {
  const rpc = `/${method.parent.typeName}/${method.name}`;
  const metrics = methodMetrics(rpc);
  const validate = (input: unknown) => {
    if (!validatedRequests.has(input as object)) validateRequest(options.validator, method.input, input);
  };
  // Compile the request's rules now: the first validation in a process sets up CEL (~100 ms
  // here, more on a loaded machine), which would otherwise land on the first caller.
  options.validator.validate(method.input, create(method.input));
  const gate = options.gatekeeper?.forMethod(method);
  // Awaits only when the gate needs to (a JWT to verify): static tokens and no auth stay synchronous.
  const admit = (ctx: HandlerContext) => gate?.admit(ctx);
  switch (method.methodKind) {
    case "unary":
      return async (request, ctx) => {
        const call = beginCall(rpc, metrics, ctx, options);
        let release: Release | undefined;
        try {
          const admitted = admit(ctx);
          release = admitted instanceof Promise ? await admitted : admitted;
          validate(request);
          const response = await handler(request, ctx);
          call.end(undefined);
          return response;
        } catch (err) {
          throw call.end(toConnectError(err, ctx.signal));
        } finally {
          release?.();
        }
      };
    case "server_streaming":
      return async function* (request, ctx) {
        const call = beginCall(rpc, metrics, ctx, options);
        let release: Release | undefined;
        try {
          release = await admit(ctx);
          validate(request);
          yield* handler(request, ctx) as AsyncIterable<unknown>;
          call.end(undefined);
        } catch (err) {
          throw call.end(toConnectError(err, ctx.signal));
        } finally {
          release?.();
        }
      };
    case "client_streaming":
      return async (requests, ctx) => {
        const call = beginCall(rpc, metrics, ctx, options);
        let release: Release | undefined;
        try {
          release = await admit(ctx);
          const response = await handler(validatedStream(requests as AsyncIterable<unknown>, validate), ctx);
          call.end(undefined);
          return response;
        } catch (err) {
          throw call.end(toConnectError(err, ctx.signal));
        } finally {
          release?.();
        }
      };
    case "bidi_streaming":
      return async function* (requests, ctx) {
        const call = beginCall(rpc, metrics, ctx, options);
        let release: Release | undefined;
        try {
          release = await admit(ctx);
          yield* handler(validatedStream(requests as AsyncIterable<unknown>, validate), ctx) as AsyncIterable<unknown>;
          call.end(undefined);
        } catch (err) {
          throw call.end(toConnectError(err, ctx.signal));
        } finally {
          release?.();
        }
      };
  }
}

/** A request stream whose every message is validated as the handler reads it. */
async function* validatedStream(requests: AsyncIterable<unknown>, validate: (request: unknown) => void): AsyncIterable<unknown> {
  for await (const request of requests) {
    validate(request);
    yield request;
  }
}

/** Throws INVALID_ARGUMENT listing every violated rule: "rows[0].values[1]: ... [float.finite]". */
function validateRequest(validator: Validator, schema: DescMessage, request: unknown): void {
  const result = validator.validate(schema, request as MessageShape<DescMessage>);
  if (result.kind === "valid") return;
  if (result.kind === "invalid") {
    const problems = result.violations.map((v) => v.toString());
    throw new ConnectError(`invalid ${schema.name}: ${problems.join("; ")}`, Code.InvalidArgument);
  }
  throw new ConnectError(`cannot validate ${schema.name}`, Code.Internal, undefined, undefined, result.error);
}

interface CallRecord {
  /** Logs the outcome (undefined: OK) and returns the error for rethrowing. */
  end<E extends ConnectError | undefined>(error: E): E;
}

function beginCall(rpc: string, metrics: MethodMetrics, ctx: HandlerContext, options: InstrumentOptions): CallRecord {
  const started = performance.now();
  const requestId = ctx.requestHeader.get("x-request-id") || randomUUID();
  ctx.responseHeader.set("x-request-id", requestId);
  const span = options.tracing.start(rpc, ctx.requestHeader.get("traceparent"));
  ctx.values.set(traceSpanKey, span);
  metrics.started();
  return {
    end(error) {
      const ms = performance.now() - started;
      const code = error === undefined ? "OK" : codeName(error.code);
      metrics.finished(ctx.protocolName, code, ms / 1000);
      span.end(error && { code, message: error.rawMessage });
      const client = ctx.values.get(principalKey)?.name;
      logRpc(options.logger, { rpc, protocol: ctx.protocolName, requestId, ms, error, traceId: span.traceId, spanId: span.spanId, client });
      return error;
    },
  };
}

/** Fields of one RPC log line. */
export interface RpcOutcome {
  readonly rpc: string;
  readonly protocol: string;
  readonly requestId: string;
  readonly ms: number;
  readonly error: ConnectError | undefined;
  readonly traceId?: string;
  readonly spanId?: string;
  /** The authenticated caller's name. */
  readonly client?: string;
  /** A liveness or readiness probe (polled every few seconds): logged at debug level when OK. */
  readonly probe?: boolean;
}

/**
 * Writes the one log line of an RPC; INTERNAL errors also log their cause with its stack.
 * Successful health checks, probes and reflection calls (load balancers poll health every few
 * seconds) are logged at debug level.
 */
export function logRpc(logger: Logger, outcome: RpcOutcome): void {
  const { rpc, protocol, requestId, error } = outcome;
  const ms = Math.round(outcome.ms * 1000) / 1000;
  const trace = { trace_id: outcome.traceId, span_id: outcome.spanId, client: outcome.client };
  if (error === undefined) {
    const level = outcome.probe || rpc.startsWith("/grpc.") ? "debug" : "info";
    if (logger.isLevelEnabled(level)) logger[level]({ rpc, protocol, code: "OK", ms, requestId, ...trace }, "rpc");
    return;
  }
  const fields = { rpc, protocol, code: codeName(error.code), ms, requestId, ...trace, message: error.rawMessage };
  if (error.code === Code.Internal || error.code === Code.Unknown) {
    logger.error({ ...fields, cause: error.cause }, "rpc");
  } else {
    logger.info(fields, "rpc");
  }
}
