// The web console in a real headless Chromium (Debian's, driven by playwright-core), against
// real services: every page is walked as a user would (search, open, compare, push, move,
// watch), checked by axe-core for serious or critical accessibility violations, and
// photographed into test-results/console/ (git ignores it) for people to look at.
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PredictorService } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { ModelRegistryService } from "../gen/mlmesh/registry/v1/registry_pb.js";
import { bootstrapRegistry } from "../services/cli/bootstrap.js";
import { pushModelFolder, registryClient } from "../services/cli/model-push.js";
import { checkHealth, ServingStatus } from "../services/runtime/client/health-client.js";
import { clientFor } from "./support/clients.js";
import { freshDatabase, type TestDatabase } from "./support/databases.js";
import { freePort, repoRoot, run, type ServiceProcess, startService, tools } from "./support/service-process.js";

/** Debian's chromium (scripts/install-system-packages.sh); launching fails if it is missing. */
const chromiumPath = "/usr/bin/chromium";
// Headless, and no calls to Google's services: this machine's network would refuse them.
const chromiumArgs = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"];
const screenshots = join(repoRoot, "test-results/console");
const axeSource = readFile(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const fixtureVersion = join(repoRoot, "test/fixtures/models/iris_svc/2");


async function waitUntilServing(address: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while ((await checkHealth(address, "mlmesh.predictor.v1.PredictorService", 1000)) !== ServingStatus.SERVING) {
    if (Date.now() > deadline) throw new Error(`the Predictor at ${address} did not load the registry's models within 20 s`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const cells = (page: Page, table: string, column: number) => page.locator(`[data-testid=${table}] tbody tr > :nth-child(${column})`).allInnerTexts();

/** axe-core's serious and critical violations on the page as it is now (rule id, impact, first targets). */
async function seriousViolations(page: Page): Promise<string[]> {
  // Browser-side code is given as text: this file is compiled for Node, without the DOM's types.
  if (!(await page.evaluate<boolean>('"axe" in window'))) await page.addScriptTag({ content: await axeSource });
  const violations = await page.evaluate<{ id: string; impact: string; targets: string[] }[]>(`
    axe.run(document, { resultTypes: ["violations"] }).then((result) =>
      result.violations.map((v) => ({ id: v.id, impact: v.impact, targets: v.nodes.slice(0, 3).map((n) => n.target.join(" ")) })))`);
  return violations.filter((v) => v.impact === "serious" || v.impact === "critical").map((v) => `${v.id} (${v.impact}): ${v.targets.join(", ")}`);
}

describe("web console in headless Chromium", () => {
  let predictor: ServiceProcess;
  let proxy: ServiceProcess;
  let batch: ServiceProcess;
  let monitor: ServiceProcess;
  let registry: ServiceProcess;
  const databases: TestDatabase[] = [];
  let consoleServer: ServiceProcess;
  let strangerConsole: ServiceProcess;
  let browser: Browser;
  let context: BrowserContext;
  let artifactDir: string;
  let registryEnv: Record<string, string>;

  beforeAll(async () => {
    await mkdir(screenshots, { recursive: true });
    const consolePort = await freePort();
    const cors = { CORS_ORIGINS: `http://127.0.0.1:${consolePort}` };
    for (let i = 0; i < 3; i++) databases.push(await freshDatabase("sqlite"));
    // The mesh as `mlmesh up` runs it: the bundled models registered, the Predictor following the registry.
    artifactDir = await mkdtemp(join(tmpdir(), "mlmesh-console-artifacts-"));
    // The registry reads rollouts' figures from the monitor, which reads references from the registry.
    const monitorPort = await freePort();
    registryEnv = { ...cors, DATABASE_URL: databases[1].url, ARTIFACT_DIR: artifactDir, MONITOR_ADDRESS: `127.0.0.1:${monitorPort}`, REGISTRY_ROLLOUT_TICK: "200ms" };
    registry = await startService("registry", registryEnv);
    await bootstrapRegistry(registryClient(registry.address, "console-test"), join(repoRoot, "models"), undefined, new AbortController().signal);
    // The monitor with short windows, so that a walk of its page sees several.
    monitor = await startService("monitor", {
      ...cors,
      MONITOR_PORT: String(monitorPort),
      MONITOR_DATABASE_URL: databases[2].url,
      REGISTRY_ADDRESS: registry.address,
      MONITOR_WINDOW: "1s",
      MONITOR_WINDOW_GRACE: "200ms",
      MONITOR_REFERENCE_REFRESH: "500ms",
      MONITOR_MIN_ROWS: "100",
    });
    predictor = await startService("predictor", { ...cors, REGISTRY_ADDRESS: registry.address, MONITOR_ADDRESS: monitor.address, PREDICTION_LOG_FLUSH_INTERVAL: "50ms" });
    await waitUntilServing(predictor.address);
    proxy = await startService("proxy", { ...cors, PREDICTOR_ADDRESS: predictor.address });
    batch = await startService("batch", { ...cors, DATABASE_URL: databases[0].url, PREDICTOR_ADDRESS: predictor.address, BATCH_INTERVAL: "500ms" });
    const endpoints = {
      CONSOLE_PREDICTOR_URL: predictor.baseUrl,
      CONSOLE_PROXY_URL: proxy.baseUrl,
      CONSOLE_BATCH_URL: batch.baseUrl,
      CONSOLE_REGISTRY_URL: registry.baseUrl,
      CONSOLE_MONITOR_URL: monitor.baseUrl,
      CONSOLE_METRICS_URLS: `registry=${registry.baseUrl},predictor=${predictor.baseUrl},batch=${batch.baseUrl},proxy=${proxy.baseUrl},monitor=${monitor.baseUrl}`,
    };
    consoleServer = await startService("console", { ...endpoints, CONSOLE_PORT: String(consolePort) });
    // The same page on an origin the services do not list.
    strangerConsole = await startService("console", endpoints);
    browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs });
    // axe-core is injected as a script tag, which the console's CSP would refuse.
    context = await browser.newContext({ viewport: { width: 1400, height: 900 }, bypassCSP: true });
  });
  afterAll(async () => {
    await browser?.close();
    await Promise.all([predictor, proxy, batch, monitor, registry, consoleServer, strangerConsole].map((s) => s?.stop()));
    await Promise.all(databases.map((d) => d.drop()));
    if (artifactDir) await rm(artifactDir, { recursive: true, force: true });
  });

  const registryApi = () => clientFor(ModelRegistryService, registry.baseUrl, "grpc");

  /** Opens a page of the console and waits for its heading. */
  const open = async (path: string, page?: Page) => {
    const p = page ?? (await context.newPage());
    await p.goto(`${consoleServer.baseUrl}${path}`);
    await p.locator("main h1").waitFor();
    return p;
  };

  /** Checks the page with axe-core and photographs it. */
  const inspect = async (page: Page, name: string) => {
    expect(await seriousViolations(page), name).toEqual([]);
    await page.screenshot({ path: join(screenshots, `${name}.png`), fullPage: true });
  };

  it("Models: searches by name, tag and alias, opens a model, and the back button returns to the search", async () => {
    const client = registryApi();
    const { model } = await client.getModelByName({ projectName: "iris", name: "iris_svc_setosa" });
    await client.setModelTag({ modelId: model!.id, key: "team", value: "vision" });

    const page = await open("/models");
    const bundled = ["diabetes_high_risk", "diabetes_regressor", "digits_image", "iris_svc", "iris_svc_setosa", "iris_svc_versicolor", "iris_svc_virginica"];
    await expect.poll(() => cells(page, "models", 1)).toEqual(bundled);
    expect(await cells(page, "models", 2)).toEqual(["diabetes", "diabetes", "digits", "iris", "iris", "iris", "iris"]);
    expect(await cells(page, "models", 3)).toEqual(Array(7).fill("production → v1"));
    const signatures = await cells(page, "models", 4);
    expect(signatures[bundled.indexOf("iris_svc")]).toContain("input float32[N, 4] → label int64[N], probabilities float32[N, 3]");
    expect(signatures[bundled.indexOf("diabetes_high_risk")]).toContain("sex string[N, 1], measurements float32[N, 9] → label int64[N], probabilities float32[N, 2]");
    await expect.poll(() => cells(page, "models", 5)).toEqual(Array(7).fill("v1 (production)"));
    await inspect(page, "models");

    const search = async (query: string, expected: string[]) => {
      await page.fill("[data-testid=model-search]", query);
      await expect.poll(() => cells(page, "models", 1), { message: query }).toEqual(expected);
    };
    await search("virginica", ["iris_svc_virginica"]);
    await search("tag:team=vision", ["iris_svc_setosa"]);
    await search("tag:team=other", []);
    await search("alias:production iris_svc_v", ["iris_svc_versicolor", "iris_svc_virginica"]);
    await search("diabetes", ["diabetes_high_risk", "diabetes_regressor"]);
    await search("@staging", []);
    expect(page.url()).toBe(`${consoleServer.baseUrl}/models?q=%40staging`);
    await search("iris_svc_s", ["iris_svc_setosa"]);
    await page.click("text=iris_svc_setosa");
    await expect.poll(() => page.locator("main h1").innerText()).toBe("iris / iris_svc_setosa");
    expect(page.url()).toBe(`${consoleServer.baseUrl}/models/iris/iris_svc_setosa`);
    await page.goBack();
    await expect.poll(() => page.locator("main h1").innerText()).toBe("Models");
    expect(await page.inputValue("[data-testid=model-search]")).toBe("iris_svc_s");
    await expect.poll(() => cells(page, "models", 1)).toEqual(["iris_svc_setosa"]);
    // A deep link opens the page itself, and an unknown page says so.
    await open("/models/iris/iris_svc_setosa", page);
    expect(await page.locator("main h1").innerText()).toBe("iris / iris_svc_setosa");
    await open("/no/such/page", page);
    expect(await page.locator("main h1").innerText()).toBe("Not found");
    await page.close();
  });

  it("A model: versions with who pushed them, aliases and their history, what the Predictor serves, and a try-it form from its signature", async () => {
    const page = await open("/models/iris/iris_svc");
    await expect.poll(() => cells(page, "versions", 1)).toEqual(["v1"]);
    expect(await cells(page, "versions", 2)).toEqual(["production"]);
    expect(await cells(page, "versions", 3)).toEqual(["console-test"]);
    expect((await cells(page, "versions", 6))[0]).toBe("input float32[N, 4] → 3 labels");
    await expect.poll(() => cells(page, "versions", 8)).toEqual(["production"]);
    await expect.poll(() => cells(page, "versions", 9)).toEqual([predictor.address]);
    await expect.poll(() => cells(page, "alias-history", 5)).toEqual(["console-test"]);
    expect(await page.locator("[data-testid=policies-none]").count()).toBe(1);
    expect(await page.getAttribute("[data-testid=monitoring-link]", "href")).toBe("/models/iris/iris_svc/monitoring");

    // Rows generated from the feature names, prefilled with the model's sample input, over each protocol.
    const requests: string[] = [];
    page.on("request", (r) => {
      if (r.url().endsWith("PredictorService/Predict")) requests.push(r.headers()["content-type"]);
    });
    expect(await page.locator("[data-testid=try-rows] thead th").allInnerTexts()).toEqual([
      "row",
      "sepal_length_cm",
      "sepal_width_cm",
      "petal_length_cm",
      "petal_width_cm",
      "label",
      "probabilities (setosa / versicolor / virginica)",
      "remove",
    ]);
    for (const [protocol, contentType] of Object.entries({ "connect-json": "application/json", "connect-binary": "application/proto", "grpc-web": "application/grpc-web+proto" })) {
      await page.selectOption("[data-testid=protocol]", protocol);
      await page.click("[data-testid=try-predict]");
      await expect.poll(() => page.locator("[data-testid=try-label]").allInnerTexts(), { message: protocol }).toEqual(["setosa", "versicolor", "virginica"]);
      expect(requests.at(-1), protocol).toBe(contentType);
    }
    await page.selectOption("[data-testid=protocol]", "connect-json");
    await page.fill("[data-testid=try-0-3]", "");
    await page.click("[data-testid=try-predict]");
    await expect.poll(() => page.textContent("[data-testid=try-error]")).toBe("INVALID_ARGUMENT: invalid PredictRequest: rows[0].values[3]: must be finite [float.finite]");
    // JSON tensors through the Open Inference Protocol's REST binding.
    await page.check("[data-testid=try-mode-tensors]");
    await page.click("[data-testid=try-infer]");
    await expect.poll(() => page.textContent("[data-testid=try-response]")).toContain('"model_name": "iris_svc"');
    await inspect(page, "model");
    // A tensor model: its signature from the graph, and JSON tensors generated from it.
    await open("/models/diabetes/diabetes_high_risk", page);
    await expect.poll(() => cells(page, "versions", 6)).toEqual(["sex string[N, 1], measurements float32[N, 9] → label int64[N], probabilities float32[N, 2]"]);
    expect(await page.isDisabled("[data-testid=try-mode-rows]")).toBe(true);
    const request = JSON.parse(await page.inputValue("[data-testid=try-request]")) as { inputs: { name: string; datatype: string; shape: number[] }[] };
    expect(request.inputs.map((i) => [i.name, i.datatype, i.shape])).toEqual([
      ["sex", "BYTES", [1, 1]],
      ["measurements", "FP32", [1, 9]],
    ]);
    await page.click("[data-testid=try-infer]");
    await expect.poll(() => page.textContent("[data-testid=try-response]")).toContain('"model_name": "diabetes_high_risk"');
    await inspect(page, "model-tensor");
    // An image model: an image file through ClassifyImages, its top labels shown.
    await open("/models/digits/digits_image", page);
    await expect.poll(() => page.isChecked("[data-testid=try-mode-image]")).toBe(true);
    const { images, levels } = (JSON.parse(await readFile(join(repoRoot, "test/fixtures/tensor-models.json"), "utf8")) as { digits_image: { levels: number; images: { pixels: number[]; label: string }[] } }).digits_image;
    const digit = images.find((d) => d.label === "0")!;
    const png = join(artifactDir, "zero.png");
    await sharp(Buffer.from(digit.pixels.map((v) => Math.round((v * 255) / levels))), { raw: { width: 8, height: 8, channels: 1 } }).resize(64, 64, { kernel: "nearest" }).png().toFile(png);
    await page.setInputFiles("[data-testid=try-image-file]", png);
    await page.click("[data-testid=try-classify]");
    await expect.poll(() => page.locator("[data-testid=try-top] li strong").allInnerTexts()).toHaveLength(5);
    expect((await page.locator("[data-testid=try-top] li strong").allInnerTexts())[0]).toBe("0");
    await inspect(page, "model-image");
    await page.close();
  });

  it("Experiments: lists a model's runs, and compares two side by side with a chart per metric", async () => {
    const client = registryApi();
    const { model } = await client.getModelByName({ projectName: "iris", name: "iris_svc" });
    const runs: { modelVersionId: string; parameters: Record<string, number | string>; evaluations: Record<string, number>; trainingDataset: string }[] = [
      { modelVersionId: "svc-c1", parameters: { C: 1, kernel: "rbf" }, evaluations: { accuracy: 0.93, f1: 0.92 }, trainingDataset: "iris.json#train" },
      { modelVersionId: "svc-c10", parameters: { C: 10, kernel: "rbf" }, evaluations: { accuracy: 0.97, f1: 0.96 }, trainingDataset: "iris.json#train" },
      { modelVersionId: "svc-linear", parameters: { C: 1, kernel: "linear" }, evaluations: { accuracy: 0.9 }, trainingDataset: "iris.json#train" },
    ];
    for (const r of runs) await client.createExperiment({ modelId: model!.id, ...r });
    const page = await open("/models/iris/iris_svc");
    await expect.poll(() => page.locator("[data-testid=experiments-link]").innerText()).toBe("Experiments (3)");
    await page.click("[data-testid=experiments-link]");
    await expect.poll(() => cells(page, "experiments", 2)).toEqual(["svc-c1", "svc-c10", "svc-linear"]);
    expect(await page.isDisabled("[data-testid=compare]")).toBe(true);
    await page.check("[data-testid=pick-svc-c1]");
    await page.check("[data-testid=pick-svc-c10]");
    await inspect(page, "experiments");
    await page.click("[data-testid=compare]");
    await expect.poll(() => page.locator("[data-testid=comparison] thead th").allInnerTexts()).toEqual(["what", "svc-c1", "svc-c10"]);
    expect(page.url()).toMatch(/\/models\/iris\/iris_svc\/experiments\/compare\?ids=[^,]+,[^,]+$/);
    const row = (what: string) => page.locator("[data-testid=comparison] tbody tr", { hasText: what }).first();
    expect(await row("parameter C").getAttribute("data-differs")).toBe("true");
    expect(await row("parameter kernel").getAttribute("data-differs")).toBe("false");
    expect(await row("evaluation accuracy").locator("td").allInnerTexts()).toEqual(["0.9300", "0.9700"]);
    expect(await page.getAttribute("[data-testid=metric-accuracy]", "data-values")).toBe("0.93,0.97");
    expect(await page.getAttribute("[data-testid=metric-f1]", "data-values")).toBe("0.92,0.96");
    expect(await page.locator("[data-testid=metric-accuracy] canvas").count()).toBe(1);
    await inspect(page, "experiments-compare");
    // The comparison is a deep link: a reload shows the same, and a bad one says why.
    await page.reload();
    await expect.poll(() => page.locator("[data-testid=comparison] thead th").count()).toBe(3);
    await open("/models/iris/iris_svc/experiments/compare?ids=only-one", page);
    await expect.poll(() => page.textContent("[data-testid=compare-error]")).toBe("INVALID_ARGUMENT: a comparison takes 2 to 5 experiments, got 1");
    await page.close();
  });

  it("Registry writes: creates a project and a model, edits the description and tags, pushes versions from files, and moves an alias once confirmed", async () => {
    const page = await open("/models");
    await page.fill("[data-testid=new-project-name]", "console_project");
    await page.fill("[data-testid=new-project-description]", "made in the browser");
    await page.click("text=Create project");
    await expect.poll(() => page.textContent("[data-testid=new-project-done]")).toBe("created project console_project");
    // A duplicate name: the registry's code and message.
    await page.click("text=Create project");
    await expect.poll(() => page.textContent("[data-testid=new-project-error]")).toBe('ALREADY_EXISTS: project "console_project" already exists');
    await page.fill("[data-testid=project-description-console_project]", "made and described in the browser");
    await page.locator("[data-testid=project-description-console_project] + button").click();
    await expect.poll(() => page.textContent("[data-testid=projects-done]")).toBe("description of console_project saved");
    const { project } = await registryApi().getProjectByName({ name: "console_project" });
    expect(project!.description).toBe("made and described in the browser");
    await expect.poll(() => page.locator("[data-testid=new-model-project] option:checked").innerText()).toBe("console_project");
    await page.fill("[data-testid=new-model-name]", "console_svc");
    await page.click("text=Create model");
    await expect.poll(() => page.locator("main h1").innerText()).toBe("console_project / console_svc");

    await page.fill("[data-testid=model-description]", "an SVC pushed from the console");
    await page.click("text=Save description");
    await expect.poll(() => page.textContent("[data-testid=about-done]")).toBe("description saved");
    await page.fill("[data-testid=tag-key]", "owner");
    await page.fill("[data-testid=tag-value]", "ml-team");
    await page.click("text=Set tag");
    await expect.poll(() => page.locator("[data-testid=model-tags] code").allInnerTexts()).toEqual(["owner=ml-team"]);
    const { model } = await registryApi().getModelByName({ projectName: "console_project", name: "console_svc" });
    expect([model!.description, model!.tags]).toEqual(["an SVC pushed from the console", { owner: "ml-team" }]);

    // Picked files whose metadata names another model: refused with the registry's code, nothing stored.
    await open("/models/iris/iris_svc_setosa", page);
    await page.setInputFiles("[data-testid=push-onnx]", join(fixtureVersion, "model.onnx"));
    await page.setInputFiles("[data-testid=push-metadata]", join(fixtureVersion, "metadata.json"));
    await page.click("[data-testid=push-submit]");
    await expect.poll(() => page.textContent("[data-testid=push-error]")).toMatch(/^INVALID_ARGUMENT: metadata.json: name is "iris_svc", expected "iris_svc_setosa"/);
    expect(await cells(page, "versions", 1)).toEqual(["v1"]);

    // Both files dropped on the form at once, then pushed with an alias: the iris SVC again, its metadata renamed.
    await open("/models/console_project/console_svc", page);
    const metadata = JSON.parse(await readFile(join(fixtureVersion, "metadata.json"), "utf8")) as { name: string };
    const renamed = Buffer.from(JSON.stringify({ ...metadata, name: "console_svc" }));
    const consoleSvc = join(artifactDir, "console_svc");
    await mkdir(consoleSvc, { recursive: true });
    await writeFile(join(consoleSvc, "metadata.json"), renamed);
    await writeFile(join(consoleSvc, "model.onnx"), await readFile(join(fixtureVersion, "model.onnx")));
    const files = await Promise.all(["model.onnx", "metadata.json"].map(async (name) => ({ name, base64: (await readFile(join(consoleSvc, name))).toString("base64") })));
    const dataTransfer = await page.evaluateHandle(`(() => {
      const transfer = new DataTransfer();
      for (const f of ${JSON.stringify(files)}) transfer.items.add(new File([Uint8Array.from(atob(f.base64), (c) => c.charCodeAt(0))], f.name));
      return transfer;
    })()`);
    await page.dispatchEvent("[data-testid=push-form]", "drop", { dataTransfer });
    await page.fill("[data-testid=push-alias]", "staging");
    await page.click("[data-testid=push-submit]");
    await expect.poll(() => page.textContent("[data-testid=push-done]"), { timeout: 10_000 }).toBe("pushed version 1 (staging)");
    await expect.poll(() => cells(page, "versions", 2)).toEqual(["staging"]);
    expect(await cells(page, "versions", 3)).toEqual(["console"]);
    const stored = await registryApi().getModelVersion({ modelId: model!.id, version: 1 });
    expect(stored.modelVersion!.files.map((f) => [f.name, Number(f.sizeBytes)])).toEqual([
      ["model.onnx", (await readFile(join(fixtureVersion, "model.onnx"))).length],
      ["metadata.json", renamed.length],
    ]);
    await page.setInputFiles("[data-testid=push-onnx]", join(consoleSvc, "model.onnx"));
    await page.setInputFiles("[data-testid=push-metadata]", join(consoleSvc, "metadata.json"));
    await page.click("[data-testid=push-submit]");
    await expect.poll(() => page.textContent("[data-testid=push-done]"), { timeout: 10_000 }).toBe("pushed version 2");

    // Moving an alias asks first: cancel leaves it, confirm moves it and the history shows it.
    await page.fill("[data-testid=alias-name]", "staging");
    await expect.poll(() => page.locator("[data-testid=alias-version] option").count()).toBe(2);
    await page.selectOption("[data-testid=alias-version]", "2");
    await page.click("[data-testid=move-alias]");
    await expect.poll(() => page.textContent("[data-testid=confirm-question]")).toBe(
      "Move staging of console_svc from version 1 to version 2? Every Predictor serving it switches within seconds.",
    );
    await inspect(page, "move-alias-dialog");
    await page.keyboard.press("Escape");
    await expect.poll(() => page.locator("[data-testid=confirm-dialog]").isVisible()).toBe(false);
    expect(await cells(page, "versions", 2)).toEqual(["staging", "—"]);
    await page.click("[data-testid=move-alias]");
    await page.click("[data-testid=confirm-yes]");
    await expect.poll(() => page.textContent("[data-testid=alias-done]")).toBe("staging → version 2");
    await expect.poll(() => cells(page, "versions", 2)).toEqual(["—", "staging"]);
    await expect.poll(() => page.locator("[data-testid=alias-history] tbody tr").first().locator("td").allInnerTexts()).toEqual([
      expect.any(String),
      "staging",
      "v1",
      "v2",
      "console",
      "", // why: a person's move has no reason of the registry's
    ]);
    await inspect(page, "model-after-writes");
    await page.close();
  });

  it("the model's and the services' charts move under ghz load, from the /metrics the console's server reads", async () => {
    const page = await open("/models/iris/iris_svc");
    const services = await open("/services");
    const browserCalls: string[] = [];
    for (const p of [page, services]) p.on("request", (r) => browserCalls.push(r.url()));
    const ghz = run(tools.ghz, [
      "--insecure",
      "--call",
      "mlmesh.predictor.v1.PredictorService/Predict",
      "-d",
      JSON.stringify({ model: "iris_svc", rows: [{ values: [5.1, 3.5, 1.4, 0.2] }] }),
      "--concurrency",
      "4",
      "--connections",
      "1",
      "--duration",
      "8s",
      predictor.address,
    ]);
    const last = (p: Page, chart: string) => p.getAttribute(`[data-testid=${chart}]`, "data-last").then(Number);
    await expect.poll(() => last(page, "model-history-rps"), { timeout: 15_000 }).toBeGreaterThan(10);
    await expect.poll(() => last(page, "model-history-latency"), { timeout: 10_000 }).toBeGreaterThan(0);
    expect(Number(await page.getAttribute("[data-testid=model-history-rps]", "data-points"))).toBeGreaterThanOrEqual(2);
    await expect.poll(() => last(services, "live-predictor-rps"), { timeout: 10_000 }).toBeGreaterThan(10);
    await expect.poll(() => services.locator("[data-testid=live-predictor-p99-value]").innerText()).toMatch(/^\d+(\.\d\d)? ms$/);
    await expect.poll(() => last(services, "history-predictor-rps"), { timeout: 10_000 }).toBeGreaterThan(10);
    expect((await ghz).code).toBe(0);
    // The charts moved with the load: the Models page shows the traffic too.
    const models = await open("/models?q=iris_svc");
    await expect.poll(async () => Number.parseFloat((await cells(models, "models", 6))[0])).toBeGreaterThan(0);
    // The browser asked the console's server, never the services' /metrics.
    expect(browserCalls.filter((url) => url.endsWith("/metrics"))).toEqual([]);
    await inspect(page, "model-under-load");
    await Promise.all([page.close(), services.close(), models.close()]);
  });

  it("Batch: runs with their outcome, items filtered by state, registering rows followed by WatchItem, and an item's own watch page", async () => {
    const page = await open("/batch");
    await page.fill("[data-testid=register-rows]", "5.1, 3.5, 1.4, 0.2\n6.3, 3.3, 6.0, 2.5\n5.1, 3.5, 1.4");
    await page.click("[data-testid=register]");
    await expect.poll(() => cells(page, "followed-items", 2), { timeout: 15_000 }).toEqual(["PREDICTED", "PREDICTED", "FAILED"]);
    expect(await cells(page, "followed-items", 3)).toEqual(["setosa", "virginica", ""]);
    expect((await cells(page, "followed-items", 4))[2]).toMatch(/^the item has 3 values; iris_svc v1 takes 4/);
    await expect.poll(() => page.textContent("[data-testid=job-counts]")).toMatch(/0 pending, 2 predicted, 1 failed$/);
    await expect.poll(async () => (await cells(page, "runs", 3)).includes("ok")).toBe(true);
    await page.selectOption("[data-testid=item-state]", "3");
    expect(page.url()).toBe(`${consoleServer.baseUrl}/batch?state=3`);
    await expect.poll(() => cells(page, "items", 2)).toEqual(["FAILED"]);
    await page.selectOption("[data-testid=item-state]", "2");
    await expect.poll(() => cells(page, "items", 2)).toEqual(["PREDICTED", "PREDICTED"]);
    await inspect(page, "batch");
    await page.locator("[data-testid=items] tbody a").first().click();
    await expect.poll(() => page.textContent("[data-testid=watch-state]")).toBe("PREDICTED (final)");
    expect(await page.textContent("[data-testid=watch-label]")).toBe("setosa");
    await inspect(page, "batch-item");
    await page.close();
  });

  it("Proxy: backends with their circuits, per-backend latency, and labels predicted through the Proxy", async () => {
    const page = await open("/proxy");
    await expect.poll(() => cells(page, "backends", 1)).toEqual(["setosa", "versicolor", "virginica"]);
    expect(await cells(page, "backends", 4)).toEqual(["yes", "yes", "yes"]);
    expect(await cells(page, "backends", 6)).toEqual(["CLOSED", "CLOSED", "CLOSED"]);
    await page.click("[data-testid=predict-label]");
    await expect.poll(() => cells(page, "label-predictions", 2)).toEqual(["setosa", "virginica"]);
    expect(await page.locator("[data-testid=label-predictions] caption").innerText()).toBe("Answered by setosa, versicolor, virginica");
    // Per-backend lines from the Proxy's mlmesh_proxy_backend_call_duration_seconds.
    await expect.poll(() => page.locator("[data-testid=proxy-history-latency] .u-legend .u-series").allInnerTexts(), { timeout: 10_000 }).toEqual(
      expect.arrayContaining([expect.stringContaining("setosa p99"), expect.stringContaining("virginica p50")]),
    );
    await inspect(page, "proxy");
    await page.close();
  });

  it("Services: health, addresses, TLS, auth and build; a registry stopped mid-session shows as unreachable on its pages only, and recovers", async () => {
    const services = await open("/services");
    await expect.poll(() => cells(services, "services", 1)).toEqual(["registry", "predictor", "batch", "proxy", "monitor"]);
    await expect.poll(() => cells(services, "services", 2)).toEqual(["SERVING", "SERVING", "SERVING", "SERVING", "SERVING"]);
    expect(await cells(services, "services", 4)).toEqual([registry.address, predictor.address, batch.address, proxy.address, monitor.address]);
    expect(await cells(services, "services", 6)).toEqual(["off", "off", "off", "off", "off"]);
    expect(await cells(services, "services", 7)).toEqual(["off", "off", "off", "off", "off"]);
    expect((await cells(services, "services", 8))[0]).toMatch(/^0\.1\.0 \((source|[0-9a-f]{12}(\+changes)?)\), Node v20\./);
    await inspect(services, "services");

    const model = await open("/models/iris/iris_svc");
    await expect.poll(() => cells(model, "versions", 1)).toEqual(["v1"]);
    await registry.stop();
    await expect.poll(() => services.locator("[data-testid=service-registry]").getAttribute("data-health"), { timeout: 10_000 }).toBe("UNREACHABLE");
    expect(await cells(services, "services", 2)).toEqual(["unreachable", "SERVING", "SERVING", "SERVING", "SERVING"]);
    await expect.poll(() => model.locator("[data-unreachable=true]").first().innerText(), { timeout: 10_000 }).toMatch(/^Registry unreachable \(UNREACHABLE\): the registry at/);
    // What the page showed stays, and the Predictor's parts still work.
    expect(await cells(model, "versions", 1)).toEqual(["v1"]);
    await model.click("[data-testid=try-predict]");
    await expect.poll(() => model.locator("[data-testid=try-label]").allInnerTexts()).toEqual(["setosa", "versicolor", "virginica"]);
    await model.screenshot({ path: join(screenshots, "model-registry-down.png"), fullPage: true });
    const batchPage = await open("/batch");
    await expect.poll(() => batchPage.textContent("[data-testid=job-counts]")).toMatch(/pending/);
    expect(await batchPage.locator("[data-unreachable]").count()).toBe(0);

    registry = await startService("registry", { ...registryEnv, REGISTRY_PORT: registry.address.split(":")[1] });
    await expect.poll(() => services.locator("[data-testid=service-registry]").getAttribute("data-health"), { timeout: 15_000 }).toBe("SERVING");
    await expect.poll(() => model.locator("[data-unreachable]").count(), { timeout: 15_000 }).toBe(0);
    expect(await cells(model, "versions", 1)).toEqual(["v1"]);
    await Promise.all([services.close(), model.close(), batchPage.close()]);
  });

  it("Monitoring: requests, outlier rate and drift per window as charts, alerts, records; a request id opens its record", async () => {
    const predict = clientFor(PredictorService, predictor.baseUrl, "grpc");
    const iris = (JSON.parse(await readFile(join(repoRoot, "test/fixtures/iris.json"), "utf8")) as { rows: { values: number[] }[] }).rows.map((r) => r.values);
    const pick = () => iris[Math.floor(Math.random() * iris.length)];
    // Three windows of iris rows, then far rows and longer petals: an outlier alert and drift.
    const sendFor = async (ms: number, row: () => number[]) => {
      for (const until = Date.now() + ms; Date.now() < until; ) await predict.predict({ model: "iris_svc", rows: Array.from({ length: 40 }, () => ({ values: row() })) });
    };
    await sendFor(3000, pick);
    await sendFor(2500, () => (Math.random() < 0.5 ? [20, 0.5, 20, 10] : ((r) => [r[0], r[1], r[2] + 2, r[3]])(pick())));
    const requestId = "console-monitoring-1";
    await predict.predict({ model: "iris_svc@production", rows: [{ values: [20, 0.5, 20, 10] }, { values: [5.1, 3.5, 1.4, 0.2] }] }, { headers: { "x-request-id": requestId } });

    const model = await open("/models/iris/iris_svc");
    await expect.poll(() => model.textContent("[data-testid=firing-count]"), { timeout: 10_000 }).toMatch(/alert\(s\) firing/);
    await model.click("[data-testid=monitoring-link]");
    await model.locator("[data-testid=drift-charts]").waitFor();
    const page = model;
    await expect.poll(async () => Number(await page.getAttribute("[data-testid=monitor-requests]", "data-points")), { timeout: 10_000 }).toBeGreaterThanOrEqual(4);
    await expect.poll(async () => Number(await page.getAttribute("[data-testid=monitor-outliers]", "data-last"))).toBeGreaterThan(10);
    expect(Number(await page.getAttribute("[data-testid=monitor-psi]", "data-points"))).toBeGreaterThanOrEqual(3);
    await expect.poll(() => page.locator("[data-testid=alerts] tr[data-state=firing]").count()).toBeGreaterThanOrEqual(1);
    expect((await cells(page, "alerts", 2)).join(" ")).toMatch(/outlier rate/);

    // A record by its request id: the rows, their probabilities and outlier scores, from the link in the table.
    await page.check("[data-testid=outliers-only]");
    await expect.poll(() => page.locator("[data-testid=record-link]").first().innerText()).toBe(requestId);
    await page.locator("[data-testid=record-link]").first().click();
    await page.locator("[data-testid=record-rows]").waitFor();
    expect(page.url()).toContain(`/models/iris/iris_svc/monitoring?request=${requestId}`);
    expect(await cells(page, "record-rows", 2)).toEqual(["20, 0.5, 20, 10", "5.1, 3.5, 1.4, 0.2"]);
    expect(await page.locator("[data-testid=record-rows] td[data-outlier=yes]").count()).toBe(1);
    await expect.poll(() => page.textContent("[data-testid=record-detail]")).toContain("iris_svc v1 (@production)");
    await inspect(page, "monitoring");
    // A deep link opens the same record.
    const deep = await open(`/models/iris/iris_svc/monitoring?request=${requestId}`);
    await deep.locator("[data-testid=record-rows]").waitFor();
    await Promise.all([page.close(), deep.close()]);
  });

  it("is usable by keyboard and at phone width, and measures the bundle and the first render", async () => {
    const page = await open("/models");
    await page.keyboard.press("Tab");
    expect(await page.evaluate<string>("document.activeElement.textContent")).toBe("Skip to content");
    await page.keyboard.press("Tab"); // the brand
    await page.keyboard.press("Tab");
    await page.keyboard.press("Tab");
    expect(await page.evaluate<string>("document.activeElement.textContent")).toBe("Batch");
    await page.keyboard.press("Enter");
    await expect.poll(() => page.evaluate<string>('document.activeElement.tagName + " " + document.activeElement.textContent')).toBe("H1 Batch");
    expect(page.url()).toBe(`${consoleServer.baseUrl}/batch`);
    await page.close();

    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, bypassCSP: true, isMobile: true });
    for (const [path, name] of [
      ["/models", "phone-models"],
      ["/models/iris/iris_svc", "phone-model"],
      ["/services", "phone-services"],
    ]) {
      const p = await phone.newPage();
      await open(path, p);
      await p.waitForTimeout(500);
      // Only tables scroll sideways (in their own box); the page itself fits.
      expect(await p.evaluate<number[]>("[document.documentElement.scrollWidth, window.innerWidth]"), name).toEqual([390, 390]);
      await inspect(p, name);
    }
    await phone.close();

    // Bundle size, and the first render of the Models page (navigation to its first table row).
    const sizes = Object.fromEntries(
      await Promise.all(
        ["/app.js", "/app.css"].map(async (path) => {
          const body = Buffer.from(await (await fetch(`${consoleServer.baseUrl}${path}`)).arrayBuffer());
          return [path, { bytes: body.length, gzip: gzipSync(body).length }] as const;
        }),
      ),
    );
    expect(sizes["/app.js"].gzip).toBeLessThan(150_000);
    // From navigation: the frame painted (first contentful paint), and the models' first row shown.
    const paints: number[] = [];
    const rows: number[] = [];
    for (let i = 0; i < 5; i++) {
      const p = await context.newPage();
      await p.goto(`${consoleServer.baseUrl}/models`);
      await p.locator("[data-testid=models] tbody tr").first().waitFor();
      rows.push(await p.evaluate<number>("performance.now()"));
      paints.push(await p.evaluate<number>('performance.getEntriesByName("first-contentful-paint")[0].startTime'));
      await p.close();
    }
    const median = (values: number[]) => [...values].sort((a, b) => a - b)[2];
    const measured = { sizes, firstContentfulPaintMs: median(paints), firstModelRowMs: median(rows), runs: { paints, rows } };
    await writeFile(join(screenshots, "measurements.json"), `${JSON.stringify(measured, null, 2)}\n`);
  });

  it("is refused by the browser on an origin the services do not list in CORS_ORIGINS", async () => {
    const page = await context.newPage();
    const failed: string[] = [];
    page.on("requestfailed", (request) => failed.push(request.url())); // before the page's first call
    await page.goto(`${strangerConsole.baseUrl}/models`);
    await expect.poll(() => page.locator("[data-unreachable]").first().innerText()).toBe(
      `Registry unreachable (UNREACHABLE): the registry at ${registry.baseUrl} did not answer this page (is it running, and does its CORS_ORIGINS list ${new URL(strangerConsole.baseUrl).origin}?). Retrying every few seconds.`,
    );
    expect(failed.some((url) => url.startsWith(`${registry.baseUrl}/mlmesh.registry.v1.ModelRegistryService/`))).toBe(true);
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

  it("Traffic control: an alias's policy and its shadow comparisons; a rollout started from the form, paused, resumed and aborted after a confirmation", async () => {
    const api = registryApi();
    const { model } = await api.getModelByName({ projectName: "iris", name: "iris_svc" });
    const modelId = model!.id;
    await pushModelFolder(registryClient(registry.address, "console-test"), join(repoRoot, "test/fixtures/models/iris_svc/2"), { modelId, modelName: "iris_svc" });
    await api.setModelVersionAlias({ modelId, alias: "canary", version: 1 });
    await api.setTrafficPolicy({ modelId, alias: "canary", policy: { shadows: [{ version: 2, samplePercent: 100 }] } });
    // Calls on the alias once the Predictor follows the policy: each is copied to v2 and compared.
    const predict = clientFor(PredictorService, predictor.baseUrl, "grpc");
    await expect
      .poll(async () => {
        let arm: string | null = null;
        await predict.predict({ model: "iris_svc@canary", rows: [{ values: [5.1, 3.5, 1.4, 0.2] }] }, { onHeader: (h) => (arm = h.get("x-mlmesh-arm")) });
        return arm;
      }, { timeout: 15_000 })
      .toBe("v1");
    for (let i = 0; i < 40; i++) await predict.predict({ model: "iris_svc@canary", rows: [{ values: [5.1, 3.5, 1.4, 0.2] }, { values: [6.7, 3.0, 5.2, 2.3] }] });

    const page = await open("/models/iris/iris_svc");
    await expect.poll(() => page.textContent("[data-testid=policy-canary]")).toBe("shadow v2 (100 %)");
    await expect.poll(() => cells(page, "shadow-comparisons", 2), { timeout: 10_000 }).toEqual(["v2"]);
    expect(Number((await cells(page, "shadow-comparisons", 3))[0])).toBeGreaterThanOrEqual(40);
    expect((await cells(page, "shadow-comparisons", 5))[0]).toMatch(/^\d+\.\d % of \d+ rows$/);
    expect(await cells(page, "version-traffic", 1)).toContain("v1");

    // A rollout of "canary" to v2 from the form.
    await page.selectOption("[data-testid=rollout-alias]", "canary");
    await page.selectOption("[data-testid=rollout-version]", "2");
    await page.fill("[data-testid=rollout-steps]", "20, 100");
    await page.fill("[data-testid=rollout-interval]", "3600");
    await page.click("[data-testid=start-rollout]");
    await expect.poll(() => page.textContent("[data-testid=start-rollout-done]")).toBe("rollout of canary to v2 started");
    const row = page.locator("[data-testid=rollouts] tbody tr").first();
    await expect.poll(() => row.locator("[data-testid=rollout-state]").innerText()).toBe("running");
    await expect.poll(() => page.textContent("[data-testid=policy-canary]")).toBe("v1 80 % · v2 20 %");
    await row.locator("text=Pause").click();
    await expect.poll(() => row.locator("[data-testid=rollout-state]").innerText()).toBe("paused");
    await row.locator("text=Resume").click();
    await expect.poll(() => row.locator("[data-testid=rollout-state]").innerText()).toBe("running");
    await row.locator("text=Abort…").click();
    expect(await page.textContent("[data-testid=confirm-question]")).toBe("Send every call of canary back to version 1 and stop the rollout?");
    await page.click("[data-testid=confirm-yes]");
    await expect.poll(() => row.locator("[data-testid=rollout-state]").innerText()).toBe("aborted");
    // The policy from before the rollout is back, and the history says why.
    await expect.poll(() => page.textContent("[data-testid=policy-canary]")).toBe("shadow v2 (100 %)");
    await expect.poll(async () => (await cells(page, "alias-history", 6))[0]).toMatch(/^rollout .*: aborted by console$/);
    await inspect(page, "model-traffic-control");
    await page.close();
    await api.deleteTrafficPolicy({ modelId, alias: "canary" });
    await api.deleteModelVersionAlias({ modelId, alias: "canary" });
  });

  it("serves the app for every page path, its files, and 404 for other files", async () => {
    for (const path of ["/", "/models/iris/iris_svc", "/batch/items/x"]) {
      const response = await fetch(`${consoleServer.baseUrl}${path}`);
      expect([path, response.status, response.headers.get("content-type")]).toEqual([path, 200, "text/html; charset=utf-8"]);
      expect(response.headers.get("content-security-policy")).toMatch(/^default-src 'self'/);
    }
    expect((await fetch(`${consoleServer.baseUrl}/app.css`)).headers.get("content-type")).toBe("text/css; charset=utf-8");
    const missing = await fetch(`${consoleServer.baseUrl}/missing.js`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({ error: "/missing.js is not part of the console" });
  });
});

describe("web console with authentication on", () => {
  let registry: ServiceProcess;
  let consoleServer: ServiceProcess;
  let database: TestDatabase;
  let scratch: string;
  let browser: Browser;
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), "mlmesh-console-auth-"));
    const lines: string[] = [];
    for (const [role, name] of [["reader", "rita-reader"], ["admin", "ada-admin"]]) {
      const { code, stdout } = await run(process.execPath, [join(repoRoot, "bin/mlmesh.js"), "token", "new", role, name]);
      expect(code).toBe(0);
      tokens[role] = /^token: (\S+)$/m.exec(stdout)![1];
      lines.push(/^tokens file line: (.+)$/m.exec(stdout)![1]);
    }
    await writeFile(join(scratch, "tokens"), `${lines.join("\n")}\n`);
    await writeFile(join(scratch, "console-token"), `${tokens.reader}\n`);
    const consolePort = await freePort();
    database = await freshDatabase("sqlite");
    const auth = { AUTH_TOKENS_FILE: join(scratch, "tokens") };
    registry = await startService("registry", { ...auth, CORS_ORIGINS: `http://127.0.0.1:${consolePort}`, DATABASE_URL: database.url, ARTIFACT_DIR: join(scratch, "artifacts") });
    consoleServer = await startService("console", {
      ...auth,
      CONSOLE_PORT: String(consolePort),
      CONSOLE_REGISTRY_URL: registry.baseUrl,
      CONSOLE_METRICS_URLS: `registry=${registry.baseUrl}`,
      MESH_TOKEN_FILE: join(scratch, "console-token"), // the console's server reads /metrics as a reader
    });
    browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs });
  });
  afterAll(async () => {
    await browser?.close();
    await Promise.all([registry, consoleServer].map((s) => s?.stop()));
    await database?.drop();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it("writes under the token's role: none is UNAUTHENTICATED, a reader's write PERMISSION_DENIED, an admin's done", async () => {
    const page = await browser.newPage();
    await page.goto(`${consoleServer.baseUrl}/models`);
    await expect.poll(() => page.locator("[data-testid=error]").first().innerText()).toMatch(/^UNAUTHENTICATED: /);
    const useToken = async (token: string) => {
      await page.fill("[data-testid=token]", token);
      await page.press("[data-testid=token]", "Tab"); // the change is taken when the field is left
    };
    await useToken(tokens.reader);
    await expect.poll(() => page.textContent("[data-testid=model-count]")).toBe("0 of 0 models");
    await page.fill("[data-testid=new-project-name]", "guarded");
    await page.click("text=Create project");
    await expect.poll(() => page.textContent("[data-testid=new-project-error]")).toMatch(/^PERMISSION_DENIED: .*rita-reader/);
    await useToken(tokens.admin);
    await page.click("text=Create project");
    await expect.poll(() => page.textContent("[data-testid=new-project-done]")).toBe("created project guarded");
    // The console's own endpoints want a reader too, and the Services page says authentication is on.
    expect((await fetch(`${consoleServer.baseUrl}/services.json`)).status).toBe(401);
    await page.click("nav >> text=Services");
    await expect.poll(() => page.locator("[data-testid=service-registry] td").nth(5).innerText()).toBe("on");
    // The token stays in this tab only.
    expect(await page.evaluate<string | null>('sessionStorage.getItem("mlmesh-token")')).toBe(tokens.admin);
    expect(await page.evaluate<string | null>('localStorage.getItem("mlmesh-token")')).toBeNull();
    await page.close();
  });
});
