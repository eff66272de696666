// Observability with the real tools: every service's GET /metrics checked by promtool and
// scraped by a real Prometheus (both built from their Go module by scripts/install-prometheus.sh),
// the Grafana dashboard's and the alerts' queries checked against what the services export,
// and traces exported over OTLP to a receiver started here.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PredictorService } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { ProxyService } from "../gen/mlmesh/proxy/v1/proxy_pb.js";
import { bootstrapRegistry } from "../services/cli/bootstrap.js";
import { registryClient } from "../services/cli/model-push.js";
import { checkHealth, ServingStatus } from "../services/runtime/client/health-client.js";
import { clientFor } from "./support/clients.js";
import { freshDatabase, type TestDatabase } from "./support/databases.js";
import { repoRoot, run, startService, type ServiceProcess } from "./support/service-process.js";

const prometheusBin = join(repoRoot, ".tools/bin/prometheus");
const promtool = join(repoRoot, ".tools/bin/promtool");
const row = { values: [5.1, 3.5, 1.4, 0.2] };

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

describe("metrics", () => {
  let database: TestDatabase;
  let scratch: string;
  const services: Record<"registry" | "predictor" | "batch" | "proxy" | "monitor" | "console", ServiceProcess> = {} as never;
  let prometheus: ChildProcess | undefined;
  let prometheusUrl: string;

  beforeAll(async () => {
    database = await freshDatabase("sqlite");
    scratch = await mkdtemp(join(tmpdir(), "mlmesh-observability-"));
    services.registry = await startService("registry", { DATABASE_URL: database.url, ARTIFACT_DIR: join(scratch, "artifacts") });
    await bootstrapRegistry(registryClient(services.registry.address, "test"), join(repoRoot, "models"), "iris", new AbortController().signal);
    services.monitor = await startService("monitor", { MONITOR_DATABASE_URL: `file:${join(scratch, "monitor.db")}`, REGISTRY_ADDRESS: services.registry.address });
    services.predictor = await startService("predictor", { REGISTRY_ADDRESS: services.registry.address, MONITOR_ADDRESS: services.monitor.address });
    await until("the Predictor to load the registry's models", async () =>
      (await checkHealth(services.predictor.address, "mlmesh.predictor.v1.PredictorService", 1000)) === ServingStatus.SERVING ? true : undefined,
    );
    services.proxy = await startService("proxy", { PREDICTOR_ADDRESS: services.predictor.address });
    services.batch = await startService("batch", { BATCH_DATABASE_URL: `file:${join(scratch, "batch.db")}`, PREDICTOR_ADDRESS: services.predictor.address, BATCH_RUN_JOB_IN_SERVICE: "false" });
    services.console = await startService("console");
  });
  afterAll(async () => {
    prometheus?.kill("SIGTERM");
    await Promise.all(Object.values(services).map((s) => s?.stop()));
    await database?.drop();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  const scrape = async (service: ServiceProcess) => {
    const response = await fetch(`${service.baseUrl}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    return response.text();
  };

  it("serves GET /metrics on every service's port, shows Predict's histogram after one call, and passes promtool check metrics", async () => {
    await createClient(PredictorService, createGrpcTransport({ baseUrl: services.predictor.baseUrl })).predict({ model: "iris_svc", rows: [row] });
    const predictor = await scrape(services.predictor);
    expect(predictor).toMatch(/^mlmesh_rpc_duration_seconds_bucket\{le="0\.0001",service="mlmesh\.predictor\.v1\.PredictorService",method="Predict",protocol="grpc"\} \d+$/m);
    expect(predictor).toMatch(/^mlmesh_rpc_requests_total\{service="mlmesh\.predictor\.v1\.PredictorService",method="Predict",protocol="grpc",code="OK"\} 1$/m);
    expect(predictor).toMatch(/^mlmesh_predictor_rows_total\{model="iris_svc",version="1"\} 1$/m);
    expect(predictor).toMatch(/^mlmesh_predictor_loaded_versions\{model="iris_svc"\} 1$/m);
    expect(predictor).toMatch(/^process_cpu_seconds_total \d/m);
    expect(predictor).toMatch(/^nodejs_eventloop_lag_seconds \d/m);
    for (const [name, service] of Object.entries(services)) {
      const text = await scrape(service);
      const checked = await runWithInput(promtool, ["check", "metrics"], text);
      expect(checked.code, `${name}: ${checked.stdout}${checked.stderr}`).toBe(0);
      expect(text, name).not.toMatch(/requestId|request_id/); // no unbounded labels
    }
  });

  it("is scraped by a real Prometheus: every target up, request counts as sent, p99 computed for Predict", async () => {
    const port = 19090 + Math.floor(Math.random() * 500);
    prometheusUrl = `http://127.0.0.1:${port}`;
    const config = [
      "global: { scrape_interval: 1s, evaluation_interval: 1s }",
      "scrape_configs:",
      ...Object.entries(services).map(([name, s]) => `  - { job_name: ${name}, static_configs: [{ targets: ["${s.address}"] }] }`),
    ].join("\n");
    await writeFile(join(scratch, "prometheus.yml"), config);
    prometheus = spawn(prometheusBin, [`--config.file=${join(scratch, "prometheus.yml")}`, `--storage.tsdb.path=${join(scratch, "tsdb")}`, `--web.listen-address=127.0.0.1:${port}`], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    const query = async (promql: string) => {
      const body = (await (await fetch(`${prometheusUrl}/api/v1/query?query=${encodeURIComponent(promql)}`)).json()) as {
        status: string;
        data: { result: { metric: Record<string, string>; value: [number, string] }[] };
      };
      if (body.status !== "success") throw new Error(`${promql}: ${JSON.stringify(body)}`);
      return body.data.result;
    };
    await until("Prometheus to start", async () => ((await fetch(`${prometheusUrl}/-/ready`)).ok ? true : undefined));
    await until("every target up", async () => {
      const up = await query("up");
      return up.length === 6 && up.every((r) => r.value[1] === "1") ? up : undefined;
    });
    const predictCount = 'sum(mlmesh_rpc_requests_total{service="mlmesh.predictor.v1.PredictorService",method="Predict"})';
    const modelsCount = 'sum(mlmesh_rpc_requests_total{service="mlmesh.predictor.v1.PredictorService",method="PredictModels"}) or vector(0)';
    const labelCount = 'sum(mlmesh_rpc_requests_total{service="mlmesh.proxy.v1.ProxyService",method="PredictLabel"}) or vector(0)';
    const before = Number((await query(predictCount))[0].value[1]);
    const modelsBefore = Number((await query(modelsCount))[0].value[1]);

    const predictor = createClient(PredictorService, createGrpcTransport({ baseUrl: services.predictor.baseUrl }));
    const proxy = createClient(ProxyService, createGrpcTransport({ baseUrl: services.proxy.baseUrl }));
    for (let i = 0; i < 10; i++) await Promise.all(Array.from({ length: 20 }, () => predictor.predict({ model: "iris_svc", rows: [row] })));
    for (let i = 0; i < 20; i++) await proxy.predictLabel({ rows: [row] });

    // 200 direct Predict calls; each PredictLabel asks the three one-vs-rest models, which one
    // Predictor serves, in one PredictModels call: 20 of them.
    // Each target is scraped on its own schedule: wait until every count is in.
    const counts = async () => [predictCount, modelsCount, labelCount].map(async (q) => Number((await query(q))[0].value[1]));
    await until("Prometheus to see the calls", async () => {
      const [predicts, models, labels] = await Promise.all(await counts());
      return predicts === before + 200 && models === modelsBefore + 20 && labels === 20 ? true : undefined;
    });
    expect(Number((await query(predictCount))[0].value[1])).toBe(before + 200);
    expect(Number((await query(modelsCount))[0].value[1])).toBe(modelsBefore + 20);
    expect(Number((await query(labelCount))[0].value[1])).toBe(20);
    const p99 = await until("a p99", async () => {
      const [result] = await query('histogram_quantile(0.99, sum by (le) (rate(mlmesh_rpc_duration_seconds_bucket{method="Predict"}[1m])))');
      const value = Number(result?.value[1]);
      return Number.isFinite(value) && value > 0 ? value : undefined;
    });
    expect(p99).toBeLessThan(10);
  }, 90_000);

  it("the console's history charts read the same Prometheus when PROMETHEUS_URL is set", async () => {
    const console = await startService("console", { PROMETHEUS_URL: prometheusUrl, CONSOLE_METRICS_URLS: `predictor=${services.predictor.baseUrl}` });
    try {
      const predictor = clientFor(PredictorService, services.predictor.baseUrl, "grpc");
      const history = await until("Prometheus to have a rate of the Predictor's calls", async () => {
        await predictor.predict({ model: "iris_svc", rows: [{ values: [5.1, 3.5, 1.4, 0.2] }] });
        const read = async (query: string) =>
          (await (await fetch(`${console.baseUrl}/history.json?${query}&minutes=10`)).json()) as {
            source: string;
            stepSeconds: number;
            series: { label: string; points: { t: number; rps: number; p99Ms: number | null }[] }[];
          };
        const [service, model] = await Promise.all([read("service=predictor"), read("model=iris_svc")]);
        const busy = (body: typeof service) => body.series[0]?.points.some((p) => p.rps > 0 && p.p99Ms !== null);
        return busy(service) && busy(model) ? { service, model } : undefined;
      });
      expect(history.service.source).toBe("prometheus");
      expect(history.service.stepSeconds).toBeGreaterThanOrEqual(5);
      const points = history.service.series[0].points;
      expect(points.every((p, i) => i === 0 || p.t > points[i - 1].t)).toBe(true);
      // The model's inferences per version, from mlmesh_predictor_inference_* on every Predictor.
      expect(history.model.series.map((s) => s.label)).toEqual(["v1"]);
    } finally {
      await console.stop();
    }
    // A Prometheus that is not there: UNAVAILABLE, said as such.
    const orphan = await startService("console", { PROMETHEUS_URL: "http://127.0.0.1:9", CONSOLE_METRICS_URLS: `predictor=${services.predictor.baseUrl}` });
    try {
      const response = await fetch(`${orphan.baseUrl}/history.json?service=predictor`);
      expect(response.status).toBe(503);
      expect(((await response.json()) as { error: string }).error).toMatch(/^Prometheus at http:\/\/127\.0\.0\.1:9 did not answer/);
    } finally {
      await orphan.stop();
    }
  });

  it("the dashboard's and the alerts' queries are valid PromQL over metrics the services really export", async () => {
    const exported = new Set<string>();
    for (const service of Object.values(services)) {
      for (const [, name] of (await scrape(service)).matchAll(/^# TYPE (\S+) /gm)) exported.add(name);
    }
    const dashboard = JSON.parse(await readFile(join(repoRoot, "monitoring/grafana/dashboards/mlmesh.json"), "utf8")) as {
      panels: { title: string; targets: { expr: string }[] }[];
    };
    const alerts = await readFile(join(repoRoot, "monitoring/alerts.yml"), "utf8");
    const alertExprs = [...alerts.matchAll(/expr: \|?\n?\s*([^\n]+(?:\n {12,}[^\n]+)*)/g)].map((m) => m[1].trim());
    expect(alertExprs).toHaveLength(7);
    const exprs = [...dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr)), ...alertExprs];
    expect(dashboard.panels.length).toBeGreaterThanOrEqual(7);
    for (const expr of exprs) {
      const names = [...expr.matchAll(/\b((?:mlmesh|process|nodejs)_[a-z0-9_]+)/g)].map((m) => m[1].replace(/_(bucket|sum|count)$/, ""));
      expect(names.length, expr).toBeGreaterThan(0);
      for (const name of names) expect(exported.has(name), `${name} (in ${expr})`).toBe(true);
      const check = (await (await fetch(`${prometheusUrl}/api/v1/query?query=${encodeURIComponent(expr)}`)).json()) as { status: string; error?: string };
      expect(check.status, `${expr}: ${check.error}`).toBe("success");
    }
    const rules = await run(promtool, ["check", "rules", join(repoRoot, "monitoring/alerts.yml")]);
    expect(rules.code, rules.stdout + rules.stderr).toBe(0);
    const tests = await run(promtool, ["test", "rules", "alerts.test.yml"], { cwd: join(repoRoot, "monitoring") });
    expect(tests.code, tests.stdout + tests.stderr).toBe(0);
    const config = await run(promtool, ["check", "config", "--syntax-only", join(repoRoot, "monitoring/prometheus.yml")]);
    expect(config.code, config.stdout + config.stderr).toBe(0);
  });
});

describe("traces", () => {
  let receiver: Server;
  const spans: { traceId: string; spanId: string; parentSpanId?: string; name: string; kind: number; service: string }[] = [];
  let predictor: ServiceProcess;
  let proxy: ServiceProcess;

  beforeAll(async () => {
    // An OTLP/HTTP receiver: the spans of every JSON export posted to /v1/traces.
    receiver = createServer((request, response) => {
      let body = "";
      request.on("data", (chunk: Buffer) => (body += chunk.toString("utf8")));
      request.on("end", () => {
        const exported = JSON.parse(body) as {
          resourceSpans: { resource: { attributes: { key: string; value: { stringValue?: string } }[] }; scopeSpans: { spans: (typeof spans)[number][] }[] }[];
        };
        for (const resourceSpans of exported.resourceSpans) {
          const service = resourceSpans.resource.attributes.find((a) => a.key === "service.name")?.value.stringValue ?? "";
          for (const scope of resourceSpans.scopeSpans) for (const span of scope.spans) spans.push({ ...span, service });
        }
        response.writeHead(200, { "content-type": "application/json" });
        response.end("{}");
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
    const otel = { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(receiver.address() as { port: number }).port}`, OTEL_BSP_SCHEDULE_DELAY: "100" };
    predictor = await startService("predictor", otel);
    proxy = await startService("proxy", { ...otel, PREDICTOR_ADDRESS: predictor.address });
  });
  afterAll(async () => {
    await proxy?.stop();
    await predictor?.stop();
    receiver?.close();
  });

  it("one PredictLabel is a proxy span with a child span for its call to the Predictor, continued by the Predictor, and greppable in the logs", async () => {
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    const client = createClient(ProxyService, createGrpcTransport({ baseUrl: proxy.baseUrl }));
    await client.predictLabel({ rows: [row] }, { headers: { traceparent: `00-${traceId}-b7ad6b7169203331-01` } });
    const inTrace = await until("the exported spans", async () => {
      const found = spans.filter((s) => s.traceId === traceId);
      return found.length >= 3 ? found : undefined;
    });
    const server = inTrace.find((s) => s.service === "mlmesh-proxy" && s.name === "/mlmesh.proxy.v1.ProxyService/PredictLabel")!;
    expect(server).toMatchObject({ kind: 2, parentSpanId: "b7ad6b7169203331" }); // SERVER, child of the caller
    // The three backends are served by one Predictor: one PredictModels call asks them all.
    const calls = inTrace.filter((s) => s.parentSpanId === server.spanId);
    expect(calls.map((s) => [s.name, s.kind, s.service])).toEqual([[`${predictor.address} PredictModels`, 3, "mlmesh-proxy"]]); // CLIENT
    const predicted = inTrace.filter((s) => s.service === "mlmesh-predictor");
    expect(predicted.map((s) => [s.name, s.parentSpanId])).toEqual([["/mlmesh.predictor.v1.PredictorService/PredictModels", calls[0].spanId]]);

    // The same trace id on the RPC log lines of both services.
    const logged = (service: ServiceProcess) => service.logs.filter((l) => l.msg === "rpc" && l.trace_id === traceId).map((l) => l.rpc);
    await until("the log lines", async () => (logged(predictor).length === 1 ? true : undefined));
    expect(logged(predictor)).toEqual(["/mlmesh.predictor.v1.PredictorService/PredictModels"]);
    expect(logged(proxy)).toEqual(["/mlmesh.proxy.v1.ProxyService/PredictLabel"]);
  });
});

/** Runs a program with text on its stdin. */
function runWithInput(file: string, args: string[], input: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(file, args, { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c));
    child.stderr.on("data", (c: Buffer) => (stderr += c));
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.on("error", (err) => resolve({ code: -1, stdout, stderr: String(err) }));
    child.stdin.end(input);
  });
}
