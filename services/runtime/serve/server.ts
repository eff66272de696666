import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import * as tls from "node:tls";
import { createRegistry } from "@bufbuild/protobuf";
import { createContextValues } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Role } from "../../../gen/mlmesh/policy/v1/policy_pb.js";
import * as grpc from "@grpc/grpc-js";
import type { ServerConfig } from "../env/settings.js";
import { withCors } from "./cors.js";
import { addServiceToGrpcServer } from "./grpc-js-adapter.js";
import { NativeGrpcRoutes, nativeGrpcEncodings } from "./grpc-h2.js";
import { HealthStatuses, ServingStatus } from "./health.js";
import { methodNotAllowed, serveHttpRoutes, type HttpHandler, type HttpReply, type HttpRoute, type HttpRouter } from "./http-routes.js";
import { CallPipeline } from "./pipeline.js";
import type { ServiceRegistration } from "./registration.js";
import type { Logger } from "../observability/logger.js";
import { methodMetrics, metricsText } from "../observability/metrics.js";
import { idsOnlyTracing, type Tracing } from "../observability/tracing.js";
import { reflectionRegistrations } from "./reflection.js";
import { requestFactsKey, type Gatekeeper, type RequestFacts } from "../security/gatekeeper.js";
import { loadServerTls, type ServerTls } from "../security/tls.js";

/** The first bytes of every HTTP/2 connection (RFC 9113, 3.4); no HTTP/1.1 method starts so. */
const http2Preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/**
 * Largest response. Responses are ours, not the caller's, so they are not held to
 * MAX_MESSAGE_BYTES: a reflection answer with buf/validate's descriptor alone is ~100 KB.
 */
const maxResponseBytes = 64 * 1024 * 1024;

/** How long a new connection may stay silent before it is closed. */
const firstBytesTimeoutMs = 10_000;
/**
 * HTTP/2 receive windows: per stream, and per connection. Node's default (64 KiB for both) lets
 * a client stream (IngestRecords, UploadModelVersion) send 64 KiB, then wait for this event loop
 * to read it and answer WINDOW_UPDATE: whenever the loop is busy the sender stalls, and the loop
 * then idles waiting for bytes. A message limit or more per stream keeps the pipe full.
 */
const streamWindowBytes = 4 * 1024 * 1024;
const connectionWindowBytes = 16 * 1024 * 1024;
/** The most memory one HTTP/2 session may hold (Node's maxSessionMemory, in MB): windows and headers. */
const sessionMemoryMegabytes = 64;

export interface StartServerOptions {
  readonly config: ServerConfig;
  readonly logger: Logger;
  /** The application services; health and reflection are added for them. */
  readonly services: readonly ServiceRegistration[];
  /**
   * The service's plain HTTP routes (a REST binding, a web page's files), run through the same
   * per-call pipeline as the RPCs; GET /metrics is added for every service. Others get 404.
   */
  readonly httpRoutes?: HttpRouter;
  /** Spans of the RPCs (runService's, from the environment); ids only without it. */
  readonly tracing?: Tracing;
  /** Credentials, roles and limits (runService's, from the environment); none: every call admitted. */
  readonly gatekeeper?: Gatekeeper;
}

/** A listening server. */
export interface RunningServer {
  /** The bound port (useful when the configured port was 0). */
  readonly port: number;
  /** "host:port" as clients dial it. */
  readonly address: string;
  /** Per-service serving status, answered by grpc.health.v1. */
  readonly health: HealthStatuses;
  /** Aborted when shutdown starts: long-lived streams end on it. */
  readonly stopping: AbortSignal;
  /**
   * Graceful stop: health NOT_SERVING, no new connections, in-flight calls finish within
   * the grace period, then remaining connections are cut. Idempotent.
   */
  shutdown(): Promise<void>;
}

/**
 * Serves the given services on one TCP port, with two stacks:
 *  - native gRPC (grpc-js clients, grpcurl, ghz, Envoy) is served by @grpc/grpc-js, several
 *    times faster than connect-node on this machine (docs/benchmarks.md);
 *  - gRPC-web and Connect (JSON or binary; browsers, curl, buf curl) by connect-node, over
 *    HTTP/1.1 or h2c.
 * A peek at a connection's first bytes sends HTTP/1.1 to connect-node and HTTP/2 to grpc-js's
 * HTTP/2 server, whose streams are then split by content type (routeHttp2Streams).
 * Both run the same instrumented handlers, plus grpc.health.v1 and grpc.reflection v1/v1alpha.
 */
export async function startServer(options: StartServerOptions): Promise<RunningServer> {
  const { config, logger } = options;
  const stopController = new AbortController();
  const serviceNames = options.services.map((s) => s.service.typeName);
  const health = new HealthStatuses(serviceNames);
  const reflected = [
    ...serviceNames,
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
  ];
  const healthRegistration = health.registration(stopController.signal);
  const files = [...options.services, healthRegistration].map((s) => s.service.file);
  const registrations = [...options.services, healthRegistration, ...reflectionRegistrations(reflected, files)];
  const tracing = options.tracing ?? idsOnlyTracing;
  const gatekeeper = options.gatekeeper;
  const pipeline = new CallPipeline({ logger, tracing, gatekeeper });
  const instrumented = registrations.map((r) => ({ service: r.service, wire: r.wire, impl: pipeline.wrapService(r) }));
  const serviceRoutes = options.httpRoutes;
  const httpRouter: HttpRouter = (method, path) => (path === "/metrics" ? metricsRoute : serviceRoutes?.(method, path));

  const grpcServer = new grpc.Server({
    "grpc.max_receive_message_length": config.maxMessageBytes,
    "grpc.max_send_message_length": maxResponseBytes,
    "grpc.enable_channelz": 0, // per-call bookkeeping nothing here reads
  });
  for (const { service, impl, wire } of instrumented) {
    addServiceToGrpcServer(grpcServer, service, impl, { wire });
  }
  // TLS, when on, is terminated before the injector: grpc-js gets the decrypted connection.
  const http2Injector = grpcServer.createConnectionInjector(grpc.ServerCredentials.createInsecure());

  const rpcPaths = new Set(instrumented.flatMap(({ service }) => service.methods.map((m) => `/${service.typeName}/${m.name}`)));
  const connectHandler = withCors(
    withBodySizes(
      connectNodeAdapter({
        routes(router) {
          for (const { service, impl } of instrumented) router.service(service, impl);
        },
        fallback: serveHttpRoutes(httpRouter, pipeline, config.httpRequestTimeoutMs),
        // An Any in a JSON answer is written as its message: any message of the services' files.
        jsonOptions: { registry: createRegistry(...files) },
        readMaxBytes: config.maxMessageBytes,
        writeMaxBytes: maxResponseBytes,
        contextValues: (request) => createContextValues().set(requestFactsKey, httpRequestFacts(request)),
      }),
      rpcPaths,
    ),
    config.corsOrigins,
  );
  routeHttp2Streams(grpcServer, connectHandler);
  // Slow clients: the headers within HTTP_HEADERS_TIMEOUT, the whole request within
  // HTTP_REQUEST_TIMEOUT (checked every second rather than Node's default 30 s).
  const http1Server = http.createServer(
    { headersTimeout: config.httpHeadersTimeoutMs, requestTimeout: config.httpRequestTimeoutMs, connectionsCheckingInterval: 1000 },
    connectHandler,
  );
  // Node checks those timeouts from a timer it starts on 'listening'; this server never listens
  // itself (connections are handed to it), so start the check the same way.
  http1Server.emit("listening");
  let nativeGrpc: NativeGrpcRoutes | undefined;
  if (config.grpcStack === "node-http2") {
    nativeGrpc = new NativeGrpcRoutes(config.maxMessageBytes);
    for (const { service, impl, wire } of instrumented) nativeGrpc.add(service, impl, wire);
  }
  const http2Sessions = new Http2Sessions(connectHandler, nativeGrpc);
  const acceptHttp2 =
    config.grpcStack === "grpc-js"
      ? (socket: net.Socket) => http2Injector.injectConnection(socket)
      : (socket: net.Socket) => http2Sessions.accept(socket);

  const http1Connections = new Http1Connections();
  http1Server.on("request", (request, response) => http1Connections.onRequest(request, response));

  const pending = new Set<net.Socket>();
  const acceptHttp1 = (socket: net.Socket) => {
    http1Connections.add(socket);
    http1Server.emit("connection", socket);
  };
  // noDelay: a unary response is one small write; Nagle would hold it for the client's ACK.
  const serverTls = loadServerTls(config.tls);
  const listener = serverTls
    ? tlsListener(serverTls, (socket) => (socket.alpnProtocol === "h2" ? acceptHttp2(socket) : acceptHttp1(socket)))
    : net.createServer({ noDelay: true, keepAlive: true }, (socket) => {
    pending.add(socket);
    socket.setTimeout(firstBytesTimeoutMs, () => socket.destroy());
    socket.on("error", () => socket.destroy());
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const compared = Math.min(head.length, http2Preface.length);
      const isHttp2 = head.subarray(0, compared).equals(http2Preface.subarray(0, compared));
      if (isHttp2 && compared < http2Preface.length) return; // wait for the whole preface
      socket.off("data", onData);
      socket.pause();
      socket.unshift(head);
      socket.setTimeout(0);
      pending.delete(socket);
      if (isHttp2) {
        acceptHttp2(socket);
      } else {
        acceptHttp1(socket);
        socket.resume(); // the HTTP parser reads the unshifted bytes through 'data'
      }
    };
    socket.on("data", onData);
  });
  await new Promise<void>((resolve, reject) => {
    listener.once("error", reject);
    listener.listen(config.port, config.host, () => resolve());
  });
  const port = (listener.address() as net.AddressInfo).port;
  const address = `${config.host.includes(":") ? `[${config.host}]` : config.host}:${port}`;
  const security = {
    tls: config.tls ? (config.tls.clientCa ? "on, client certificates required" : "on") : "off",
    auth: gatekeeper?.authenticator?.description ?? "off",
  };
  logger.info({ address, services: serviceNames, ...security }, "listening (native gRPC, gRPC-web and Connect on one port)");
  if (!isLoopback(config.host) && config.tls === undefined) logger.warn({ host: config.host }, "listening beyond this machine without TLS: set TLS_CERT_FILE and TLS_KEY_FILE");
  if (!isLoopback(config.host) && gatekeeper?.authenticator === undefined) logger.warn({ host: config.host }, "listening beyond this machine with authentication off: set AUTH_TOKENS_FILE or AUTH_JWKS");

  let stopped: Promise<void> | undefined;
  const shutdown = () => {
    stopped ??= (async () => {
      health.setAll(ServingStatus.NOT_SERVING);
      stopController.abort();
      listener.close();
      for (const socket of pending) socket.destroy();
      const graceful = Promise.all([
        new Promise<void>((resolve) => grpcServer.tryShutdown(() => resolve())),
        http1Connections.drain(),
        http2Sessions.drain(),
      ]);
      const timer = new Promise<"timeout">((resolve) => setTimeout(resolve, config.shutdownGraceMs, "timeout").unref());
      if ((await Promise.race([graceful, timer])) === "timeout") {
        logger.warn({ graceMs: config.shutdownGraceMs }, "calls still running after the grace period: cutting connections");
        grpcServer.forceShutdown();
        http1Connections.destroyAll();
        http2Sessions.destroyAll();
      }
    })();
    return stopped;
  };

  return { port, address, health, stopping: stopController.signal, shutdown };
}

/** A TLS listener: the handshake within the first-bytes timeout, h2 or HTTP/1.1 chosen by ALPN. */
function tlsListener(settings: ServerTls, accept: (socket: tls.TLSSocket) => void): tls.Server {
  const server = tls.createServer({
    cert: settings.cert,
    key: settings.key,
    ca: settings.clientCa,
    requestCert: settings.clientCa !== undefined,
    rejectUnauthorized: settings.clientCa !== undefined,
    ALPNProtocols: ["h2", "http/1.1"],
    handshakeTimeout: firstBytesTimeoutMs,
  });
  server.on("secureConnection", (socket) => {
    socket.setNoDelay(true);
    socket.on("error", () => socket.destroy());
    accept(socket);
  });
  server.on("tlsClientError", (_err, socket) => socket.destroy());
  return server;
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || host.startsWith("127.");
}

/** Request facts of a connect-node call (security/gatekeeper.ts): its declared size and peer. */
function httpRequestFacts(request: http.IncomingMessage | http2.Http2ServerRequest): RequestFacts {
  const declared = Number(request.headers["content-length"]);
  return { requestBytes: Number.isFinite(declared) ? declared : 0, peer: () => request.socket?.remoteAddress ?? "unknown" };
}

/**
 * GET /metrics answers the process's Prometheus metrics (text format), on the service's own
 * port: Prometheus scrapes each service where clients reach it, with nothing more to configure.
 */
const metricsRoute: HttpRoute = {
  name: "GET /metrics",
  role: Role.READER,
  quiet: true,
  async answer(request): Promise<HttpReply> {
    if (request.method !== "GET") throw methodNotAllowed(request.method ?? "", "/metrics", "GET");
    const { body, contentType } = await metricsText();
    return { status: 200, headers: { "content-type": contentType }, body: Buffer.from(body) };
  },
};

/**
 * Request and response body sizes of the RPCs connect-node serves (gRPC-web and Connect), for
 * mlmesh_rpc_request_bytes and mlmesh_rpc_response_bytes: the request's Content-Length (when
 * the client sent one) and the bytes written back.
 */
function withBodySizes(handler: HttpHandler, rpcPaths: ReadonlySet<string>): HttpHandler {
  return (request, response) => {
    const path = request.url ?? "";
    if (!rpcPaths.has(path)) return handler(request, response);
    const metrics = methodMetrics(path);
    const contentType = String(request.headers["content-type"] ?? "");
    const protocol = contentType.startsWith("application/grpc-web") ? "grpc-web" : "connect";
    const declared = Number(request.headers["content-length"]);
    if (Number.isFinite(declared)) metrics.requestSize(protocol, declared);
    let written = 0;
    const write = response.write.bind(response) as (...args: unknown[]) => boolean;
    const end = response.end.bind(response) as (...args: unknown[]) => unknown;
    const count = (chunk: unknown) => {
      if (typeof chunk === "string") written += Buffer.byteLength(chunk);
      else if (chunk instanceof Uint8Array) written += chunk.length;
    };
    (response as { write: unknown }).write = (chunk: unknown, ...rest: unknown[]) => {
      count(chunk);
      return write(chunk, ...rest);
    };
    (response as { end: unknown }).end = (chunk?: unknown, ...rest: unknown[]) => {
      if (typeof chunk !== "function") count(chunk);
      return end(chunk, ...rest);
    };
    response.once("finish", () => metrics.responseSize(protocol, written));
    return handler(request, response);
  };
}

/**
 * Splits the HTTP/2 streams that reach grpc-js's HTTP/2 server: native gRPC in protobuf
 * (application/grpc, application/grpc+proto) stays with grpc-js; gRPC in JSON, gRPC-web and Connect over
 * h2c (buf curl uses h2c for every protocol once it needs reflection) go to connect-node
 * through Node's compatibility request/response objects.
 * grpc-js has no public hook for this: it reaches the HTTP/2 server behind the connection
 * injector through grpc-js's private `http2Servers` map. grpc-js is pinned in package.json and
 * test/runtime.test.ts fails loudly if this stops working.
 */
function routeHttp2Streams(grpcServer: grpc.Server, connectHandler: (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void): void {
  const servers = (grpcServer as unknown as { http2Servers?: Map<http2.Http2Server, unknown> }).http2Servers;
  const [h2] = servers ? [...servers.keys()] : [];
  if (h2 === undefined || servers?.size !== 1) throw new Error("unsupported @grpc/grpc-js version: no injector HTTP/2 server");
  h2.on("session", widenWindows);
  const grpcListeners = h2.listeners("stream") as StreamListener[];
  h2.removeAllListeners("stream");
  h2.on("request", connectHandler); // Node adds its compatibility 'stream' listener for this
  const compatListeners = h2.listeners("stream") as StreamListener[];
  h2.removeAllListeners("stream");
  h2.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, ...rest: unknown[]) => {
    const native = isNativeGrpc(headers);
    if (native) {
      stream.sendTrailers = sendTidyTrailers;
      stream.respond = respondTidy;
    }
    for (const listener of native ? grpcListeners : compatListeners) listener.call(h2, stream, headers, ...rest);
  });
}

/** The message encodings both native stacks decode (grpc-js, and grpc-h2.ts). */
const nativeEncodings = new Set(nativeGrpcEncodings);

/**
 * Whether a stream is native gRPC as grpc-js and grpc-h2.ts serve it: protobuf over POST, in an
 * encoding they know. gRPC with another codec (application/grpc+json), verb or encoding goes to
 * connect-node, which serves or refuses it as the protocol says (an unknown encoding is
 * UNIMPLEMENTED, not a garbled message).
 */
function isNativeGrpc(headers: http2.IncomingHttpHeaders): boolean {
  const contentType = headers["content-type"] ?? "";
  const encoding = headers["grpc-encoding"];
  return (
    headers[":method"] === "POST" &&
    (contentType === "application/grpc" || contentType === "application/grpc+proto") &&
    (encoding === undefined || nativeEncodings.has(String(encoding)))
  );
}

/**
 * grpc-js's trailers as the gRPC spec says a server should write them: no grpc-message beside
 * grpc-status 0 (grpc-js writes "OK"), and binary (-bin) values in unpadded base64 (grpc-js
 * pads them). Clients accept both; the Connect conformance suite checks the spec's wording.
 */
function tidyTrailers(headers: http2.OutgoingHttpHeaders): http2.OutgoingHttpHeaders {
  if (String(headers["grpc-status"]) === "0") delete headers["grpc-message"];
  for (const name in headers) {
    const value = headers[name];
    if (name.endsWith("-bin") && typeof value === "string") headers[name] = value.replace(/=+$/, "");
  }
  return headers;
}

/** A native gRPC stream's sendTrailers, through tidyTrailers. */
function sendTidyTrailers(this: http2.ServerHttp2Stream, headers: http2.OutgoingHttpHeaders): void {
  Object.getPrototypeOf(this).sendTrailers.call(this, tidyTrailers(headers));
}

/** A native gRPC stream's respond: a trailers-only answer (endStream) through tidyTrailers. */
function respondTidy(this: http2.ServerHttp2Stream, headers?: http2.OutgoingHttpHeaders, options?: http2.ServerStreamResponseOptions): void {
  Object.getPrototypeOf(this).respond.call(this, options?.endStream && headers ? tidyTrailers(headers) : headers, options);
}

/** Applies streamWindowBytes and connectionWindowBytes to a new HTTP/2 session. */
function widenWindows(session: http2.ServerHttp2Session): void {
  session.settings({ initialWindowSize: streamWindowBytes });
  session.setLocalWindowSize(connectionWindowBytes);
}

type StreamListener = (this: http2.Http2Server, ...args: unknown[]) => void;

/**
 * HTTP/2 on Node's own server, with graceful draining: native gRPC served by grpc-h2.ts
 * (GRPC_STACK=node-http2) or by connect-node (GRPC_STACK=connect-node); everything else
 * (gRPC-web, Connect, plain HTTP) by connect-node.
 */
class Http2Sessions {
  private readonly server: http2.Http2Server;
  private readonly sessions = new Set<http2.ServerHttp2Session>();

  constructor(handler: (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void, nativeGrpc: NativeGrpcRoutes | undefined) {
    // Session memory (Node's default 10 MB) above the connection window: a client stream that
    // fills its windows must not be refused as "excessive memory" (grpc-js sets no limit).
    this.server = http2.createServer({ maxSessionMemory: sessionMemoryMegabytes }, handler);
    if (nativeGrpc !== undefined) {
      const server = this.server;
      const compatListeners = server.listeners("stream") as StreamListener[];
      server.removeAllListeners("stream");
      server.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, ...rest: unknown[]) => {
        if (isNativeGrpc(headers)) nativeGrpc.serve(stream, headers);
        else for (const listener of compatListeners) listener.call(server, stream, headers, ...rest);
      });
    }
    this.server.on("session", (session) => {
      widenWindows(session);
      this.sessions.add(session);
      session.once("close", () => this.sessions.delete(session));
    });
  }

  accept(socket: net.Socket): void {
    this.server.emit("connection", socket);
  }

  /** GOAWAY to every session; resolves once their streams have finished. */
  drain(): Promise<void> {
    return Promise.all([...this.sessions].map((s) => new Promise<void>((resolve) => s.close(resolve)))).then(() => {});
  }

  destroyAll(): void {
    for (const session of this.sessions) session.destroy();
  }
}

/** How long a closing HTTP/1.1 connection keeps reading what the client still sends (Http1Connections). */
const lingerMs = 2000;

/** Makes Node's close-after-answer (destroySoon) a lingering close: end the write side, drop what still comes, then destroy. */
function lingerOnClose(socket: net.Socket): void {
  socket.destroySoon = function (this: net.Socket) {
    this.end();
    const timer = setTimeout(() => this.destroy(), lingerMs).unref();
    this.once("close", () => clearTimeout(timer));
    this.once("end", () => this.destroy());
    this.resume();
  };
}

/**
 * The HTTP/1.1 connections handed to the connect-node server and their in-flight requests.
 * That server never listens itself, so it cannot count them; draining waits for in-flight
 * requests, closes each connection once it is idle, and resolves when none is left.
 */
class Http1Connections {
  private readonly inFlight = new Map<net.Socket, number>();
  private draining = false;
  private onEmpty: (() => void) | undefined;

  add(socket: net.Socket): void {
    this.inFlight.set(socket, 0);
    socket.once("close", () => {
      this.inFlight.delete(socket);
      if (this.inFlight.size === 0) this.onEmpty?.();
    });
  }

  onRequest(request: http.IncomingMessage, response: http.ServerResponse): void {
    const socket = request.socket;
    this.inFlight.set(socket, (this.inFlight.get(socket) ?? 0) + 1);
    if (this.draining) response.shouldKeepAlive = false;
    // Answered before its body was all read (a message over the limit, a bad message): Node
    // cannot parse the connection's next request until that body's rest is read, and the reader
    // has stopped, so the connection would stall until its keep-alive timeout and fail the
    // client's next request. Such an answer says Connection: close instead.
    // Node then closes the socket as soon as the answer is written; the client may still be
    // sending, and a close with unread bytes is a reset that can reach the client before the
    // answer does. So the close lingers: the write side ends, the rest is read and dropped until
    // the client closes too (at most lingerMs).
    const writeHead = response.writeHead;
    response.writeHead = function (this: http.ServerResponse, ...args: unknown[]) {
      if (!request.complete) {
        this.shouldKeepAlive = false;
        lingerOnClose(socket);
      }
      return (writeHead as (...a: unknown[]) => http.ServerResponse).apply(this, args);
    } as typeof response.writeHead;
    response.once("close", () => {
      const left = (this.inFlight.get(socket) ?? 1) - 1;
      this.inFlight.set(socket, left);
      if (this.draining && left === 0) socket.end();
    });
  }

  drain(): Promise<void> {
    this.draining = true;
    for (const [socket, count] of this.inFlight) if (count === 0) socket.end();
    if (this.inFlight.size === 0) return Promise.resolve();
    return new Promise((resolve) => (this.onEmpty = resolve));
  }

  destroyAll(): void {
    for (const socket of this.inFlight.keys()) socket.destroy();
  }
}

