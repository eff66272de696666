// The Open Inference Protocol on a real Predictor process: tritonclient (gRPC and HTTP, from
// PyPI, scripts/install-python-clients.sh), grpcurl and curl, and a connect client for the
// raw-tensor edge cases a buffer must never be read for.
import { join } from "node:path";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GRPCInferenceService } from "../gen/inference/open_inference_pb.js";
import { PredictorService } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { failure } from "./support/clients.js";
import { repoRoot, run, startService, tools, type ServiceProcess } from "./support/service-process.js";

const python = join(repoRoot, ".tools/venv-clients/bin/python");
const setosa = [5.1, 3.5, 1.4, 0.2];
const raw = (values: number[]) => new Uint8Array(Float32Array.from(values).buffer);

let predictor: ServiceProcess;
let client: Client<typeof GRPCInferenceService>;
beforeAll(async () => {
  predictor = await startService("predictor");
  client = createClient(GRPCInferenceService, createGrpcTransport({ baseUrl: predictor.baseUrl }));
});
afterAll(async () => {
  await predictor?.stop();
});

describe("one per-call pipeline for every path", () => {
  it("gives a REST /v2 call the same log line fields, metrics and trace as the same call over gRPC", async () => {
    const traceparent = (traceId: string) => `00-${traceId}-00f067aa0ba902b7-01`;
    const grpcTrace = "4bf92f3577b34da6a3ce929d0e0e4736";
    const restTrace = "5cf92f3577b34da6a3ce929d0e0e4737";
    const metricsBefore = await (await fetch(`http://${predictor.address}/metrics`)).text();
    await client.modelInfer(
      { modelName: "iris_svc", inputs: [{ name: "input", datatype: "FP32", shape: [1n, 4n] }], rawInputContents: [raw(setosa)] },
      { headers: { "x-request-id": "pipeline-grpc", traceparent: traceparent(grpcTrace) } },
    );
    const rest = await fetch(`http://${predictor.address}/v2/models/iris_svc/infer`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-request-id": "pipeline-rest", traceparent: traceparent(restTrace) },
      body: JSON.stringify({ inputs: [{ name: "input", shape: [1, 4], datatype: "FP32", data: setosa }] }),
    });
    expect(rest.status).toBe(200);
    expect(rest.headers.get("x-request-id")).toBe("pipeline-rest");
    const line = async (requestId: string) => {
      await expect.poll(() => predictor.logs.some((l) => l.requestId === requestId)).toBe(true);
      return predictor.logs.find((l) => l.requestId === requestId)!;
    };
    const grpcLine = await line("pipeline-grpc");
    const restLine = await line("pipeline-rest");
    // The same fields, the same route name; only the protocol, the trace and the timing differ.
    expect(Object.keys(restLine).sort()).toEqual(Object.keys(grpcLine).sort());
    expect(restLine).toMatchObject({ msg: "rpc", rpc: "/inference.GRPCInferenceService/ModelInfer", protocol: "rest", code: "OK", trace_id: restTrace });
    expect(grpcLine).toMatchObject({ msg: "rpc", rpc: "/inference.GRPCInferenceService/ModelInfer", protocol: "grpc", code: "OK", trace_id: grpcTrace });
    expect(restLine.span_id).toMatch(/^[0-9a-f]{16}$/);
    expect(restLine.span_id).not.toBe("00f067aa0ba902b7"); // a child span of the caller's, as on gRPC

    const count = (text: string, protocol: string) =>
      Number(new RegExp(`^mlmesh_rpc_requests_total\\{service="inference.GRPCInferenceService",method="ModelInfer",protocol="${protocol}",code="OK"\\} (\\d+)$`, "m").exec(text)?.[1] ?? 0);
    const metricsAfter = await (await fetch(`http://${predictor.address}/metrics`)).text();
    for (const protocol of ["grpc", "rest"]) expect(count(metricsAfter, protocol) - count(metricsBefore, protocol), protocol).toBe(1);
    for (const protocol of ["grpc", "rest"]) {
      expect(metricsAfter).toMatch(new RegExp(`^mlmesh_rpc_duration_seconds_count\\{service="inference.GRPCInferenceService",method="ModelInfer",protocol="${protocol}"\\} \\d+$`, "m"));
    }
  });
});

describe("the Open Inference Protocol with tritonclient", () => {
  it("runs the README's tritonclient scripts, gRPC and HTTP", async () => {
    for (const script of ["triton_grpc_example.py", "triton_http_example.py"]) {
      const result = await run(python, [join(repoRoot, "test/python", script), predictor.address]);
      expect(result.code, `${script}: ${result.stderr}`).toBe(0);
      expect(result.stdout, script).toContain("live: True ready: True model ready: True");
      expect(result.stdout, script).toContain("labels: ['setosa', 'versicolor', 'virginica']");
      expect(result.stdout, script).toContain("model version: 1");
    }
  });

  it("answers tritonclient's metadata, readiness, typed and binary inference at 1 and 1,000 rows, statistics, index and errors", async () => {
    const result = await run(python, [join(repoRoot, "test/python/oip_client_checks.py"), predictor.address, join(repoRoot, "test/fixtures/iris.json")], {
      timeoutMs: 120_000,
    });
    expect(result.code, result.stderr).toBe(0);
    const checks = JSON.parse(result.stdout) as Record<"grpc" | "http", Record<string, unknown>>;
    for (const protocol of ["grpc", "http"] as const) {
      const c = checks[protocol] as Record<string, any>;
      expect(c, protocol).toMatchObject({ live: true, ready: true, model_ready: true, unknown_model_ready: false });
      expect(c.metadata.inputs.map((i: { name: string; datatype: string }) => [i.name, i.datatype])).toEqual([["input", "FP32"]]);
      expect(c.metadata.outputs.map((o: { name: string; datatype: string }) => [o.name, o.datatype])).toEqual([
        ["probabilities", "FP32"],
        ["label", "BYTES"],
        ["label_index", "INT64"],
        // iris_svc has an outlier model (outlier.onnx): its verdict per row.
        ["outlier_score", "FP32"],
        ["is_outlier", "BOOL"],
      ]);
      for (const kind of protocol === "http" ? ["typed", "binary"] : ["binary"]) {
        expect(c[`one_${kind}`], `${protocol} ${kind}`).toEqual({ labels: ["setosa"], sum: expect.closeTo(1, 5) });
        expect(c[`thousand_${kind}`].count).toBe(1000);
        expect(c[`thousand_${kind}`].shape).toEqual([1000, 3]);
        expect(c[`thousand_${kind}`].accuracy).toBeGreaterThanOrEqual(0.95);
      }
      expect(c.label_index).toEqual([0, 0]);
      const bad = protocol === "grpc" ? (code: string) => `StatusCode.${code}` : (code: string) => ({ INVALID_ARGUMENT: "400", NOT_FOUND: "404" })[code];
      expect(c.errors.wrong_feature_count).toEqual({
        status: bad("INVALID_ARGUMENT"),
        message: 'input "input" has shape [1, 3]; model "iris_svc" v1 takes 4 features per row: [rows, 4]',
      });
      expect(c.errors.wrong_datatype).toEqual({ status: bad("INVALID_ARGUMENT"), message: 'input "input" of model "iris_svc" v1 is FP32; the request says FP64' });
      expect(c.errors.wrong_input_name.message).toBe('model "iris_svc" v1 has one input, "input"; the request names "features"');
      expect(c.errors.unknown_model.status).toBe(bad("NOT_FOUND"));
      expect(c.errors.unknown_version).toEqual({ status: bad("NOT_FOUND"), message: 'model "iris_svc" has no version 9; loaded versions: 1' });
      expect(c.errors.unknown_output.message).toBe('model "iris_svc" has no output "logits"; its outputs: probabilities, label, label_index, outlier_score, is_outlier');
      expect(Number(c.stats.inference_count)).toBeGreaterThanOrEqual(1001);
      expect(c.index).toEqual(["diabetes_high_risk", "diabetes_regressor", "digits_image", "iris_svc", "iris_svc_setosa", "iris_svc_versicolor", "iris_svc_virginica"].map((m) => [m, "1", "READY"]));
    }
  }, 150_000);
});

describe("ModelInfer over gRPC", () => {
  const input = (shape: (number | bigint)[]) => ({ name: "input", datatype: "FP32", shape: shape.map(BigInt) });

  it("answers raw inputs with raw outputs, typed inputs with typed outputs (or raw on request), echoing the id", async () => {
    const rawReply = await client.modelInfer({ modelName: "iris_svc", id: "r-1", inputs: [input([1, 4])], rawInputContents: [raw(setosa)] });
    expect(rawReply).toMatchObject({ modelName: "iris_svc", modelVersion: "1", id: "r-1" });
    expect(rawReply.outputs.map((o) => [o.name, o.datatype, o.shape.map(Number)])).toEqual([
      ["probabilities", "FP32", [1, 3]],
      ["label", "BYTES", [1]],
      ["label_index", "INT64", [1]],
      ["outlier_score", "FP32", [1]],
      ["is_outlier", "BOOL", [1]],
    ]);
    const probabilities = new Float32Array(Uint8Array.from(rawReply.rawOutputContents[0]).buffer);
    expect(probabilities[0]).toBeGreaterThan(0.9);
    expect(Buffer.from(rawReply.rawOutputContents[1]).toString("latin1")).toBe("\x06\x00\x00\x00setosa");

    const typed = await client.modelInfer({ modelName: "iris_svc", inputs: [{ ...input([1, 4]), contents: { fp32Contents: setosa } }], outputs: [{ name: "label" }] });
    expect(typed.rawOutputContents).toEqual([]);
    expect(typed.outputs.map((o) => Buffer.from(o.contents!.bytesContents[0]).toString())).toEqual(["setosa"]);
    const asked = await client.modelInfer({
      modelName: "iris_svc",
      inputs: [{ ...input([1, 4]), contents: { fp32Contents: setosa } }],
      outputs: [{ name: "label_index", parameters: { binary_data: { parameterChoice: { case: "boolParam", value: true } } } }],
    });
    expect(new BigInt64Array(Uint8Array.from(asked.rawOutputContents[0]).buffer)).toEqual(BigInt64Array.from([0n]));
  });

  it("resolves the version: empty for the highest, a number, or an alias", async () => {
    for (const modelVersion of [undefined, "1", "production", "latest"]) {
      const reply = await client.modelInfer({ modelName: "iris_svc", modelVersion, inputs: [input([1, 4])], rawInputContents: [raw(setosa)] });
      expect(reply.modelVersion, String(modelVersion)).toBe("1");
    }
    expect((await failure(client.modelInfer({ modelName: "iris_svc", modelVersion: "canary", inputs: [input([1, 4])], rawInputContents: [raw(setosa)] }))).code).toBe(
      Code.NotFound,
    );
    expect((await failure(client.modelInfer({ modelName: "iris_svc", modelVersion: "v1!", inputs: [input([1, 4])], rawInputContents: [raw(setosa)] }))).code).toBe(
      Code.InvalidArgument,
    );
  });

  it("checks byte counts, shapes and element counts before reading any buffer", async () => {
    const cases: [string, Parameters<typeof client.modelInfer>[0], RegExp][] = [
      ["raw buffer too short", { modelName: "iris_svc", inputs: [input([2, 4])], rawInputContents: [raw(setosa)] }, /needs 32 bytes of raw FP32 \(8 elements\); the request has 16$/],
      ["raw buffer too long", { modelName: "iris_svc", inputs: [input([1, 4])], rawInputContents: [raw([...setosa, 1])] }, /needs 16 bytes .* has 20$/],
      ["negative dimension", { modelName: "iris_svc", inputs: [input([-1, 4])], rawInputContents: [raw(setosa)] }, /dimensions cannot be negative/],
      ["2 GB shape", { modelName: "iris_svc", inputs: [input([134_217_728, 4])], rawInputContents: [raw(setosa)] }, /1 to 100000 rows per request/],
      ["overflowing shape", { modelName: "iris_svc", inputs: [input([2n ** 62n, 4])], rawInputContents: [raw(setosa)] }, /1 to 100000 rows per request/],
      ["overflowing features", { modelName: "iris_svc", inputs: [input([1, 2n ** 63n - 1n])], rawInputContents: [raw(setosa)] }, /takes 4 features per row/],
      ["zero rows", { modelName: "iris_svc", inputs: [input([0, 4])], rawInputContents: [new Uint8Array()] }, /1 to 100000 rows per request/],
      ["three dimensions", { modelName: "iris_svc", inputs: [input([1, 1, 4])], rawInputContents: [raw(setosa)] }, /takes \[rows, 4\]/],
      ["raw and typed", { modelName: "iris_svc", inputs: [{ ...input([1, 4]), contents: { fp32Contents: setosa } }], rawInputContents: [raw(setosa)] }, /use one or the other/],
      ["raw count", { modelName: "iris_svc", inputs: [input([1, 4])], rawInputContents: [raw(setosa), raw(setosa)] }, /2 entries for 1 inputs/],
      ["typed count", { modelName: "iris_svc", inputs: [{ ...input([2, 4]), contents: { fp32Contents: setosa } }] }, /needs 8 FP32 elements; the request has 4/],
      ["wrong typed field", { modelName: "iris_svc", inputs: [{ ...input([1, 4]), contents: { int64Contents: [1n, 2n, 3n, 4n] } }] }, /contents are in int64_contents/],
      ["no contents", { modelName: "iris_svc", inputs: [input([1, 4])] }, /has no contents/],
      ["not a number", { modelName: "iris_svc", inputs: [input([1, 4])], rawInputContents: [raw([5.1, Number.NaN, 1.4, 0.2])] }, /row 0 feature 1 is NaN; values must be finite/],
      ["two inputs", { modelName: "iris_svc", inputs: [input([1, 4]), input([1, 4])], rawInputContents: [raw(setosa), raw(setosa)] }, /takes one input, "input"; the request has 2/],
      ["INT64 datatype", { modelName: "iris_svc", inputs: [{ ...input([1, 4]), datatype: "INT64" }], rawInputContents: [raw(setosa)] }, /is FP32; the request says INT64/],
    ];
    for (const [name, request, message] of cases) {
      const error = await failure(client.modelInfer(request));
      expect(error.code, name).toBe(Code.InvalidArgument);
      expect(error.rawMessage, name).toMatch(message);
    }
    // Still serving after all of it.
    expect((await client.serverReady({})).ready).toBe(true);
  });

  it("shares the model's cross-request batching with Predict, and counts both in the statistics", async () => {
    const before = (await client.modelStatistics({ name: "iris_svc", version: "1" })).modelStats[0];
    const predict = createClient(PredictorService, createGrpcTransport({ baseUrl: predictor.baseUrl }));
    await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        i % 2 === 0
          ? client.modelInfer({ modelName: "iris_svc", inputs: [input([1, 4])], rawInputContents: [raw(setosa)] })
          : predict.predict({ model: "iris_svc", rows: [{ values: setosa }] }),
      ),
    );
    const after = (await client.modelStatistics({ name: "iris_svc", version: "1" })).modelStats[0];
    expect(after.inferenceCount - before.inferenceCount).toBe(100n);
    expect(after.inferenceStats!.success!.count - before.inferenceStats!.success!.count).toBe(100n);
    expect(after.executionCount - before.executionCount).toBeLessThan(100n); // runs were shared
    expect(after.lastInference).toBeGreaterThan(0n);
    expect(after.batchStats.some((b) => b.batchSize > 1n)).toBe(true);
    const index = await client.repositoryIndex({});
    expect(index.models.map((m) => `${m.name}@${m.version}:${m.state}`)).toContain("iris_svc@1:READY");
    expect((await failure(client.modelStatistics({ name: "nope" }))).code).toBe(Code.NotFound);
  });

  it("answers grpcurl, and health-checks the inference service", async () => {
    const request = JSON.stringify({
      model_name: "iris_svc",
      inputs: [{ name: "input", datatype: "FP32", shape: [1, 4], contents: { fp32_contents: [6.3, 3.3, 6.0, 2.5] } }],
      outputs: [{ name: "label" }],
    });
    const infer = await run(tools.grpcurl, ["-plaintext", "-d", request, predictor.address, "inference.GRPCInferenceService/ModelInfer"]);
    expect(infer.code, infer.stderr).toBe(0);
    const reply = JSON.parse(infer.stdout) as { outputs: { contents: { bytesContents: string[] } }[] };
    expect(Buffer.from(reply.outputs[0].contents.bytesContents[0], "base64").toString()).toBe("virginica");
    const health = await run(tools.grpcurl, ["-plaintext", "-d", '{"service":"inference.GRPCInferenceService"}', predictor.address, "grpc.health.v1.Health/Check"]);
    expect(JSON.parse(health.stdout)).toEqual({ status: "SERVING" });
  });
});

describe("the REST binding (/v2) with curl", () => {
  const curl = (...args: string[]) => run("curl", ["-s", "-w", "\\n%{http_code}", ...args]);
  const parse = (stdout: string) => {
    const lines = stdout.trimEnd().split("\n");
    return { status: Number(lines.pop()), body: JSON.parse(lines.join("\n") || "null") as any };
  };

  it("answers health, metadata, inference with JSON tensors, statistics and the index", async () => {
    const base = `http://${predictor.address}`;
    expect(parse((await curl(`${base}/v2/health/live`)).stdout)).toEqual({ status: 200, body: { live: true } });
    expect(parse((await curl(`${base}/v2/health/ready`)).stdout)).toEqual({ status: 200, body: { ready: true } });
    // A request id, the caller's or a new one, comes back as on the gRPC paths.
    expect((await run("curl", ["-s", "-D", "-", "-o", "/dev/null", "-H", "x-request-id: rest-1", `${base}/v2`])).stdout).toMatch(/^x-request-id: rest-1\r$/m);
    expect((await run("curl", ["-s", "-D", "-", "-o", "/dev/null", `${base}/v2`])).stdout).toMatch(/^x-request-id: [0-9a-f-]{36}\r$/m);
    expect(parse((await curl(`${base}/v2`)).stdout).body).toMatchObject({ name: "mlmesh", extensions: ["model_repository", "statistics", "binary_tensor_data"] });
    expect(parse((await curl(`${base}/v2/models/iris_svc/versions/1`)).stdout).body).toMatchObject({ name: "iris_svc", versions: ["1"], platform: "onnxruntime_onnx" });
    expect(parse((await curl(`${base}/v2/models/iris_svc/ready`)).stdout)).toEqual({ status: 200, body: { name: "iris_svc", ready: true } });
    expect(parse((await curl(`${base}/v2/models/nope/ready`)).stdout).status).toBe(400);

    const body = JSON.stringify({ id: "curl-1", inputs: [{ name: "input", shape: [2, 4], datatype: "FP32", data: [[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5]] }], outputs: [{ name: "label" }] });
    const inferred = parse((await curl("-H", "content-type: application/json", "-d", body, `${base}/v2/models/iris_svc/infer`)).stdout);
    expect(inferred).toEqual({
      status: 200,
      body: { model_name: "iris_svc", model_version: "1", id: "curl-1", outputs: [{ name: "label", datatype: "BYTES", shape: [2], data: ["setosa", "virginica"] }] },
    });
    const stats = parse((await curl(`${base}/v2/models/iris_svc/stats`)).stdout).body as { model_stats: { name: string; inference_count: number }[] };
    expect(stats.model_stats[0].name).toBe("iris_svc");
    expect(stats.model_stats[0].inference_count).toBeGreaterThan(0);
    const index = parse((await curl("-X", "POST", "-d", '{"ready":true}', `${base}/v2/repository/index`)).stdout).body as { name: string }[];
    expect(index.map((m) => m.name)).toEqual(["diabetes_high_risk", "diabetes_regressor", "digits_image", "iris_svc", "iris_svc_setosa", "iris_svc_versicolor", "iris_svc_virginica"]);
  });

  it("answers bad requests with the protocol's status codes and {\"error\": ...}", async () => {
    const base = `http://${predictor.address}`;
    const infer = (body: string, model = "iris_svc") => curl("-d", body, `${base}/v2/models/${model}/infer`);
    const cases: [string, Promise<{ stdout: string }>, number, RegExp][] = [
      ["not JSON", infer("{"), 400, /^the body is not JSON/],
      ["no inputs", infer("{}"), 400, /needs "inputs"/],
      ["too few values", infer(JSON.stringify({ inputs: [{ name: "input", shape: [2, 4], datatype: "FP32", data: setosa }] })), 400, /needs 8 FP32 elements; the request has 4/],
      ["strings", infer(JSON.stringify({ inputs: [{ name: "input", shape: [1, 4], datatype: "FP32", data: ["a", "b", "c", "d"] }] })), 400, /^input "input" element 0 is "a"; FP32 elements are numbers$/],
      ["unknown model", infer(JSON.stringify({ inputs: [] }), "nope"), 404, /model "nope" not found/],
      ["unknown endpoint", curl(`${base}/v2/models/iris_svc/explain`), 404, /no Open Inference Protocol endpoint at \/v2\/models\/iris_svc\/explain/],
      ["wrong method", curl(`${base}/v2/models/iris_svc/infer`), 501, /answers POST, not GET/],
      ["oversized body", run("curl", ["-s", "-w", "\\n%{http_code}", "--data-binary", `@${join(repoRoot, "models/iris_svc/1/model.onnx")}`, "-H", "content-length: 99999999", `${base}/v2/models/iris_svc/infer`]), 413, /MAX_MESSAGE_BYTES/],
    ];
    for (const [name, call, status, message] of cases) {
      const reply = parse((await call).stdout);
      expect(reply.status, name).toBe(status);
      expect(reply.body.error, name).toMatch(message);
    }
  });
});
