// The web console in a real headless Chromium (Debian's, driven by playwright-core): the page
// calls the Predictor and the Proxy processes from the browser over Connect JSON, Connect binary
// and gRPC-web, which only works when the services answer CORS for the console's origin.
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { PredictorService } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { ModelRegistryService } from "../gen/mlmesh/registry/v1/registry_pb.js";
import { clientFor } from "./support/clients.js";
import { freshDatabase, type TestDatabase } from "./support/databases.js";
import { bootstrapRegistry } from "../services/cli/bootstrap.js";
import { pushModelFolder, registryClient, resolveModel } from "../services/cli/model-push.js";
import { checkHealth, ServingStatus } from "../services/runtime/client/health-client.js";
import { repoRoot, startService, type ServiceProcess } from "./support/service-process.js";

/** Debian's chromium (scripts/install-system-packages.sh); launching fails if it is missing. */
const chromiumPath = "/usr/bin/chromium";
// Headless, and no calls to Google's services: this machine's network would refuse them.
const chromiumArgs = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"];

const knownRows = [
  { values: "5.1, 3.5, 1.4, 0.2", label: "setosa" },
  { values: "6.3, 3.3, 6.0, 2.5", label: "virginica" },
  { values: "5.9, 3.0, 4.2, 1.5", label: "versicolor" },
];

/** A port that was free a moment ago: the console's origin must be known before the services start. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function waitUntilServing(address: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while ((await checkHealth(address, "mlmesh.predictor.v1.PredictorService", 1000)) !== ServingStatus.SERVING) {
    if (Date.now() > deadline) throw new Error(`the Predictor at ${address} did not load the registry's models within 20 s`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const cells = (page: Page, table: string, column: number) =>
  page.locator(`[data-testid=${table}] tbody tr td:nth-child(${column})`).allInnerTexts();

describe("web console in headless Chromium", () => {
  let predictor: ServiceProcess;
  let proxy: ServiceProcess;
  let batch: ServiceProcess;
  let registry: ServiceProcess;
  const databases: TestDatabase[] = [];
  let consoleServer: ServiceProcess;
  let strangerConsole: ServiceProcess;
  let browser: Browser;
  let artifactDir: string;

  beforeAll(async () => {
    const consolePort = await freePort();
    const cors = { CORS_ORIGINS: `http://127.0.0.1:${consolePort}` };
    for (let i = 0; i < 2; i++) databases.push(await freshDatabase("sqlite"));
    // The mesh as `mlmesh up` runs it: the bundled models registered, the Predictor following the registry.
    artifactDir = await mkdtemp(join(tmpdir(), "mlmesh-console-artifacts-"));
    registry = await startService("registry", { ...cors, DATABASE_URL: databases[1].url, ARTIFACT_DIR: artifactDir });
    await bootstrapRegistry(registryClient(registry.address, "console-test"), join(repoRoot, "models"), "iris", new AbortController().signal);
    predictor = await startService("predictor", { ...cors, REGISTRY_ADDRESS: registry.address });
    await waitUntilServing(predictor.address);
    proxy = await startService("proxy", { ...cors, PREDICTOR_ADDRESS: predictor.address });
    batch = await startService("batch", { ...cors, DATABASE_URL: databases[0].url, PREDICTOR_ADDRESS: predictor.address, BATCH_INTERVAL: "500ms" });
    const endpoints = {
      CONSOLE_PREDICTOR_URL: predictor.baseUrl,
      CONSOLE_PROXY_URL: proxy.baseUrl,
      CONSOLE_BATCH_URL: batch.baseUrl,
      CONSOLE_REGISTRY_URL: registry.baseUrl,
    };
    consoleServer = await startService("console", { ...endpoints, CONSOLE_PORT: String(consolePort) });
    // The same page on an origin the services do not list.
    strangerConsole = await startService("console", endpoints);
    browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs });
  });
  afterAll(async () => {
    await browser?.close();
    await Promise.all([predictor, proxy, batch, registry, consoleServer, strangerConsole].map((s) => s?.stop()));
    await Promise.all(databases.map((d) => d.drop()));
    if (artifactDir) await rm(artifactDir, { recursive: true, force: true });
  });

  const openConsole = async () => {
    const page = await browser.newPage();
    await page.goto(`${consoleServer.baseUrl}/`);
    return page;
  };

  it("lists the models and predicts the known rows over Connect JSON, Connect binary and gRPC-web", async () => {
    const page = await openConsole();
    const predictContentTypes: string[] = [];
    page.on("request", (request) => {
      if (request.method() === "POST" && request.url().endsWith("/mlmesh.predictor.v1.PredictorService/Predict")) predictContentTypes.push(request.headers()["content-type"]);
    });
    await page.waitForSelector("body[data-ready=true]");
    expect(await cells(page, "models", 1)).toEqual(["iris_svc", "iris_svc_setosa", "iris_svc_versicolor", "iris_svc_virginica"]);
    await page.fill("[data-testid=rows]", knownRows.map((r) => r.values).join("\n"));
    const protocols = { "connect-json": "application/json", "connect-binary": "application/proto", "grpc-web": "application/grpc-web+proto" };
    for (const [protocol, contentType] of Object.entries(protocols)) {
      await page.selectOption("[data-testid=protocol]", protocol);
      await page.selectOption("[data-testid=model]", "iris_svc@1");
      await page.click("[data-testid=predict]");
      await expect.poll(() => cells(page, "predictions", 2), { message: protocol }).toEqual(knownRows.map((r) => r.label));
      expect(await page.textContent("[data-testid=error]"), protocol).toBe("");
      expect(predictContentTypes.at(-1), protocol).toBe(contentType);
    }
    await page.close();
  });

  it("predicts labels through the Proxy and shows its backends", async () => {
    const page = await openConsole();
    await page.waitForSelector("body[data-ready=true]");
    await page.fill("[data-testid=rows]", knownRows.map((r) => r.values).join("\n"));
    await page.click("[data-testid=predict-label]");
    await expect.poll(() => cells(page, "predictions", 2)).toEqual(knownRows.map((r) => r.label));
    expect(await cells(page, "predictions", 4)).toContain("answered: setosa, versicolor, virginica");
    await page.click("[data-testid=check]");
    await expect.poll(() => cells(page, "backends", 1)).toEqual(["setosa", "versicolor", "virginica"]);
    expect(await cells(page, "backends", 4)).toEqual(["yes", "yes", "yes"]);
    expect(await cells(page, "backends", 5)).toEqual(["CLOSED", "CLOSED", "CLOSED"]);
    await page.close();
  });

  it("registers batch items and follows each one's WatchItem stream to its final state, over each protocol", async () => {
    const page = await openConsole();
    await page.waitForSelector("body[data-ready=true]");
    await page.fill("[data-testid=rows]", [...knownRows.map((r) => r.values), "5.1, 3.5, 1.4"].join("\n"));
    for (const protocol of ["connect-json", "connect-binary", "grpc-web"]) {
      await page.selectOption("[data-testid=protocol]", protocol);
      await page.click("[data-testid=register]");
      // Streams start with PENDING and end with the job's outcome (BATCH_INTERVAL=500ms).
      await expect.poll(() => cells(page, "items", 2), { message: protocol, timeout: 15_000 }).toEqual(["PREDICTED", "PREDICTED", "PREDICTED", "FAILED"]);
      expect(await cells(page, "items", 3), protocol).toEqual([...knownRows.map((r) => r.label), ""]);
      expect((await cells(page, "items", 4))[3], protocol).toMatch(/^the item has 3 values; iris_svc v1 takes 4/);
      expect(await page.textContent("[data-testid=error]"), protocol).toBe("");
    }
    await page.click("[data-testid=job-status]");
    await expect.poll(() => page.textContent("[data-testid=job-counts]")).toBe("0 pending, 9 predicted, 3 failed");
    await page.locator("[data-testid=job-counts]").evaluate((element) => (element.textContent = ""));
    await page.click("[data-testid=run-job]"); // RunJobNow: nothing left to do
    await expect.poll(() => page.textContent("[data-testid=job-counts]")).toBe("0 pending, 9 predicted, 3 failed");
    await page.close();
  });

  it("lists the registry's projects and models", async () => {
    const client = clientFor(ModelRegistryService, registry.baseUrl, "grpc");
    const { project } = await client.createProject({ name: "iris_console", description: "from the console test" });
    await client.createModel({ projectId: project!.id, name: "svc", description: "an SVC" });
    await client.createProject({ name: "empty_project" });
    const page = await openConsole();
    await page.waitForSelector("body[data-ready=true]");
    await page.click("[data-testid=load-registry]");
    // The bundled models registered at start-up, then this test's.
    await expect.poll(() => cells(page, "registry", 1)).toEqual(["iris", "iris", "iris", "iris", "iris_console", "empty_project"]);
    expect(await cells(page, "registry", 2)).toEqual(["iris_svc", "iris_svc_setosa", "iris_svc_versicolor", "iris_svc_virginica", "svc", "(no model yet)"]);
    await page.close();
  });

  it("shows the service's status and message for a bad row", async () => {
    const page = await openConsole();
    await page.waitForSelector("body[data-ready=true]");
    await page.fill("[data-testid=rows]", "5.1, 3.5, 1.4");
    await page.click("[data-testid=predict]");
    await expect.poll(() => page.textContent("[data-testid=error]")).toContain("INVALID_ARGUMENT: rows[0] has 3 values; iris_svc v1 takes 4");
    expect(await cells(page, "predictions", 2)).toEqual([]);
    await page.close();
  });

  it("shows a model's versions, aliases, their history and what the Predictor serves, and moves an alias once confirmed", async () => {
    const client = registryClient(registry.address, "console-test");
    const { id } = await resolveModel(client, { project: "iris", name: "iris_svc" }, false);
    await pushModelFolder(client, join(repoRoot, "test/fixtures/models/iris_svc/2"), { modelId: id, modelName: "iris_svc" });
    const page = await openConsole();
    await page.waitForSelector("body[data-ready=true]");
    await page.click("[data-testid=load-deployments]");
    await page.selectOption("[data-testid=deploy-model]", { label: "iris/iris_svc" });
    await expect.poll(() => cells(page, "versions", 1)).toEqual(["1", "2"]);
    expect(await cells(page, "versions", 2)).toEqual(["production", "-"]);
    // The Predictor loads the new version as the newest (PREDICTOR_LATEST_VERSIONS=1); production stays on v1.
    await expect
      .poll(async () => {
        await page.click("[data-testid=deploy-refresh]");
        return cells(page, "versions", 3);
      })
      .toEqual(["production", "loaded"]);
    expect(await cells(page, "alias-history", 5)).toEqual(["console-test"]);

    await page.selectOption("[data-testid=alias-version]", "2");
    page.once("dialog", (dialog) => void dialog.dismiss());
    await page.click("[data-testid=move-alias]");
    await expect.poll(() => page.textContent("[data-testid=deploy-status]")).toBe("not moved");
    expect(await cells(page, "versions", 2)).toEqual(["production", "-"]);

    let question = "";
    page.once("dialog", (dialog) => {
      question = dialog.message();
      void dialog.accept();
    });
    await page.click("[data-testid=move-alias]");
    await expect.poll(() => page.textContent("[data-testid=deploy-status]")).toBe("iris/iris_svc@production -> version 2");
    expect(question).toBe("Move iris/iris_svc@production from version 1 to version 2? Every Predictor serving it switches within seconds.");
    expect(await cells(page, "versions", 2)).toEqual(["-", "production"]);
    expect((await page.locator("[data-testid=alias-history] tbody tr").first().locator("td").allInnerTexts()).slice(1)).toEqual([
      "production",
      "v1",
      "v2",
      "console",
    ]);
    const movedAt = Date.now();
    await expect
      .poll(async () => {
        await page.click("[data-testid=deploy-refresh]");
        return cells(page, "versions", 3);
      })
      .toEqual(["-", "production"]);
    expect(Date.now() - movedAt).toBeLessThan(5000);
    expect(await page.textContent("[data-testid=error]")).toBe("");
    await page.close();
  });

  it("draws each service's live requests/s, errors and p99 from /metrics read by the console's server, with points once load is sent", async () => {
    const page = await openConsole();
    const browserCalls: string[] = [];
    page.on("request", (request) => browserCalls.push(request.url()));
    await page.waitForSelector("body[data-ready=true]");
    await expect.poll(() => cells(page, "live", 1), { timeout: 10_000 }).toEqual(["registry", "predictor", "batch", "proxy"]);
    const predict = createClient(PredictorService, createGrpcTransport({ baseUrl: predictor.baseUrl }));
    const until = Date.now() + 5000;
    while (Date.now() < until) await Promise.all(Array.from({ length: 10 }, () => predict.predict({ model: "iris_svc", rows: [{ values: [5.1, 3.5, 1.4, 0.2] }] })));
    const points = async (chart: string) => ((await page.getAttribute(`[data-testid=${chart}] polyline`, "points")) ?? "").split(" ").filter((p) => p !== "");
    await expect.poll(async () => (await points("live-predictor-rps")).length, { timeout: 15_000 }).toBeGreaterThanOrEqual(3);
    await expect.poll(async () => Number.parseFloat((await page.locator("[data-testid=live] tbody tr:nth-child(2) td:nth-child(2) span").innerText()) || "0"), { timeout: 10_000 }).toBeGreaterThan(0);
    expect((await page.locator("[data-testid=live] tbody tr:nth-child(2) td:nth-child(4) span").innerText())).toMatch(/^\d+\.\d\d ms$/);
    expect(await points("live-predictor-p99")).not.toEqual([]);
    // The browser asked its own server, never the services' /metrics.
    expect(browserCalls.filter((url) => url.endsWith("/metrics"))).toEqual([]);
    expect(browserCalls.some((url) => url === `${consoleServer.baseUrl}/live.json`)).toBe(true);
    const screenshot = join(artifactDir, "console-live.png");
    await page.locator("[data-testid=live]").screenshot({ path: screenshot });
    const png = await readFile(screenshot);
    expect(png.subarray(0, 8).toString("latin1")).toBe("\x89PNG\r\n\x1a\n");
    expect(png.length).toBeGreaterThan(2000);
    await page.close();
  });

  it("is refused by the browser on an origin the services do not list in CORS_ORIGINS", async () => {
    const page = await browser.newPage();
    const failed: string[] = [];
    page.on("requestfailed", (request) => failed.push(request.url())); // before the page's first call
    await page.goto(`${strangerConsole.baseUrl}/`);
    await page.waitForSelector("body[data-ready=true]");
    expect(failed).toContain(`${predictor.baseUrl}/mlmesh.predictor.v1.PredictorService/ListModels`);
    expect(await page.textContent("[data-testid=error]")).toBe(
      `network error: the service did not answer this page (is it running, and does its CORS_ORIGINS list ${new URL(strangerConsole.baseUrl).origin}?)`,
    );
    expect(await cells(page, "models", 1)).toEqual([]);
    await page.close();
  });

  it("answers CORS preflights for listed origins only, and leaves calls without an Origin alone", async () => {
    const url = `${predictor.baseUrl}/mlmesh.predictor.v1.PredictorService/Predict`;
    const preflight = (origin: string) =>
      fetch(url, { method: "OPTIONS", headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type" } });
    const allowed = await preflight(new URL(consoleServer.baseUrl).origin);
    expect(allowed.status).toBe(204);
    expect(allowed.headers.get("access-control-allow-origin")).toBe(new URL(consoleServer.baseUrl).origin);
    expect(allowed.headers.get("access-control-allow-headers")).toMatch(/connect-protocol-version/i);
    const refused = await preflight(new URL(strangerConsole.baseUrl).origin);
    expect(refused.status).toBe(403);
    expect(refused.headers.get("access-control-allow-origin")).toBeNull();

    const call = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "iris_svc", rows: [{ values: [5.1, 3.5, 1.4, 0.2] }] }),
    });
    expect(call.status).toBe(200);
    expect(call.headers.get("access-control-allow-origin")).toBeNull();
    expect(((await call.json()) as { predictions: { label: string }[] }).predictions[0].label).toBe("setosa");
  });
});
