import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { EchoStatus, PayloadSchema, ResponseParameters } from "../../gen/grpc/testing/messages_pb.js";
import type { TestService } from "../../gen/grpc/testing/test_pb.js";
import type { PartialServiceImpl } from "../../services/runtime/serve/registration.js";

/*
 * grpc.testing.TestService as gRPC's interop test cases expect a server to answer it
 * (grpc/doc/interop-test-descriptions.md): payloads of the asked sizes, the asked status,
 * delays between streamed answers, and two metadata keys echoed back. UnimplementedCall is left
 * out on purpose: the serving stack must answer it UNIMPLEMENTED by itself.
 */

/** Echoed as a response header. */
const echoInitialKey = "x-grpc-test-echo-initial";
/** Echoed as a trailer (binary: the stack must carry -bin values both ways). */
const echoTrailingKey = "x-grpc-test-echo-trailing-bin";

export function createInteropService(): PartialServiceImpl<typeof TestService> {
  return {
    emptyCall(_request, ctx) {
      echoMetadata(ctx);
      return {};
    },

    unaryCall(request, ctx) {
      echoMetadata(ctx);
      failIfAsked(request.responseStatus);
      return { payload: payloadOf(request.responseSize) };
    },

    cacheableUnaryCall(request, ctx) {
      echoMetadata(ctx);
      return { payload: payloadOf(request.responseSize) };
    },

    async *streamingOutputCall(request, ctx) {
      echoMetadata(ctx);
      for (const parameters of request.responseParameters) yield await answerAfter(parameters, ctx);
      failIfAsked(request.responseStatus);
    },

    async streamingInputCall(requests, ctx) {
      echoMetadata(ctx);
      let aggregatedPayloadSize = 0;
      for await (const request of requests) aggregatedPayloadSize += request.payload?.body.length ?? 0;
      return { aggregatedPayloadSize };
    },

    async *fullDuplexCall(requests, ctx) {
      echoMetadata(ctx);
      for await (const request of requests) {
        failIfAsked(request.responseStatus);
        for (const parameters of request.responseParameters) yield await answerAfter(parameters, ctx);
      }
    },

    async *halfDuplexCall(requests, ctx) {
      echoMetadata(ctx);
      const parameters: ResponseParameters[] = [];
      for await (const request of requests) parameters.push(...request.responseParameters);
      for (const each of parameters) yield await answerAfter(each, ctx);
    },
  };
}

function echoMetadata(ctx: HandlerContext): void {
  const initial = ctx.requestHeader.get(echoInitialKey);
  if (initial !== null) ctx.responseHeader.set(echoInitialKey, initial);
  const trailing = ctx.requestHeader.get(echoTrailingKey);
  if (trailing !== null) ctx.responseTrailer.set(echoTrailingKey, trailing);
}

function failIfAsked(status: EchoStatus | undefined): void {
  if (status !== undefined && status.code !== 0) throw new ConnectError(status.message, status.code as Code);
}

async function answerAfter(parameters: ResponseParameters, ctx: HandlerContext) {
  if (parameters.intervalUs > 0) await sleep(parameters.intervalUs / 1000, undefined, { signal: ctx.signal });
  return { payload: payloadOf(parameters.size) };
}

function payloadOf(size: number): MessageInitShape<typeof PayloadSchema> {
  return { body: new Uint8Array(size) };
}
