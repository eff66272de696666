// The Proxy as a real process in front of real Predictor processes (one per backend, as in a
// distributed deployment), plus a deliberately slow Predictor (test/fixtures/slow-predictor.ts).
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Code, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CircuitState, ProxyService } from "../gen/mlmesh/proxy/v1/proxy_pb.js";
import { clientFor, failure } from "./support/clients.js";
import { repoRoot, run, startScript, startService, tools, type ServiceProcess } from "./support/service-process.js";

const iris = JSON.parse(await readFile(join(repoRoot, "test/fixtures/iris.json"), "utf8")) as {
  rows: { values: number[]; label: string }[];
};
const setosaRow = { values: [5.1, 3.5, 1.4, 0.2] };
const knownRows = [
  { values: [5.1, 3.5, 1.4, 0.2], label: "setosa" },
  { values: [6.3, 3.3, 6.0, 2.5], label: "virginica" },
  { values: [5.9, 3.0, 4.2, 1.5], label: "versicolor" },
];

const backendsOf = (entries: [string, ServiceProcess, string][]) =>
  entries.map(([name, predictor, model]) => `${name}=${predictor.address}/${model}`).join(",");

describe("Proxy over one Predictor per backend", () => {
  const predictors: Record<string, ServiceProcess> = {};
  let proxy: ServiceProcess;
  let client: Client<typeof ProxyService>;

  beforeAll(async () => {
    for (const species of ["setosa", "versicolor", "virginica"]) predictors[species] = await startService("predictor");
    proxy = await startService("proxy", {
      PROXY_BACKENDS: backendsOf(
        ["setosa", "versicolor", "virginica"].map((s) => [s, predictors[s], `iris_svc_${s}`] as [string, ServiceProcess, string]),
      ),
      PROXY_BREAKER_FAILURES: "3",
      // Long enough that the checks below, on a loaded machine, all fall within one cool-down.
      PROXY_BREAKER_COOLDOWN: "4s",
    });
    client = clientFor(ProxyService, proxy.baseUrl, "grpc");
  });
  afterAll(async () => {
    await Promise.all([proxy?.stop(), ...Object.values(predictors).map((p) => p.stop())]);
  });

  it("labels the known iris rows from the three one-vs-rest backends", async () => {
    const response = await client.predictLabel({ rows: knownRows.map(({ values }) => ({ values })) });
    expect(response.predictions.map((p) => p.label)).toEqual(knownRows.map((r) => r.label));
    expect(response.answeredBackends).toEqual(["setosa", "versicolor", "virginica"]);
    expect(response.failedBackends).toEqual([]);
    const all = await client.predict({ rows: [setosaRow] });
    expect(all.backends.map((b) => [b.backend, b.status?.code, b.response?.labels[0]])).toEqual([
      ["setosa", 0, "setosa"],
      ["versicolor", 0, "versicolor"],
      ["virginica", 0, "virginica"],
    ]);
    for (const b of all.backends) expect(b.response!.predictions[0].probabilities).toHaveLength(2);
  });

  it("labels the whole iris set with accuracy >= 0.95", async () => {
    const response = await client.predictLabel({ rows: iris.rows.map(({ values }) => ({ values })) });
    const correct = response.predictions.filter((p, i) => p.label === iris.rows[i].label).length;
    expect(correct / iris.rows.length).toBeGreaterThanOrEqual(0.95);
  });

  it("reports every backend's health and circuit; serves metadata and the sample", async () => {
    const { backends } = await client.checkBackends({});
    expect(backends.map((b) => [b.backend, b.serving, b.circuit])).toEqual([
      ["setosa", true, CircuitState.CLOSED],
      ["versicolor", true, CircuitState.CLOSED],
      ["virginica", true, CircuitState.CLOSED],
    ]);
    const metadata = await client.getMetadata({});
    expect(metadata.backends.map((b) => b.metadata?.name)).toEqual(["iris_svc_setosa", "iris_svc_versicolor", "iris_svc_virginica"]);
    const sample = await client.predictSample({});
    expect(sample.response!.predictions.map((p) => p.label)).toEqual(["setosa", "versicolor", "virginica"]);
  });

  it("refuses an invalid request with INVALID_ARGUMENT, not UNAVAILABLE", async () => {
    expect((await failure(client.predictLabel({ rows: [] }))).code).toBe(Code.InvalidArgument);
    const error = await failure(client.predictLabel({ rows: [{ values: [1, 2, 3] }] }));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toContain("rows[0] has 3 values");
  });

  it("answers grpcurl as the README shows", async () => {
    const result = await run(tools.grpcurl, [
      "-plaintext",
      "-d",
      '{"rows":[{"values":[5.1,3.5,1.4,0.2]}]}',
      proxy.address,
      "mlmesh.proxy.v1.ProxyService/PredictLabel",
    ]);
    expect(result.code, result.stderr).toBe(0);
    expect((JSON.parse(result.stdout) as { predictions: { label: string }[] }).predictions[0].label).toBe("setosa");
  });

  it("keeps answering through a ghz run while a backend is killed; its circuit opens, then closes when it returns", async () => {
    const ghz = run(
      tools.ghz,
      [
        "--insecure",
        "--call",
        "mlmesh.proxy.v1.ProxyService/PredictLabel",
        "-d",
        '{"rows":[{"values":[5.1,3.5,1.4,0.2]}]}',
        "--concurrency",
        "10",
        "--duration",
        "4s",
        "--timeout",
        "2s",
        "--format",
        "json",
        proxy.address,
      ],
      { timeoutMs: 30_000 },
    );
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(await predictors.virginica.stop("SIGKILL")).toBe("SIGKILL");
    const result = await ghz;
    expect(result.code, result.stderr).toBe(0);
    const report = JSON.parse(result.stdout) as { count: number; statusCodeDistribution: Record<string, number> };
    // Every call answered; only the calls cut when ghz's duration ended may fail.
    expect(report.statusCodeDistribution.OK).toBeGreaterThanOrEqual(report.count - 10);
    expect(Object.keys(report.statusCodeDistribution).filter((c) => c !== "OK" && c !== "Unavailable")).toEqual([]);

    const partial = await client.predict({ rows: [setosaRow] });
    const virginica = partial.backends.find((b) => b.backend === "virginica")!;
    expect(virginica.status!.code).toBe(Code.Unavailable);
    expect(virginica.response).toBeUndefined();
    expect(partial.backends.filter((b) => b.status!.code === 0).map((b) => b.backend)).toEqual(["setosa", "versicolor"]);
    const label = await client.predictLabel({ rows: [setosaRow] });
    expect(label.predictions[0].label).toBe("setosa");
    expect(label.answeredBackends).toEqual(["setosa", "versicolor"]);
    expect(label.failedBackends.map((b) => b.backend)).toEqual(["virginica"]);

    let health = (await client.checkBackends({})).backends.find((b) => b.backend === "virginica")!;
    expect(health.serving).toBe(false);
    expect(health.circuit).toBe(CircuitState.OPEN);
    const skipped = (await client.predict({ rows: [setosaRow] })).backends.find((b) => b.backend === "virginica")!;
    expect(skipped.status!.message).toMatch(/^circuit open/);

    // Back on the same port: after the cool-down one probe goes through and closes the circuit.
    const port = predictors.virginica.address.split(":")[1];
    predictors.virginica = await startService("predictor", { PREDICTOR_PORT: port });
    await new Promise((resolve) => setTimeout(resolve, 4100));
    await expect
      .poll(async () => (await client.predict({ rows: [setosaRow] })).backends.every((b) => b.status!.code === 0), { timeout: 5000 })
      .toBe(true);
    health = (await client.checkBackends({})).backends.find((b) => b.backend === "virginica")!;
    expect(health.circuit).toBe(CircuitState.CLOSED);
  });
});

describe("Proxy deadlines and total failure", () => {
  const processes: ServiceProcess[] = [];
  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop()));
  });

  it("answers within the caller's deadline when a backend sleeps past it", async () => {
    const predictor = await startService("predictor");
    const slow = await startScript("test/fixtures/slow-predictor.ts", "PREDICTOR_PORT", { SLOW_MS: "5000" });
    processes.push(predictor, slow);
    const proxy = await startService("proxy", {
      PROXY_BACKENDS: backendsOf([
        ["setosa", predictor, "iris_svc_setosa"],
        ["slowpoke", slow, "anything"],
      ]),
      PROXY_BACKEND_TIMEOUT: "1s",
    });
    processes.push(proxy);
    const client = clientFor(ProxyService, proxy.baseUrl, "grpc");
    // Connections up before timing (the slow backend times out here). The first calls to fresh
    // processes may exceed PROXY_BACKEND_TIMEOUT on a loaded machine: not what is measured here.
    await expect
      .poll(async () => (await client.predict({ rows: [setosaRow] })).backends[0].status?.code, { timeout: 15_000 })
      .toBe(0); // OK

    // Deadlines are generous so a loaded CI machine still answers; the slow backend sleeps 5 s.
    let started = Date.now();
    const withDeadline = await client.predictLabel({ rows: [setosaRow] }, { timeoutMs: 1500 });
    expect(Date.now() - started).toBeLessThan(1500 + 400);
    expect(withDeadline.predictions[0].label).toBe("setosa");
    expect(withDeadline.failedBackends.map((b) => [b.backend, b.status!.code])).toEqual([["slowpoke", Code.DeadlineExceeded]]);

    // No caller deadline: PROXY_BACKEND_TIMEOUT (1 s here) bounds each backend call.
    started = Date.now();
    const withoutDeadline = await client.predict({ rows: [setosaRow] });
    expect(Date.now() - started).toBeLessThan(1000 + 400);
    expect(withoutDeadline.backends.map((b) => b.status!.code)).toEqual([0, Code.DeadlineExceeded]);
  });

  it("answers through a Predictor older than PredictModels, with one Predict per model", async () => {
    const old = await startScript("test/fixtures/slow-predictor.ts", "PREDICTOR_PORT", { SLOW_MS: "0" });
    processes.push(old);
    const proxy = await startService("proxy", {
      PROXY_BACKENDS: backendsOf([
        ["first", old, "model_a"],
        ["second", old, "model_b"],
      ]),
    });
    processes.push(proxy);
    const answer = await clientFor(ProxyService, proxy.baseUrl, "grpc").predictLabel({ rows: [setosaRow, setosaRow] });
    expect(answer.answeredBackends).toEqual(["first", "second"]);
    expect(answer.predictions.map((p) => [p.label, p.probability])).toEqual([
      ["slowpoke", expect.closeTo(0.99, 5)],
      ["slowpoke", expect.closeTo(0.99, 5)],
    ]);
  });

  it("fails fast with UNAVAILABLE when no backend is up", async () => {
    const proxy = await startService("proxy", {
      PROXY_BACKENDS: "setosa=127.0.0.1:9/iris_svc_setosa,virginica=127.0.0.1:9/iris_svc_virginica",
    });
    processes.push(proxy);
    const client = clientFor(ProxyService, proxy.baseUrl, "grpc");
    const started = Date.now();
    const error = await failure(client.predictLabel({ rows: [setosaRow] }, { timeoutMs: 5000 }));
    expect(Date.now() - started).toBeLessThan(1000);
    expect(error.code).toBe(Code.Unavailable);
    expect(error.rawMessage).toMatch(/^no backend answered: setosa: Unavailable backend unavailable at 127\.0\.0\.1:9/);
  });

  it("exits 2 naming PROXY_BACKENDS when it is malformed", async () => {
    const result = await run(process.execPath, ["bin/mlmesh.js", "serve", "proxy"], {
      env: { PROXY_BACKENDS: "setosa=nowhere", PROXY_PORT: "0" },
    });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('configuration error: PROXY_BACKENDS: "setosa=nowhere" is not name=host:port/model[@alias|@version]');
  });
});
