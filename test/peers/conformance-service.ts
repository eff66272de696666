import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { anyPack, type Any } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import {
  BidiStreamRequestSchema,
  ClientStreamRequestSchema,
  ConformancePayload_RequestInfoSchema,
  ConformanceService,
  HeaderSchema,
  IdempotentUnaryRequestSchema,
  ServerStreamRequestSchema,
  UnaryRequestSchema,
  type ConformancePayload_RequestInfo,
  type Error as ConformanceError,
  type Header,
  type StreamResponseDefinition,
  type UnaryResponseDefinition,
} from "../../gen/connectrpc/conformance/v1/service_pb.js";
import type { PartialServiceImpl } from "../../services/runtime/serve/registration.js";

/*
 * connectrpc.conformance.v1.ConformanceService as the Connect conformance suite's reference
 * client expects a server under test to answer it (the suite's docs/testing_servers.md): each
 * request says which headers, trailers, messages, delays and error to answer with, and the
 * server echoes what it saw (request headers, timeout, every request message). Unimplemented
 * is left out on purpose: the serving stack must answer it UNIMPLEMENTED by itself.
 */
export function createConformanceService(): PartialServiceImpl<typeof ConformanceService> {
  return {
    async unary(request, ctx) {
      return { payload: await answerOnce(request.responseDefinition, [anyPack(UnaryRequestSchema, request)], ctx) };
    },

    async idempotentUnary(request, ctx) {
      return { payload: await answerOnce(request.responseDefinition, [anyPack(IdempotentUnaryRequestSchema, request)], ctx) };
    },

    async clientStream(requests, ctx) {
      let definition: UnaryResponseDefinition | undefined;
      const received: Any[] = [];
      for await (const request of requests) {
        if (received.length === 0) definition = request.responseDefinition;
        received.push(anyPack(ClientStreamRequestSchema, request));
      }
      return { payload: await answerOnce(definition, received, ctx) };
    },

    async *serverStream(request, ctx) {
      const definition = request.responseDefinition;
      yield* answerStream(definition, [anyPack(ServerStreamRequestSchema, request)], ctx);
    },

    async *bidiStream(requests, ctx) {
      const iterator = requests[Symbol.asyncIterator]();
      const first = await iterator.next();
      if (first.done) return;
      const definition = first.value.responseDefinition;
      sendHeaders(definition, ctx);
      const data = definition?.responseData ?? [];
      if (!first.value.fullDuplex) {
        // Half duplex: read everything, then answer with the whole request stream echoed.
        const received = [anyPack(BidiStreamRequestSchema, first.value)];
        for (let next = await iterator.next(); !next.done; next = await iterator.next()) received.push(anyPack(BidiStreamRequestSchema, next.value));
        yield* answerStream(definition, received, ctx, true);
        return;
      }
      // Full duplex: one answer per request, each echoing the requests since the last answer.
      let sent = 0;
      let pending: Any[] = [anyPack(BidiStreamRequestSchema, first.value)];
      for (;;) {
        if (sent >= data.length) {
          throwDefinedError(definition, pending, ctx);
          return;
        }
        await delay(definition?.responseDelayMs, ctx);
        yield { payload: { data: data[sent], requestInfo: sent === 0 ? requestInfo(pending, ctx) : { requests: pending } } };
        sent += 1;
        pending = [];
        const next = await iterator.next();
        if (next.done) break;
        pending.push(anyPack(BidiStreamRequestSchema, next.value));
      }
      throwDefinedError(definition, [], ctx);
    },
  };
}

/** A unary or client-streaming answer: headers and trailers, then the payload or the error. */
async function answerOnce(definition: UnaryResponseDefinition | undefined, requests: Any[], ctx: HandlerContext) {
  const info = requestInfo(requests, ctx);
  if (definition !== undefined) {
    for (const header of definition.responseHeaders) appendAll(ctx.responseHeader, header);
    for (const trailer of definition.responseTrailers) appendAll(ctx.responseTrailer, trailer);
  }
  await delay(definition?.responseDelayMs, ctx);
  if (definition?.response.case === "error") throw connectError(definition.response.value, info);
  return { data: definition?.response.case === "responseData" ? definition.response.value : undefined, requestInfo: info };
}

/** A streamed answer: headers, each message after its delay (the first echoing the requests), then the trailers and the error, if any. */
async function* answerStream(definition: StreamResponseDefinition | undefined, requests: Any[], ctx: HandlerContext, headersSent = false) {
  if (!headersSent) sendHeaders(definition, ctx);
  const data = definition?.responseData ?? [];
  const info = requestInfo(requests, ctx);
  for (const [index, bytes] of data.entries()) {
    await delay(definition?.responseDelayMs, ctx);
    yield { payload: { data: bytes, requestInfo: index === 0 ? info : undefined } };
  }
  throwDefinedError(definition, data.length === 0 ? requests : [], ctx);
}

/** Sets a stream's response headers and trailers as the definition asks. */
function sendHeaders(definition: StreamResponseDefinition | undefined, ctx: HandlerContext): void {
  if (definition === undefined) return;
  for (const header of definition.responseHeaders) appendAll(ctx.responseHeader, header);
  for (const trailer of definition.responseTrailers) appendAll(ctx.responseTrailer, trailer);
}

/**
 * Throws the definition's error, if it has one. An error before any message (a trailers-only
 * answer) carries the request info in its details, since no payload could.
 */
function throwDefinedError(definition: StreamResponseDefinition | undefined, unansweredRequests: Any[], ctx: HandlerContext): void {
  if (definition?.error === undefined) return;
  throw connectError(definition.error, unansweredRequests.length > 0 ? requestInfo(unansweredRequests, ctx) : undefined);
}

function connectError(defined: ConformanceError, info: ConformancePayload_RequestInfo | undefined): ConnectError {
  const error = new ConnectError(defined.message ?? "", defined.code as number as Code, undefined, info === undefined ? [] : [{ desc: ConformancePayload_RequestInfoSchema, value: info }]);
  // The asked-for details, passed on as they came (type name and bytes).
  for (const any of defined.details) error.details.push({ type: any.typeUrl.slice(any.typeUrl.lastIndexOf("/") + 1), value: any.value, debug: undefined });
  return error;
}

/** What the server saw of the call: its headers, timeout and request messages. */
function requestInfo(requests: Any[], ctx: HandlerContext): ConformancePayload_RequestInfo {
  const headers = new Map<string, string[]>();
  ctx.requestHeader.forEach((value, name) => headers.set(name, [...(headers.get(name) ?? []), value]));
  const requestHeaders = [...headers].map(([name, value]): Header => create(HeaderSchema, { name, value }));
  const timeoutMs = ctx.timeoutMs();
  return create(ConformancePayload_RequestInfoSchema, {
    requestHeaders,
    timeoutMs: timeoutMs === undefined ? undefined : BigInt(timeoutMs),
    requests,
    connectGetInfo: ctx.requestMethod === "GET" ? { queryParams: queryParams(ctx.url) } : undefined,
  });
}

function queryParams(url: string) {
  const params = new Map<string, string[]>();
  for (const [name, value] of new URL(url, "http://localhost").searchParams) params.set(name, [...(params.get(name) ?? []), value]);
  return [...params].map(([name, value]) => ({ name, value }));
}

function appendAll(headers: Headers, header: Header): void {
  for (const value of header.value) headers.append(header.name, value);
}

async function delay(ms: number | undefined, ctx: HandlerContext): Promise<void> {
  if (ms) await sleep(ms, undefined, { signal: ctx.signal });
}
