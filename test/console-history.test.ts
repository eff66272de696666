// The history behind the console's charts: the tiers of services/console/metrics-history.ts
// with synthetic intervals (the rules), then the console's server keeping a real Predictor's
// history from its /metrics under load and answering GET /history.json. The same charts read
// from a real Prometheus are in test/observability.test.ts.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PredictorService } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { MetricsHistory, quantileMs, type Interval } from "../services/console/metrics-history.js";
import { parseExposition, parseSeriesKey, seriesKey } from "../services/console/scrape.js";
import { clientFor } from "./support/clients.js";
import { startService, type ServiceProcess } from "./support/service-process.js";

const les = [0.001, 0.01, 0.1, Number.POSITIVE_INFINITY];
/** A 2 s interval ending at `end` with `requests` requests, 2 % or more of them slow (10-100 ms bucket). */
const interval = (end: number, requests: number, errors = 0): Interval => ({
  start: end - 2000,
  end,
  requests,
  errors,
  buckets: [
    [les[0], 0],
    [les[1], requests - Math.ceil(requests * 0.02)],
    [les[2], Math.ceil(requests * 0.02)],
    [les[3], 0],
  ],
});

describe("the console's metrics history", () => {
  it("keeps each poll for the fine window and one point a minute before it, bounded", () => {
    const history = new MetricsHistory({ fineMs: 3_600_000, coarseMs: 86_400_000 });
    const now = Date.UTC(2026, 11, 2, 12, 0, 0);
    const start = now - 3 * 3_600_000;
    // Three hours at 2 s: 20 requests/s for the first two hours, 50/s in the last, 10 % errors then.
    for (let t = start + 2000; t <= now; t += 2000) history.add("predictor", t > now - 3_600_000 ? interval(t, 100, 10) : interval(t, 40));
    const { points, fineFromMs } = history.range("predictor", start, now);
    const fine = points.filter((p) => p.t >= fineFromMs);
    const coarse = points.filter((p) => p.t < fineFromMs);
    expect(fine).toHaveLength(1800); // one hour of 2 s polls
    expect(coarse).toHaveLength(120); // two hours of minutes
    expect(points.every((p, i) => i === 0 || p.t > points[i - 1].t)).toBe(true);
    expect(fine.at(-1)).toMatchObject({ t: now, rps: 50, errorRate: 0.1 });
    expect(coarse[10].rps).toBeCloseTo(20, 6); // a minute's rate: its requests over the time its polls covered
    expect(coarse[10].errorRate).toBe(0);
    // p99 from the minute's summed buckets, as histogram_quantile would: in the 10-100 ms bucket.
    expect(coarse[10].p99Ms).toBeGreaterThan(10);
    expect(coarse[10].p99Ms).toBeLessThanOrEqual(100);
    expect(coarse[10].p50Ms).toBeLessThanOrEqual(10);
    // Older than both windows: gone.
    history.add("predictor", interval(now + 25 * 3_600_000 + 120_000, 1));
    expect(history.range("predictor", start, now).points).toEqual([]);
  });

  it("computes quantiles from bucket counts as histogram_quantile does", () => {
    expect(quantileMs(0.5, [[0.001, 0], [0.01, 10], [0.1, 0], [Number.POSITIVE_INFINITY, 0]])).toBeCloseTo(5.5, 6);
    expect(quantileMs(0.99, [[0.001, 0], [0.01, 0], [0.1, 0], [Number.POSITIVE_INFINITY, 4]])).toBe(100);
    expect(quantileMs(0.99, [[0.001, 0], [Number.POSITIVE_INFINITY, 0]])).toBeNull();
  });
});

describe("what the console reads from a /metrics exposition", () => {
  it("counts a service's application calls, each model version's inferences and each Proxy backend's calls, with their buckets", () => {
    const text = [
      'mlmesh_rpc_requests_total{service="mlmesh.predictor.v1.PredictorService",method="Predict",protocol="grpc",code="OK"} 90',
      'mlmesh_rpc_requests_total{service="mlmesh.predictor.v1.PredictorService",method="Predict",protocol="grpc",code="Unavailable"} 10',
      'mlmesh_rpc_requests_total{service="mlmesh.predictor.v1.PredictorService",method="Predict",protocol="grpc",code="InvalidArgument"} 5',
      'mlmesh_rpc_requests_total{service="grpc.health.v1.Health",method="Check",protocol="grpc",code="OK"} 1000',
      'mlmesh_rpc_requests_total{service="http",method="GET /metrics",protocol="http",code="OK"} 1000',
      'mlmesh_rpc_duration_seconds_bucket{service="mlmesh.predictor.v1.PredictorService",method="Predict",protocol="grpc",le="0.001"} 100',
      'mlmesh_rpc_duration_seconds_bucket{service="mlmesh.predictor.v1.PredictorService",method="Predict",protocol="grpc",le="+Inf"} 105',
      'mlmesh_predictor_inference_requests_total{model="iris_svc",version="1",outcome="ok"} 40',
      'mlmesh_predictor_inference_requests_total{model="iris_svc",version="1",outcome="failed"} 2',
      'mlmesh_predictor_inference_requests_total{model="iris_svc",version="2",outcome="ok"} 7',
      'mlmesh_predictor_inference_duration_seconds_bucket{model="iris_svc",version="1",le="0.001"} 42',
      'mlmesh_predictor_inference_duration_seconds_bucket{model="iris_svc",version="1",le="+Inf"} 42',
      'mlmesh_proxy_backend_calls_total{backend="setosa",outcome="ok"} 8',
      'mlmesh_proxy_backend_calls_total{backend="setosa",outcome="circuit_open"} 2',
      'mlmesh_build_info{service="predictor",version="0.1.0",commit="abc",node="v20.20.2",tls="on",auth="off"} 1',
    ].join("\n");
    const { series, build } = parseExposition("predictor", text, 1000);
    expect(series.get("predictor")).toEqual({ at: 1000, requests: 105, errors: 10, buckets: [[0.001, 100], [Number.POSITIVE_INFINITY, 105]] });
    expect(series.get(seriesKey("predictor", { kind: "model", model: "iris_svc", version: "1" }))).toMatchObject({ requests: 42, errors: 2 });
    expect(series.get(seriesKey("predictor", { kind: "model", model: "iris_svc", version: "2" }))).toMatchObject({ requests: 7, errors: 0, buckets: [] });
    const backend = seriesKey("predictor", { kind: "backend", backend: "setosa" });
    expect(series.get(backend)).toMatchObject({ requests: 10, errors: 2 });
    expect(parseSeriesKey(backend)).toEqual({ service: "predictor", of: { kind: "backend", backend: "setosa" } });
    expect(build).toEqual({ version: "0.1.0", commit: "abc", node: "v20.20.2", tls: "on", auth: "off" });
    // A service that has answered nothing yet still has its own series.
    expect(parseExposition("batch", "", 5).series.get("batch")).toEqual({ at: 5, requests: 0, errors: 0, buckets: [] });
  });
});

describe("GET /history.json on the console", () => {
  let predictor: ServiceProcess;
  let console: ServiceProcess;
  beforeAll(async () => {
    predictor = await startService("predictor");
    console = await startService("console", { CONSOLE_METRICS_URLS: `predictor=${predictor.baseUrl}` });
  });
  afterAll(async () => {
    await console?.stop();
    await predictor?.stop();
  });

  it("keeps the Predictor's and each model version's requests/s, errors and latency from its /metrics, and answers bad queries precisely", async () => {
    const client = clientFor(PredictorService, predictor.baseUrl, "grpc");
    type Body = { source: string; pollSeconds: number; series: { label: string; points: { t: number; rps: number; errorRate: number; p99Ms: number | null }[] }[] };
    const busy = (body: Body | undefined) => body?.series[0]?.points.find((p) => p.rps > 0 && p.p99Ms !== null);
    let service: Body | undefined;
    let model: Body | undefined;
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      await Promise.all(Array.from({ length: 20 }, () => client.predict({ model: "iris_svc", rows: [{ values: [5.1, 3.5, 1.4, 0.2] }] })));
      service = (await (await fetch(`${console.baseUrl}/history.json?service=predictor&minutes=5`)).json()) as Body;
      model = (await (await fetch(`${console.baseUrl}/history.json?model=iris_svc&minutes=5`)).json()) as Body;
      if (busy(service) && busy(model)) break;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    expect([service!.source, service!.pollSeconds, service!.series.map((s) => s.label)]).toEqual(["console", 2, ["predictor"]]);
    expect(busy(service)!.errorRate).toBe(0);
    expect(busy(service)!.p99Ms).toBeGreaterThan(0);
    // The model's inferences, one line per version (the bundled iris_svc has one).
    expect(model!.series.map((s) => s.label)).toEqual(["v1"]);
    expect(busy(model)!.p99Ms).toBeGreaterThan(0);
    expect(((await (await fetch(`${console.baseUrl}/history.json?model=no_such_model`)).json()) as Body).series).toEqual([]);
    const badModel = await fetch(`${console.baseUrl}/history.json?model=${encodeURIComponent("../x")}`);
    expect([badModel.status, ((await badModel.json()) as { error: string }).error]).toEqual([400, 'model "../x" is not a model name']);

    const unknown = await fetch(`${console.baseUrl}/history.json?service=nope`);
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { error: string }).error).toBe('service "nope" has no history; the console follows predictor');
    for (const minutes of ["0", "1.5", "x", "100000"]) {
      const bad = await fetch(`${console.baseUrl}/history.json?service=predictor&minutes=${minutes}`);
      expect(bad.status, minutes).toBe(400);
      expect(((await bad.json()) as { error: string }).error, minutes).toMatch(/^minutes must be a whole number from 1 to 1500/);
    }
  });
});
