import { create, type DescMessage, type DescMethod, type DescService, type MessageShape } from "@bufbuild/protobuf";
import { pathToString } from "@bufbuild/protobuf/reflect";
import { createValidator, type Validator } from "@bufbuild/protovalidate";
import { Code, ConnectError, createContextKey, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { Role } from "../../../gen/mlmesh/policy/v1/policy_pb.js";
import { codeName, invalidArgument, toConnectError } from "./errors.js";
import type { Logger } from "../observability/logger.js";
import { methodMetrics, type MethodMetrics } from "../observability/metrics.js";
import { randomUuid } from "../observability/random-ids.js";
import type { TraceSpan, Tracing } from "../observability/tracing.js";
import type { Principal } from "../security/credentials.js";
import type { Admittee, Gatekeeper, MethodGate, Release } from "../security/gatekeeper.js";
import { methodPolicy, type MethodPolicy } from "../security/policy.js";
import { decodeFailureOf, isValidated, type ServiceRegistration } from "./registration.js";

/*
 * The per-call pipeline: what every call goes through, whichever path carries it — native gRPC
 * (grpc-js), gRPC-web and Connect (connect-node), and the plain HTTP routes (the Open Inference
 * Protocol's /v2 REST binding, GET /metrics, the console's files: http-routes.ts). The steps, in
 * the order they run:
 *   1. request id: the caller's x-request-id (up to 128 characters), or a new one, echoed in the
 *      response header and kept in the call's identity (callIdentityKey) for the prediction log;
 *   2. trace: a span of the caller's trace (W3C traceparent) or a new one, in the call's identity
 *      for the calls the handler makes (observability/tracing.ts);
 *   3. metrics: in flight now; at the end requests by protocol and code, and latency;
 *   4. identity and roles: the caller's bearer token (UNAUTHENTICATED), its role against the
 *      route's policy (PERMISSION_DENIED; security/gatekeeper.ts); the caller joins the identity;
 *   5. limits: expensive or large calls against the client's limits (RESOURCE_EXHAUSTED);
 *   6. deadline: the transport's signal (ctx.signal) aborts at the caller's deadline or cancel;
 *      an abort becomes DEADLINE_EXCEEDED or CANCELLED (errors.ts), never INTERNAL;
 *   7. validation (RPCs): bytes that are no valid message, then protovalidate: INVALID_ARGUMENT
 *      with the field path and rule id (unless a MethodWire decoder already checked the rules);
 *   8. the handler;
 *   9. error mapping: no stack trace or internal message reaches a client;
 *  10. the log line: one JSON line per call — route, protocol, status code, duration, request
 *      id, trace and span ids, the caller's name when authenticated (never its token).
 * Everything a route needs is resolved once (RoutePipeline); a call allocates one InFlightCall.
 */

/** A caller's x-request-id longer than this is replaced by a new id (the prediction log's limit). */
const maxRequestIdLength = 128;

/** What a handler may read of its own call: who asked, under which request id and trace. */
export interface CallIdentity {
  /** Step 1: the prediction log's key. */
  readonly requestId: string;
  /** Step 2: the parent of the spans of the calls the handler makes. */
  readonly span: TraceSpan;
  /** Step 4: the authenticated caller; undefined when authentication is off or the route is open. */
  readonly principal: Principal | undefined;
}

/** The call's identity in ctx.values: read it with callIdentityOf. */
const callIdentityKey = createContextKey<CallIdentity | undefined>(undefined, { description: "the call's request id, trace span and caller" });

/**
 * The identity of the call `ctx` belongs to; undefined outside the pipeline (a handler called
 * directly). One value for the three: the prediction log reads them on every call.
 */
export function callIdentityOf(ctx: Pick<HandlerContext, "values">): CallIdentity | undefined {
  // connect keeps a context value as an own property of the values object, named by its key's
  // id (createContextValues). Read here, for one key, V8 compiles the lookup to a field load;
  // through the values' get(), shared by every key, it took V8's generic keyed load, which perf
  // of a loaded Predictor put at 0.25 µs a call. get() stays the answer if that ever changes.
  const own = (ctx.values as unknown as Partial<Record<symbol, CallIdentity>>)[callIdentityKey.id];
  return own ?? ctx.values.get(callIdentityKey);
}

/** What the steps read and write of a call; connect's HandlerContext has it, and so does an HTTP route's. */
export type CallContext = Pick<HandlerContext, "requestHeader" | "responseHeader" | "values" | "signal" | "protocolName">;

/** Who may take a route and how it is logged. */
export interface RouteSpec {
  /** The name in logs and metrics: "/pkg.Service/Method", or "GET /metrics" for a plain HTTP route. */
  readonly name: string;
  readonly policy: MethodPolicy;
  /** A liveness or readiness probe, a scrape or reflection (polled every few seconds): logged at debug level when OK. */
  readonly quiet?: boolean;
}

/** Options of a CallPipeline. */
export interface PipelineOptions {
  readonly logger: Logger;
  readonly tracing: Tracing;
  /** Credentials, roles and per-client limits (security/gatekeeper.ts); none: every call admitted. */
  readonly gatekeeper?: Gatekeeper;
}

/** The pipeline of one server: one RoutePipeline per route, made once and kept. */
export class CallPipeline {
  /** One validator per process: it caches the compiled rules of every message it has seen. */
  readonly validator: Validator = createValidator();
  readonly #routes = new Map<string, RoutePipeline>();

  constructor(readonly options: PipelineOptions) {}

  /** The pipeline of an RPC, with its policy from the .proto's (mlmesh.policy.v1.policy) option. */
  forMethod(method: DescMethod): RoutePipeline {
    const name = `/${method.parent.typeName}/${method.name}`;
    return this.forRoute({ name, policy: methodPolicy(method), quiet: name.startsWith("/grpc.") });
  }

  /** The pipeline of a route (an RPC, or a plain HTTP route); the first spec given for a name stands. */
  forRoute(spec: RouteSpec): RoutePipeline {
    let route = this.#routes.get(spec.name);
    if (route === undefined) {
      route = new RoutePipeline(spec, this.options);
      this.#routes.set(spec.name, route);
    }
    return route;
  }

  /** A service's handlers, each run through its method's pipeline; methods left out answer UNIMPLEMENTED. */
  wrapService(registration: ServiceRegistration): ServiceImpl<DescService> {
    const { service, impl } = registration;
    const handlers = impl as Record<string, AnyHandler | undefined>;
    const result: Record<string, AnyHandler> = {};
    for (const method of service.methods) {
      const handler = handlers[method.localName]?.bind(impl) ?? unimplemented(method);
      result[method.localName] = this.#wrapMethod(method, handler);
    }
    return result as ServiceImpl<DescService>;
  }

  #wrapMethod(method: DescMethod, handler: AnyHandler): AnyHandler {
    const route = this.forMethod(method);
    const { validator } = this;
    const validate = (input: unknown) => {
      if (isValidated(input as object)) return;
      const undecodable = decodeFailureOf(input as object);
      if (undecodable !== undefined) throw undecodable;
      validateRequest(validator, method.input, input);
    };
    // Compile the request's rules now: the first validation in a process sets up CEL (~100 ms
    // here, more on a loaded machine), which would otherwise land on the first caller.
    validator.validate(method.input, create(method.input));
    switch (method.methodKind) {
      case "unary":
        return async (request, ctx) => {
          const call = route.begin(ctx);
          try {
            const admitted = call.admit();
            if (admitted !== undefined) await admitted;
            validate(request);
            const response = await handler(request, ctx);
            call.finish(undefined);
            return response;
          } catch (err) {
            throw call.finish(toConnectError(err, ctx.signal));
          }
        };
      case "server_streaming":
        return async function* (request, ctx) {
          const call = route.begin(ctx);
          try {
            await call.admit();
            validate(request);
            yield* handler(request, ctx) as AsyncIterable<unknown>;
            call.finish(undefined);
          } catch (err) {
            throw call.finish(toConnectError(err, ctx.signal));
          }
        };
      case "client_streaming":
        return async (requests, ctx) => {
          const call = route.begin(ctx);
          try {
            await call.admit();
            const response = await handler(validatedStream(requests as AsyncIterable<unknown>, validate), ctx);
            call.finish(undefined);
            return response;
          } catch (err) {
            throw call.finish(toConnectError(err, ctx.signal));
          }
        };
      case "bidi_streaming":
        return async function* (requests, ctx) {
          const call = route.begin(ctx);
          try {
            await call.admit();
            yield* handler(validatedStream(requests as AsyncIterable<unknown>, validate), ctx) as AsyncIterable<unknown>;
            call.finish(undefined);
          } catch (err) {
            throw call.finish(toConnectError(err, ctx.signal));
          }
        };
    }
  }
}

type AnyHandler = (input: unknown, ctx: HandlerContext) => unknown;

/** Everything the steps need of one route, resolved once. */
export class RoutePipeline {
  readonly metrics: MethodMetrics;
  readonly gate: MethodGate | undefined;

  constructor(
    readonly spec: RouteSpec,
    readonly options: PipelineOptions,
  ) {
    this.metrics = methodMetrics(spec.name);
    // Refusals name the method as the caller knows it ("Predict"), or the HTTP route ("GET /metrics").
    const shortName = spec.name.startsWith("/") ? spec.name.slice(spec.name.lastIndexOf("/") + 1) : spec.name;
    this.gate = options.gatekeeper?.forRoute(shortName, spec.policy);
  }

  /** Steps 1-3 (request id, trace, metrics); the call then passes admit() and ends with finish(). */
  begin(ctx: CallContext): InFlightCall {
    return new InFlightCall(this, ctx);
  }
}

/** One call between begin and finish. */
export class InFlightCall implements CallIdentity, Admittee {
  readonly started = performance.now();
  readonly requestId: string;
  readonly span: TraceSpan;
  principal: Principal | undefined = undefined;
  #release: Release | undefined;

  constructor(
    private readonly route: RoutePipeline,
    private readonly ctx: CallContext,
  ) {
    const given = ctx.requestHeader.get("x-request-id");
    this.requestId = given && given.length <= maxRequestIdLength ? given : randomUuid();
    ctx.responseHeader.set("x-request-id", this.requestId);
    this.span = route.options.tracing.start(route.spec.name, ctx.requestHeader.get("traceparent"));
    ctx.values.set(callIdentityKey, this);
    route.metrics.started();
  }

  /**
   * Steps 4-5: throws the status that refuses the call, or admits it. A promise only when the
   * gate must wait (a JWT to verify): static tokens and no authentication stay synchronous.
   */
  admit(): Promise<void> | undefined {
    const admitted = this.route.gate?.admit(this.ctx, this);
    if (admitted instanceof Promise) {
      return admitted.then((release) => {
        this.#release = release;
      });
    }
    this.#release = admitted;
    return undefined;
  }

  /** Metrics, span and the log line of the outcome (undefined: OK); returns the error for rethrowing. */
  finish<E extends ConnectError | undefined>(error: E): E {
    this.#release?.();
    const { route, ctx } = this;
    const ms = performance.now() - this.started;
    const code = error === undefined ? "OK" : codeName(error.code);
    route.metrics.finished(ctx.protocolName, code, ms / 1000);
    this.span.end(error && { code, message: error.rawMessage });
    logRpc(route.options.logger, {
      rpc: route.spec.name,
      protocol: ctx.protocolName,
      requestId: this.requestId,
      ms,
      error,
      traceId: this.span.traceId,
      spanId: this.span.spanId,
      client: this.principal?.name,
      quiet: route.spec.quiet,
    });
    return error;
  }
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

/** A request stream whose every message is validated as the handler reads it. */
async function* validatedStream(requests: AsyncIterable<unknown>, validate: (request: unknown) => void): AsyncIterable<unknown> {
  for await (const request of requests) {
    validate(request);
    yield request;
  }
}

/**
 * Throws INVALID_ARGUMENT listing every violated rule: "rows[0].values[1]: ... [float.finite]",
 * each also a field violation of a google.rpc.BadRequest in the status details (errors.ts).
 */
function validateRequest(validator: Validator, schema: DescMessage, request: unknown): void {
  const result = validator.validate(schema, request as MessageShape<DescMessage>);
  if (result.kind === "valid") return;
  if (result.kind === "invalid") {
    const problems = result.violations.map((v) => v.toString());
    const violations = result.violations.map((v) => ({ field: pathToString(v.field), description: v.message, reason: v.ruleId }));
    throw invalidArgument(`invalid ${schema.name}: ${problems.join("; ")}`, violations);
  }
  throw new ConnectError(`cannot validate ${schema.name}`, Code.Internal, undefined, undefined, result.error);
}

/** Fields of one call's log line. */
export interface CallOutcome {
  readonly rpc: string;
  readonly protocol: string;
  readonly requestId: string;
  readonly ms: number;
  readonly error: ConnectError | undefined;
  readonly traceId?: string;
  readonly spanId?: string;
  /** The authenticated caller's name. */
  readonly client?: string;
  /** Logged at debug level when OK (probes, scrapes, health and reflection). */
  readonly quiet?: boolean;
}

/**
 * Writes the one log line of a call; INTERNAL errors also log their cause with its stack.
 */
function logRpc(logger: Logger, outcome: CallOutcome): void {
  const { rpc, protocol, requestId, error } = outcome;
  const ms = Math.round(outcome.ms * 1000) / 1000;
  const trace = { trace_id: outcome.traceId, span_id: outcome.spanId, client: outcome.client };
  if (error === undefined) {
    const level = outcome.quiet ? "debug" : "info";
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

/** A route's role, for specs written by hand (plain HTTP routes). */
export function routePolicy(role: Role, limited = false): MethodPolicy {
  return { role, limited };
}
