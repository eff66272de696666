import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { codeName, toConnectError } from "../runtime/errors.js";
import { logRpc } from "../runtime/instrument.js";
import type { Logger } from "../runtime/observability/logger.js";
import { methodMetrics } from "../runtime/observability/metrics.js";
import type { HttpHandler } from "../runtime/server.js";
import { matchingVersions, isReady, modelMetadata, serverInfo } from "./oip-service.js";
import { infer, rawBytesOf, type InferInput, type InputData, type InferOutput } from "./open-inference.js";
import type { LoadedVersion, ServingTable } from "./serving-table.js";
import type { Duration } from "./inference-stats.js";

type Request = Parameters<HttpHandler>[0];
type Response = Parameters<HttpHandler>[1];

/** An answer: a status and a JSON body, optionally followed by binary tensor data. */
interface Reply {
  readonly status: number;
  readonly json: unknown;
  readonly binary?: readonly Uint8Array[];
}

const httpStatus: Partial<Record<Code, number>> = {
  [Code.InvalidArgument]: 400,
  [Code.NotFound]: 404,
  [Code.FailedPrecondition]: 400,
  [Code.ResourceExhausted]: 429,
  [Code.Unavailable]: 503,
  [Code.DeadlineExceeded]: 504,
  [Code.Unimplemented]: 501,
};

/**
 * The Open Inference Protocol's REST binding on the Predictor's port (HTTP/1.1, and h2):
 * health, server and model metadata, readiness, inference with JSON tensors and the binary
 * tensor extension (Inference-Header-Content-Length), statistics and the repository index.
 * Errors are `{"error": "..."}` with the protocol's status codes. Requests that are not under
 * /v2 get 404; one log line per request, like every RPC.
 */
export function createInferenceRestHandler(
  table: ServingTable,
  options: { ready: () => boolean; maxBodyBytes: number; logger: Logger },
): HttpHandler {
  return (request, response) => {
    const started = performance.now();
    // As on the gRPC paths: the caller's request id, or a new one, echoed back and logged.
    const requestId = headerValue(request.headers["x-request-id"]) || randomUUID();
    response.setHeader("x-request-id", requestId);
    const url = new URL(request.url ?? "/", "http://predictor");
    const route = `${request.method} ${url.pathname}`;
    const method = restMethod(url.pathname);
    const metrics = method === undefined ? undefined : methodMetrics(`/inference.GRPCInferenceService/${method}`);
    metrics?.started();
    void answer(table, options, request, url)
      .catch((err: unknown) => {
        if (err instanceof BodyTooLargeError) {
          return { status: 413, json: { error: err.message }, error: new ConnectError(err.message, Code.ResourceExhausted) };
        }
        const error = toConnectError(err, undefined);
        return { status: httpStatus[error.code] ?? 500, json: { error: error.rawMessage }, error } as Reply & { error: ConnectError };
      })
      .then((reply) => {
        send(response, reply);
        const error = (reply as { error?: ConnectError }).error;
        metrics?.finished("rest", error === undefined ? "OK" : codeName(error.code), (performance.now() - started) / 1000);
        logRpc(options.logger, {
          rpc: route,
          protocol: "rest",
          requestId,
          ms: performance.now() - started,
          error,
          probe: method === "ServerLive" || method === "ServerReady",
        });
      });
  };
}

function headerValue(value: string | string[] | undefined): string {
  return (Array.isArray(value) ? value[0] : value) ?? "";
}

/** The protocol's gRPC method a REST path stands for (its metrics share the method's name). */
function restMethod(path: string): string | undefined {
  const p = path.replace(/\/+$/, "");
  if (p === "/v2") return "ServerMetadata";
  if (p === "/v2/health/live") return "ServerLive";
  if (p === "/v2/health/ready") return "ServerReady";
  if (p === "/v2/repository/index") return "RepositoryIndex";
  if (p === "/v2/models/stats") return "ModelStatistics";
  const match = /^\/v2\/models\/[^/]+(?:\/versions\/[^/]+)?(?:\/(ready|infer|stats))?$/.exec(p);
  if (!match) return undefined;
  return { ready: "ModelReady", infer: "ModelInfer", stats: "ModelStatistics" }[match[1] ?? ""] ?? "ModelMetadata";
}

async function answer(
  table: ServingTable,
  options: { ready: () => boolean; maxBodyBytes: number },
  request: Request,
  url: URL,
): Promise<Reply> {
  const path = url.pathname.replace(/\/+$/, "");
  const method = request.method ?? "GET";
  const only = (allowed: string) => {
    if (method !== allowed) throw new ConnectError(`${path} answers ${allowed}, not ${method}`, Code.Unimplemented);
  };
  if (path === "/v2") {
    only("GET");
    return { status: 200, json: serverInfo };
  }
  if (path === "/v2/health/live") {
    only("GET");
    return { status: 200, json: { live: true } };
  }
  if (path === "/v2/health/ready") {
    only("GET");
    const ready = options.ready();
    return { status: ready ? 200 : 400, json: { ready } };
  }
  if (path === "/v2/models/stats") {
    only("GET");
    return { status: 200, json: { model_stats: matchingVersions(table, "", "").map(statisticsJson) } };
  }
  if (path === "/v2/repository/index") {
    only("POST");
    const body = await readBody(request, options.maxBodyBytes);
    const readyOnly = body.length > 0 && (parseJson(body.toString("utf8")) as { ready?: unknown }).ready === true;
    const { models, failures } = table.snapshot;
    const index = [...models.values()].flatMap((m) => [...m.versions.keys()].map((v) => ({ name: m.name, version: String(v), state: "READY", reason: "" })));
    if (!readyOnly) index.push(...failures.map((f) => ({ name: f.name, version: f.version === 0 ? "" : String(f.version), state: "UNAVAILABLE", reason: f.reason })));
    return { status: 200, json: index };
  }
  const match = /^\/v2\/models\/([^/]+)(?:\/versions\/([^/]+))?(?:\/(ready|infer|stats))?$/.exec(path);
  if (!match) throw new ConnectError(`no Open Inference Protocol endpoint at ${path}`, Code.NotFound);
  const name = decodeURIComponent(match[1]);
  const version = match[2] === undefined ? "" : decodeURIComponent(match[2]);
  switch (match[3]) {
    case undefined: {
      only("GET");
      return { status: 200, json: modelMetadata(table, name, version) };
    }
    case "ready": {
      only("GET");
      const ready = isReady(table, name, version);
      return { status: ready ? 200 : 400, json: { name, ready } };
    }
    case "stats": {
      only("GET");
      return { status: 200, json: { model_stats: matchingVersions(table, name, version).map(statisticsJson) } };
    }
    default: {
      only("POST");
      return inferRest(table, name, version, request, await readBody(request, options.maxBodyBytes));
    }
  }
}

/** The JSON (and binary) body of an infer request, in and out. */
async function inferRest(table: ServingTable, name: string, version: string, request: Request, body: Buffer): Promise<Reply> {
  const headerLength = request.headers["inference-header-content-length"];
  let jsonBytes = body;
  let binary: Buffer = Buffer.alloc(0);
  if (headerLength !== undefined) {
    const length = Number(headerLength);
    if (!Number.isInteger(length) || length < 0 || length > body.length) {
      throw new ConnectError(`Inference-Header-Content-Length is ${headerLength}; the body has ${body.length} bytes`, Code.InvalidArgument);
    }
    jsonBytes = body.subarray(0, length);
    binary = body.subarray(length);
  }
  const parsed = parseJson(jsonBytes.toString("utf8")) as {
    id?: unknown;
    parameters?: Record<string, unknown>;
    inputs?: unknown;
    outputs?: unknown;
  };
  if (!Array.isArray(parsed.inputs)) throw new ConnectError('the request needs "inputs": a list of tensors', Code.InvalidArgument);
  let offset = 0;
  const inputs: InferInput[] = parsed.inputs.map((raw: unknown, i: number) => {
    const input = (raw ?? {}) as { name?: unknown; datatype?: unknown; shape?: unknown; data?: unknown; parameters?: Record<string, unknown> };
    const shape = input.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d))) {
      throw new ConnectError(`inputs[${i}].shape must be a list of integers`, Code.InvalidArgument);
    }
    const binarySize = input.parameters?.binary_data_size;
    let data: InputData;
    if (binarySize !== undefined) {
      if (input.data !== undefined) throw new ConnectError(`inputs[${i}] has both "data" and binary_data_size`, Code.InvalidArgument);
      if (!Number.isInteger(binarySize) || (binarySize as number) < 0 || offset + (binarySize as number) > binary.length) {
        throw new ConnectError(`inputs[${i}].parameters.binary_data_size is ${String(binarySize)}; ${binary.length - offset} binary bytes are left`, Code.InvalidArgument);
      }
      data = { kind: "raw", bytes: binary.subarray(offset, offset + (binarySize as number)) };
      offset += binarySize as number;
    } else if (input.data === undefined) {
      data = { kind: "none" };
    } else {
      data = { kind: "fp32", values: flattenNumbers(input.data, i) };
    }
    return { name: String(input.name ?? ""), datatype: String(input.datatype ?? ""), shape: shape as number[], data };
  });
  if (offset !== binary.length) throw new ConnectError(`${binary.length - offset} binary bytes follow the inputs that use them`, Code.InvalidArgument);
  const requested = Array.isArray(parsed.outputs) ? (parsed.outputs as { name?: unknown; parameters?: Record<string, unknown> }[]) : [];
  const binaryByDefault = parsed.parameters?.binary_data_output === true;
  const { loaded, outputs } = await infer(table, { model: name, version, inputs, outputs: requested.map((o) => String(o.name ?? "")) });
  const binaryOutput = (o: InferOutput) => {
    const asked = requested.find((r) => r.name === o.name)?.parameters?.binary_data;
    return typeof asked === "boolean" ? asked : binaryByDefault;
  };
  const chunks: Uint8Array[] = [];
  const json = {
    model_name: loaded.name,
    model_version: String(loaded.version),
    ...(parsed.id !== undefined ? { id: String(parsed.id) } : {}),
    outputs: outputs.map((o) => {
      if (!binaryOutput(o)) return { name: o.name, datatype: o.datatype, shape: o.shape, data: jsonData(o) };
      const bytes = rawBytesOf(o);
      chunks.push(bytes);
      return { name: o.name, datatype: o.datatype, shape: o.shape, parameters: { binary_data_size: bytes.length } };
    }),
  };
  return { status: 200, json, binary: chunks };
}

function jsonData(o: InferOutput): unknown[] {
  if (o.fp32) return Array.from(o.fp32);
  if (o.int64) return Array.from(o.int64, Number);
  return [...(o.labels ?? [])];
}

/** A tensor's "data": numbers, flat or nested row by row. */
function flattenNumbers(data: unknown, input: number): number[] {
  const values: number[] = [];
  const walk = (value: unknown, depth: number) => {
    if (typeof value === "number") values.push(value);
    else if (Array.isArray(value) && depth < 8) for (const item of value) walk(item, depth + 1);
    else throw new ConnectError(`inputs[${input}].data must hold numbers (FP32)`, Code.InvalidArgument);
  };
  walk(data, 0);
  return values;
}

function statisticsJson(v: LoadedVersion) {
  const d = (x: Duration) => ({ count: x.count, ns: x.ns });
  const s = v.stats;
  return {
    name: v.name,
    version: String(v.version),
    last_inference: s.lastInference,
    inference_count: s.inferenceCount,
    execution_count: s.executionCount,
    inference_stats: {
      success: d(s.success),
      fail: d(s.fail),
      queue: d(s.queue),
      compute_input: d(s.computeInput),
      compute_infer: d(s.computeInfer),
      compute_output: d(s.computeOutput),
    },
    batch_stats: [...s.batches].sort(([a], [b]) => a - b).map(([size, runs]) => ({ batch_size: size, compute_infer: d(runs) })),
  };
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ConnectError(`the body is not JSON: ${(err as Error).message}`, Code.InvalidArgument);
  }
}

/** The whole request body, refused (413) beyond maxBytes without reading the rest. */
function readBody(request: Request, maxBytes: number): Promise<Buffer> {
  const declared = Number(request.headers["content-length"] ?? 0);
  if (declared > maxBytes) return Promise.reject(new BodyTooLargeError(maxBytes));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    request.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        request.removeAllListeners("data");
        request.resume();
        reject(new BodyTooLargeError(maxBytes));
        return;
      }
      chunks.push(chunk);
    });
    request.on("end", () => resolve(Buffer.concat(chunks)));
    request.on("error", reject);
  });
}

/** A request body over MAX_MESSAGE_BYTES: answered 413 (logged as RESOURCE_EXHAUSTED). */
class BodyTooLargeError extends Error {
  constructor(maxBytes: number) {
    super(`the body exceeds MAX_MESSAGE_BYTES (${maxBytes} bytes)`);
  }
}

function send(response: Response, reply: Reply): void {
  const json = Buffer.from(JSON.stringify(reply.json));
  const binary = reply.binary ?? [];
  const { status } = reply;
  if (binary.length === 0) {
    response.writeHead(status, { "content-type": "application/json", "content-length": json.length });
    response.end(json);
    return;
  }
  const body = Buffer.concat([json, ...binary]);
  response.writeHead(status, {
    "content-type": "application/octet-stream",
    "content-length": body.length,
    "inference-header-content-length": json.length,
  });
  response.end(body);
}
