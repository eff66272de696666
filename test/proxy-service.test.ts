// The Proxy's handlers with fake backends, in memory: the aggregation rules, partial failures,
// the deadline budget and request validation, through Connect's router transport with the same
// instrumentation the servers use (protovalidate, error mapping). test/proxy.test.ts covers the
// same service as real processes over the network; these pin down the rules exactly.
import { create } from "@bufbuild/protobuf";
import { Code, createClient, createRouterTransport, type Client } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ModelMetadataSchema, PredictResponseSchema } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { ProxyService } from "../gen/mlmesh/proxy/v1/proxy_pb.js";
import { HealthCheckResponse_ServingStatus as ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { serve } from "../services/runtime/serve/registration.js";
import { CallPipeline } from "../services/runtime/serve/pipeline.js";
import { createLogger } from "../services/runtime/observability/logger.js";
import { idsOnlyTracing } from "../services/runtime/observability/tracing.js";
import type { Outcome, ProxyBackend } from "../services/proxy/backends.js";
import { CircuitBreaker } from "../services/proxy/circuit-breaker.js";
import { createProxyService } from "../services/proxy/service.js";
import type { PackedRows } from "../services/model/wire/predict-wire.js";
import { failure } from "./support/clients.js";

const backendTimeoutMs = 800;

/** A backend answering P(target) per row from `probabilities`, or failing with `fails`. */
function fakeBackend(name: string, probabilities: number[], fails?: { code: Code; message: string }) {
  const deadlines: number[] = [];
  const backend: ProxyBackend = {
    backend: { name, address: `fake-${name}:1`, model: `iris_svc_${name}`, version: 0 },
    breaker: new CircuitBreaker(3, 1000),
    async predict(rows: PackedRows, deadlineMs: number): Promise<Outcome<ReturnType<typeof response>>> {
      deadlines.push(deadlineMs);
      if (fails) return { ok: false, ...fails, latencyMs: 1 };
      return { ok: true, value: response(rows.rowCount), latencyMs: 1 };
    },
    async metadata() {
      if (fails) return { ok: false, ...fails, latencyMs: 1 };
      const sample = name === "setosa" ? [] : [{ values: [5.9, 3.0, 4.2, 1.5] }]; // setosa has no sample
      return { ok: true, value: create(ModelMetadataSchema, { name: `iris_svc_${name}`, sampleInput: sample }), latencyMs: 1 };
    },
    async health() {
      return { ok: true, value: ServingStatus.SERVING, latencyMs: 1 };
    },
  };
  const response = (rowCount: number) =>
    create(PredictResponseSchema, {
      model: `iris_svc_${name}`,
      version: 1,
      labels: [name, `not_${name}`],
      predictions: Array.from({ length: rowCount }, (_, i) => ({ probabilities: [probabilities[i], 1 - probabilities[i]] })),
    });
  return { backend, deadlines };
}

function proxyClient(backends: ProxyBackend[]): Client<typeof ProxyService> {
  const impl = createProxyService(backends, { backendTimeoutMs, healthTimeoutMs: 100 });
  const pipeline = new CallPipeline({ logger: createLogger("proxy-test", "silent"), tracing: idsOnlyTracing });
  const instrumented = pipeline.wrapService(serve(ProxyService, impl));
  return createClient(ProxyService, createRouterTransport(({ service }) => service(ProxyService, instrumented)));
}

const twoRows = [{ values: [5.1, 3.5, 1.4, 0.2] }, { values: [6.3, 3.3, 6.0, 2.5] }];

describe("ProxyService handlers with fake backends", () => {
  it("labels each row with the backend of the highest P(target)", async () => {
    const client = proxyClient([
      fakeBackend("setosa", [0.9, 0.1]).backend,
      fakeBackend("versicolor", [0.2, 0.3]).backend,
      fakeBackend("virginica", [0.05, 0.8]).backend,
    ]);
    const response = await client.predictLabel({ rows: twoRows });
    expect(response.predictions.map((p) => [p.label, p.probability])).toEqual([
      ["setosa", expect.closeTo(0.9, 6)],
      ["virginica", expect.closeTo(0.8, 6)],
    ]);
    expect(response.answeredBackends).toEqual(["setosa", "versicolor", "virginica"]);
    expect(response.failedBackends).toEqual([]);
  });

  it("answers from the backends that answered and lists the failed one with its status", async () => {
    const client = proxyClient([
      fakeBackend("setosa", [0.9, 0.1]).backend,
      fakeBackend("versicolor", [], { code: Code.Unavailable, message: "backend unavailable at fake-versicolor:1" }).backend,
      fakeBackend("virginica", [0.05, 0.8]).backend,
    ]);
    const response = await client.predictLabel({ rows: twoRows });
    expect(response.predictions.map((p) => p.label)).toEqual(["setosa", "virginica"]);
    expect(response.answeredBackends).toEqual(["setosa", "virginica"]);
    expect(response.failedBackends.map((f) => [f.backend, f.status?.code, f.status?.message])).toEqual([
      ["versicolor", Code.Unavailable, "backend unavailable at fake-versicolor:1"],
    ]);
    const all = await client.predict({ rows: twoRows });
    expect(all.backends.map((b) => [b.backend, b.status?.code, b.response !== undefined])).toEqual([
      ["setosa", 0, true],
      ["versicolor", Code.Unavailable, false],
      ["virginica", 0, true],
    ]);
  });

  it("fails UNAVAILABLE naming every backend when none answered, INVALID_ARGUMENT when all refused the request", async () => {
    const down = { code: Code.Unavailable, message: "down" };
    const unavailable = await failure(proxyClient([fakeBackend("setosa", [], down).backend, fakeBackend("virginica", [], down).backend]).predictLabel({ rows: twoRows }));
    expect(unavailable.code).toBe(Code.Unavailable);
    expect(unavailable.rawMessage).toBe("no backend answered: setosa: Unavailable down; virginica: Unavailable down");

    const invalid = { code: Code.InvalidArgument, message: "rows[0] has 3 values" };
    const refused = await failure(proxyClient([fakeBackend("setosa", [], invalid).backend, fakeBackend("virginica", [], invalid).backend]).predictLabel({ rows: twoRows }));
    expect(refused.code).toBe(Code.InvalidArgument);
  });

  it("gives backends the caller's deadline less a margin, or PROXY_BACKEND_TIMEOUT without one", async () => {
    const fake = fakeBackend("setosa", [0.9, 0.1]);
    const client = proxyClient([fake.backend]);
    let before = Date.now();
    await client.predictLabel({ rows: twoRows }, { timeoutMs: 2000 });
    // 2000 ms less min(50 ms, a tenth)
    expect(fake.deadlines[0] - before).toBeGreaterThanOrEqual(1900);
    expect(fake.deadlines[0] - before).toBeLessThanOrEqual(1950 + 50);
    before = Date.now();
    await client.predictLabel({ rows: twoRows });
    expect(fake.deadlines[1] - before).toBeGreaterThanOrEqual(backendTimeoutMs - 50);
    expect(fake.deadlines[1] - before).toBeLessThanOrEqual(backendTimeoutMs + 50);
  });

  it("predicts the first sample a backend offers, and fails UNAVAILABLE when none does", async () => {
    const client = proxyClient([fakeBackend("setosa", [0.1]).backend, fakeBackend("versicolor", [0.7]).backend]);
    const response = await client.predictSample({});
    expect(response.rows.map((r) => r.values.map((v) => Number(v.toFixed(1))))).toEqual([[5.9, 3.0, 4.2, 1.5]]);
    expect(response.response?.predictions[0].label).toBe("versicolor");

    const none = await failure(proxyClient([fakeBackend("setosa", [0.1]).backend]).predictSample({}));
    expect(none.code).toBe(Code.Unavailable);
    expect(none.rawMessage).toContain("setosa: no sample input");
  });

  it("refuses requests that break the contract's rules before any backend is called", async () => {
    const fake = fakeBackend("setosa", [0.9]);
    const client = proxyClient([fake.backend]);
    const empty = await failure(client.predictLabel({ rows: [] }));
    expect(empty.code).toBe(Code.InvalidArgument);
    expect(empty.rawMessage).toContain("rows");
    const notFinite = await failure(client.predictLabel({ rows: [{ values: [Number.NaN, 1, 2, 3] }] }));
    expect(notFinite.code).toBe(Code.InvalidArgument);
    expect(notFinite.rawMessage).toContain("rows[0].values[0]");
    expect(fake.deadlines).toEqual([]);
  });
});
