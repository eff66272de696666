import type * as http from "node:http";
import type * as http2 from "node:http2";
import { Code, ConnectError, createContextValues } from "@connectrpc/connect";
import type { ConnectNodeAdapterOptions } from "@connectrpc/connect-node";
import { codeToHttpStatus, errorToJsonBytes } from "@connectrpc/connect/protocol-connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { Role } from "../../../gen/mlmesh/policy/v1/policy_pb.js";
import { requestFactsKey, type RequestFacts } from "../security/gatekeeper.js";
import { toConnectError } from "./errors.js";
import type { CallContext, CallPipeline, RoutePipeline } from "./pipeline.js";

/*
 * Plain HTTP routes (no RPC): the Open Inference Protocol's REST binding, GET /metrics, the
 * console's files. Each request is matched to a route, then runs the same per-call pipeline as
 * an RPC (pipeline.ts): request id, trace, metrics, identity and roles, limits, deadline, log
 * line. A route answers with an HttpReply, or throws a ConnectError that becomes a JSON
 * `{"error": "..."}` with the HTTP status of its code.
 */

/** A plain HTTP request handler (HTTP/1.1 or HTTP/2 compatibility API), as connect-node takes. */
export type HttpHandler = NonNullable<ConnectNodeAdapterOptions["fallback"]>;
export type HttpRequest = Parameters<HttpHandler>[0];
export type HttpResponse = Parameters<HttpHandler>[1];

/** A route's answer. */
export interface HttpReply {
  readonly status: number;
  readonly headers?: Readonly<Record<string, string | number>>;
  /** The body as one buffer or several (written in order); none for HEAD or 204. */
  readonly body?: Uint8Array | readonly Uint8Array[];
}

/** One plain HTTP route of a service. */
export interface HttpRoute {
  /**
   * The name in logs and metrics: the RPC a REST path stands for
   * ("/inference.GRPCInferenceService/ModelInfer"), else "METHOD /path" of a fixed path.
   * Names are bounded: never built from a request's own path.
   */
  readonly name: string;
  /** The role a caller needs when authentication is on. */
  readonly role: Role;
  /** Counted against the client's limits, like an RPC whose policy says `limited`. */
  readonly limited?: boolean;
  /** Probes and scrapes: logged at debug level when OK. */
  readonly quiet?: boolean;
  /** Answers the request (its URL already parsed). */
  answer(request: HttpRequest, url: URL, ctx: CallContext): HttpReply | Promise<HttpReply>;
}

/** A service's plain HTTP routes: the route a request takes, or undefined (404). */
export type HttpRouter = (method: string, path: string) => HttpRoute | undefined;

/** HTTP statuses of the gRPC codes a route may end with (the Open Inference Protocol's, where it says). */
const httpStatusOf: Partial<Record<Code, number>> = {
  [Code.InvalidArgument]: 400,
  [Code.FailedPrecondition]: 400,
  [Code.OutOfRange]: 400,
  [Code.Unauthenticated]: 401,
  [Code.PermissionDenied]: 403,
  [Code.NotFound]: 404,
  [Code.AlreadyExists]: 409,
  [Code.ResourceExhausted]: 429,
  [Code.Canceled]: 499,
  [Code.Unimplemented]: 501,
  [Code.Unavailable]: 503,
  [Code.DeadlineExceeded]: 504,
};

/**
 * An error whose HTTP status is not its code's (405, 413): logged and measured with its gRPC
 * code, answered with its own status and headers. (Told apart by its fields: ConnectError's
 * instanceof accepts any ConnectError.)
 */
export class HttpError extends ConnectError {
  constructor(
    readonly httpStatus: number,
    message: string,
    code: Code,
    readonly httpHeaders: Readonly<Record<string, string>> = {},
  ) {
    super(message, code);
  }
}

/** A method the path does not answer: 405 with Allow, UNIMPLEMENTED in logs and metrics. */
export function methodNotAllowed(method: string, path: string, allowed: string): HttpError {
  return new HttpError(405, `${method} is not allowed on ${path}`, Code.Unimplemented, { allow: allowed });
}

/** A request body over the size limit: RESOURCE_EXHAUSTED in logs and metrics, 413 to the client. */
export class PayloadTooLargeError extends HttpError {
  constructor(maxBytes: number) {
    super(413, `the body exceeds MAX_MESSAGE_BYTES (${maxBytes} bytes)`, Code.ResourceExhausted);
  }
}

/**
 * Serves a router's routes through the pipeline; requests no route takes get 404 (also logged,
 * under the fixed name "unrouted" so that a scanner's paths cannot grow the metrics).
 */
export function serveHttpRoutes(router: HttpRouter, pipeline: CallPipeline, requestTimeoutMs: number): HttpHandler {
  const unrouted: HttpRoute = {
    name: "HTTP unrouted",
    role: Role.ANYONE, // the answer says only that nothing is here
    answer: (request, url) => {
      // An RPC to a method no service here has (errorReply answers it in its own protocol).
      if (rpcProtocolOf(request) !== undefined) throw new ConnectError(`${url.pathname} is not a method served here`, Code.Unimplemented);
      throw new ConnectError(`${url.pathname} is not served here`, Code.NotFound);
    },
  };
  const routes = new Map<HttpRoute, RoutePipeline>();
  const pipelineOf = (route: HttpRoute) => {
    let found = routes.get(route);
    if (found === undefined) {
      found = pipeline.forRoute({ name: route.name, policy: { role: route.role, limited: route.limited ?? false }, quiet: route.quiet });
      routes.set(route, found);
    }
    return found;
  };
  return (request, response) => {
    const url = new URL(request.url ?? "/", "http://service");
    const route = router(request.method ?? "GET", url.pathname) ?? unrouted;
    void runHttpCall(pipelineOf(route), route, request, response, url, requestTimeoutMs);
  };
}

async function runHttpCall(pipeline: RoutePipeline, route: HttpRoute, request: HttpRequest, response: HttpResponse, url: URL, timeoutMs: number): Promise<void> {
  const ctx = new HttpCallContext(request, response, timeoutMs);
  const call = pipeline.begin(ctx);
  let reply: HttpReply;
  let error: ConnectError | undefined;
  try {
    const admitted = call.admit();
    if (admitted !== undefined) await admitted;
    reply = await route.answer(request, url, ctx);
  } catch (err) {
    error = toConnectError(err, ctx.signal);
    reply = errorReply(error, rpcProtocolOf(request), String(request.headers["content-type"] ?? ""));
  }
  ctx.done();
  if (!response.headersSent && !response.writableEnded) send(response, ctx.responseHeader, reply);
  call.finish(error);
}

/** The RPC protocol a request speaks by its headers (what connect-node would have served), or undefined for plain HTTP. */
function rpcProtocolOf(request: HttpRequest): "grpc" | "connect" | undefined {
  const contentType = String(request.headers["content-type"] ?? "");
  if (contentType.startsWith("application/grpc")) return "grpc"; // gRPC and gRPC-web
  if (contentType.startsWith("application/connect+") || request.headers["connect-protocol-version"] !== undefined) return "connect";
  return undefined;
}

/**
 * A failed call's answer: for an RPC, its protocol's error (gRPC and gRPC-web: a trailers-only
 * 200 with grpc-status; Connect: the status of its code and its error JSON), so any client reads
 * the code; for plain HTTP, `{"error": "..."}` with the HTTP status of the code.
 */
function errorReply(error: ConnectError, rpc: "grpc" | "connect" | undefined, contentType: string): HttpReply {
  if (rpc === "grpc") {
    const headers: Record<string, string> = { "content-type": contentType };
    setTrailerStatus(new Headers(), error).forEach((value, name) => (headers[name] = value));
    return { status: 200, headers };
  }
  if (rpc === "connect") {
    // Connect answers a procedure it does not know with 404 (as connect-go and connect-node do).
    const status = error.code === Code.Unimplemented ? 404 : codeToHttpStatus(error.code);
    return { status, headers: { "content-type": "application/json" }, body: errorToJsonBytes(error, {}) };
  }
  const { httpStatus, httpHeaders } = error as Partial<HttpError>;
  return {
    status: httpStatus ?? httpStatusOf[error.code] ?? 500,
    headers: { "content-type": "application/json", ...(error.code === Code.Unauthenticated ? { "www-authenticate": "Bearer" } : {}), ...httpHeaders },
    body: Buffer.from(JSON.stringify({ error: error.rawMessage })),
  };
}

function send(response: HttpResponse, pipelineHeaders: Headers, reply: HttpReply): void {
  const chunks = reply.body === undefined ? [] : reply.body instanceof Uint8Array ? [reply.body] : reply.body;
  const length = chunks.reduce((sum, c) => sum + c.length, 0);
  const headers: Record<string, string | number> = { ...reply.headers };
  pipelineHeaders.forEach((value, name) => (headers[name] = value));
  const stream = (response as Partial<http2.Http2ServerResponse>).stream;
  if (chunks.length === 0 && stream !== undefined) {
    // HTTP/2 with no body: one HEADERS frame that ends the stream (a gRPC "trailers-only"
    // answer must be exactly that; the compatibility API would add an empty DATA frame).
    stream.respond({ ...headers, ":status": reply.status }, { endStream: true });
    return;
  }
  if (headers["content-length"] === undefined && reply.status !== 204 && reply.status !== 304) headers["content-length"] = length;
  const out = response as http.ServerResponse; // the HTTP/2 compatibility response has the same calls
  out.writeHead(reply.status, headers);
  for (const chunk of chunks) out.write(chunk);
  out.end();
}

/**
 * The pipeline's view of an HTTP request: its headers, the response headers the steps set (the
 * request id), context values (request facts, the caller, the span), and a signal that aborts
 * when the client goes away or the request outlives HTTP_REQUEST_TIMEOUT (the deadline step).
 */
class HttpCallContext implements CallContext, RequestFacts {
  readonly protocolName: string;
  readonly requestHeader: Headers;
  readonly responseHeader = new Headers();
  readonly values = createContextValues();
  readonly requestBytes: number;
  readonly #controller = new AbortController();
  readonly #timer: NodeJS.Timeout;
  readonly #onClose: () => void;

  constructor(
    private readonly request: HttpRequest,
    private readonly response: HttpResponse,
    timeoutMs: number,
  ) {
    this.protocolName = request.url?.startsWith("/v2") ? "rest" : "http";
    this.requestHeader = new Headers();
    for (const [name, value] of Object.entries(request.headers)) {
      if (name.startsWith(":") || value === undefined) continue;
      this.requestHeader.set(name, Array.isArray(value) ? value.join(", ") : value);
    }
    const declared = Number(request.headers["content-length"]);
    this.requestBytes = Number.isFinite(declared) ? declared : 0;
    this.values.set(requestFactsKey, this);
    this.#timer = setTimeout(() => this.#controller.abort(new ConnectError("the request outlived HTTP_REQUEST_TIMEOUT", Code.DeadlineExceeded)), timeoutMs);
    this.#timer.unref();
    this.#onClose = () => {
      if (!response.writableEnded) this.#controller.abort(new ConnectError("the client went away", Code.Canceled));
    };
    response.once("close", this.#onClose);
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  peer(): string {
    return this.request.socket?.remoteAddress ?? "unknown";
  }

  /** The answer is ready: no more deadline or cancel. */
  done(): void {
    clearTimeout(this.#timer);
    this.response.removeListener("close", this.#onClose);
  }
}
