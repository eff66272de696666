import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { GRPCInferenceService } from "../../gen/inference/open_inference_pb.js";
import { PayloadTooLargeError, type HttpReply, type HttpRequest, type HttpRoute, type HttpRouter } from "../runtime/serve/http-routes.js";
import type { CallContext } from "../runtime/serve/pipeline.js";
import { methodPolicy } from "../runtime/security/policy.js";
import { matchingVersions, isReady, modelMetadata, serverInfo } from "./oip-service.js";
import { infer, jsonValuesOf, rawBytesOf, type InferInput, type InputData, type InferOutput } from "./open-inference.js";
import type { Inference } from "./inference.js";
import type { LoadedVersion } from "./serving-table.js";
import type { Duration } from "./inference-stats.js";

/** A JSON answer, optionally followed by binary tensor data (Inference-Header-Content-Length). */
interface Reply {
  readonly status: number;
  readonly json: unknown;
  readonly binary?: readonly Uint8Array[];
}

/** Options of the REST binding. */
export interface InferenceRestOptions {
  /** Whether every model the Predictor should serve is loaded (/v2/health/ready). */
  readonly ready: () => boolean;
  readonly maxBodyBytes: number;
}

/**
 * The Open Inference Protocol's REST binding on the Predictor's port (HTTP/1.1, and h2):
 * health, server and model metadata, readiness, inference with JSON tensors and the binary
 * tensor extension (Inference-Header-Content-Length), statistics and the repository index.
 * Each path is a route of the per-call pipeline (runtime/serve/http-routes.ts) named after the
 * gRPC method it stands for, under that method's policy, so a REST call is logged, measured,
 * traced, authenticated and limited exactly like the same call over gRPC. Errors are
 * `{"error": "..."}` with the protocol's status codes; requests not under /v2 are not routed here.
 */
export function createInferenceRestRoutes(inference: Inference, options: InferenceRestOptions): HttpRouter {
  const { table } = inference;
  const route = (method: DescMethod, answer: (request: HttpRequest, path: string, ctx: CallContext) => Reply | Promise<Reply>, quiet = false): HttpRoute => {
    const policy = methodPolicy(method);
    return {
      name: `/${GRPCInferenceService.typeName}/${method.name}`,
      role: policy.role,
      limited: policy.limited,
      quiet,
      answer: async (request, url, ctx) => replyOf(await answer(request, url.pathname.replace(/\/+$/, ""), ctx)),
    };
  };
  const m = GRPCInferenceService.method;
  const routes = {
    serverMetadata: route(m.serverMetadata, (request) => {
      only(request, "GET", "/v2");
      return { status: 200, json: serverInfo };
    }),
    serverLive: route(
      m.serverLive,
      (request, path) => {
        only(request, "GET", path);
        return { status: 200, json: { live: true } };
      },
      true,
    ),
    serverReady: route(
      m.serverReady,
      (request, path) => {
        only(request, "GET", path);
        const ready = options.ready();
        return { status: ready ? 200 : 400, json: { ready } };
      },
      true,
    ),
    repositoryIndex: route(m.repositoryIndex, async (request, path) => {
      only(request, "POST", path);
      const body = await readBody(request, options.maxBodyBytes);
      const readyOnly = body.length > 0 && (parseJson(body.toString("utf8")) as { ready?: unknown }).ready === true;
      const { models, failures } = table.snapshot;
      const index = [...models.values()].flatMap((m) => [...m.versions.keys()].map((v) => ({ name: m.name, version: String(v), state: "READY", reason: "" })));
      if (!readyOnly) index.push(...failures.map((f) => ({ name: f.name, version: f.version === 0 ? "" : String(f.version), state: "UNAVAILABLE", reason: f.reason })));
      return { status: 200, json: index };
    }),
    modelStatistics: route(m.modelStatistics, (request, path) => {
      only(request, "GET", path);
      const { name, version } = path === "/v2/models/stats" ? { name: "", version: "" } : modelOf(path);
      return { status: 200, json: { model_stats: matchingVersions(table, name, version).map(statisticsJson) } };
    }),
    modelMetadata: route(m.modelMetadata, (request, path) => {
      only(request, "GET", path);
      const { name, version } = modelOf(path);
      return { status: 200, json: modelMetadata(table, name, version) };
    }),
    modelReady: route(m.modelReady, (request, path) => {
      only(request, "GET", path);
      const { name, version } = modelOf(path);
      const ready = isReady(table, name, version);
      return { status: ready ? 200 : 400, json: { name, ready } };
    }),
    modelInfer: route(m.modelInfer, async (request, path, ctx) => {
      only(request, "POST", path);
      const { name, version } = modelOf(path);
      return inferRest(inference, name, version, request, await readBody(request, options.maxBodyBytes), ctx);
    }),
  };
  // A path under /v2 that is none of the protocol's: 404 with the protocol's JSON error.
  const unknown: HttpRoute = {
    name: "REST /v2 unknown path",
    role: methodPolicy(m.serverLive).role,
    answer: (_request, url) => {
      throw new ConnectError(`no Open Inference Protocol endpoint at ${url.pathname.replace(/\/+$/, "")}`, Code.NotFound);
    },
  };
  return (_method, rawPath) => {
    if (rawPath !== "/v2" && !rawPath.startsWith("/v2/")) return undefined;
    const path = rawPath.replace(/\/+$/, "");
    if (path === "/v2") return routes.serverMetadata;
    if (path === "/v2/health/live") return routes.serverLive;
    if (path === "/v2/health/ready") return routes.serverReady;
    if (path === "/v2/repository/index") return routes.repositoryIndex;
    if (path === "/v2/models/stats") return routes.modelStatistics;
    const match = modelPath.exec(path);
    if (!match) return unknown;
    switch (match[3]) {
      case undefined:
        return routes.modelMetadata;
      case "ready":
        return routes.modelReady;
      case "stats":
        return routes.modelStatistics;
      default:
        return routes.modelInfer;
    }
  };
}

const modelPath = /^\/v2\/models\/([^/]+)(?:\/versions\/([^/]+))?(?:\/(ready|infer|stats))?$/;

/** The model name and version string of a /v2/models/... path (matched by the router). */
function modelOf(path: string): { name: string; version: string } {
  const match = modelPath.exec(path)!;
  return { name: decodeURIComponent(match[1]), version: match[2] === undefined ? "" : decodeURIComponent(match[2]) };
}

function only(request: HttpRequest, allowed: string, path: string): void {
  const method = request.method ?? "GET";
  if (method !== allowed) throw new ConnectError(`${path} answers ${allowed}, not ${method}`, Code.Unimplemented);
}

/** The JSON (and binary) body of an infer request, in and out. */
async function inferRest(inference: Inference, name: string, version: string, request: HttpRequest, body: Buffer, ctx: CallContext): Promise<Reply> {
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
      data = { kind: "json", values: flattenData(input.data, i) };
    }
    return { name: String(input.name ?? ""), datatype: String(input.datatype ?? ""), shape: shape as number[], data };
  });
  if (offset !== binary.length) throw new ConnectError(`${binary.length - offset} binary bytes follow the inputs that use them`, Code.InvalidArgument);
  const requested = Array.isArray(parsed.outputs) ? (parsed.outputs as { name?: unknown; parameters?: Record<string, unknown> }[]) : [];
  const binaryByDefault = parsed.parameters?.binary_data_output === true;
  const parameters = parsed.parameters !== null && typeof parsed.parameters === "object" ? parsed.parameters : {};
  const parameter = (key: string) => {
    const value = Object.hasOwn(parameters, key) ? parameters[key] : undefined;
    return typeof value === "string" || typeof value === "number" || typeof value === "boolean" ? String(value) : undefined;
  };
  const { loaded, outputs } = await infer(inference, name, version, { inputs, outputs: requested.map((o) => String(o.name ?? "")), parameters: parameter }, ctx);
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
      if (!binaryOutput(o)) return { name: o.name, datatype: o.datatype, shape: o.shape, data: jsonValuesOf(o) };
      const bytes = rawBytesOf(o);
      chunks.push(bytes);
      return { name: o.name, datatype: o.datatype, shape: o.shape, parameters: { binary_data_size: bytes.length } };
    }),
  };
  return { status: 200, json, binary: chunks };
}

/** A tensor's "data": numbers, booleans or strings, flat or nested row by row (at most 8 deep). */
function flattenData(data: unknown, input: number): unknown[] {
  const values: unknown[] = [];
  const walk = (value: unknown, depth: number) => {
    if (typeof value === "number" || typeof value === "boolean" || typeof value === "string") values.push(value);
    else if (Array.isArray(value) && depth < 8) for (const item of value) walk(item, depth + 1);
    else throw new ConnectError(`inputs[${input}].data must hold numbers, booleans or strings (lists nested at most 8 deep)`, Code.InvalidArgument);
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
function readBody(request: HttpRequest, maxBytes: number): Promise<Buffer> {
  const declared = Number(request.headers["content-length"] ?? 0);
  if (declared > maxBytes) return Promise.reject(new PayloadTooLargeError(maxBytes));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    request.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        request.removeAllListeners("data");
        request.resume();
        reject(new PayloadTooLargeError(maxBytes));
        return;
      }
      chunks.push(chunk);
    });
    request.on("end", () => resolve(Buffer.concat(chunks)));
    request.on("error", reject);
  });
}

/** The reply as the pipeline sends it: JSON, or JSON followed by the binary tensor data. */
function replyOf(reply: Reply): HttpReply {
  const json = Buffer.from(JSON.stringify(reply.json));
  const binary = reply.binary ?? [];
  if (binary.length === 0) return { status: reply.status, headers: { "content-type": "application/json" }, body: json };
  return {
    status: reply.status,
    headers: { "content-type": "application/octet-stream", "inference-header-content-length": json.length },
    body: [json, ...binary],
  };
}
