// The console page's script, bundled for the browser by services/console/site.ts. It calls the
// mesh with the generated descriptors and @connectrpc/connect-web: no hand-written request code.
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { BatchJobService, ItemState, type Item } from "../../../gen/mlmesh/batch/v1/batch_pb.js";
import { PredictorService } from "../../../gen/mlmesh/predictor/v1/predictor_pb.js";
import { CircuitState, ProxyService } from "../../../gen/mlmesh/proxy/v1/proxy_pb.js";
import { ModelRegistryService } from "../../../gen/mlmesh/registry/v1/registry_pb.js";

interface Endpoints {
  readonly predictorUrl: string;
  readonly proxyUrl: string;
  readonly batchUrl: string;
  readonly registryUrl: string;
}

type Protocol = "connect-json" | "connect-binary" | "grpc-web";

const element = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const protocolSelect = element<HTMLSelectElement>("protocol");
const modelSelect = element<HTMLSelectElement>("model");
const rowsInput = element<HTMLTextAreaElement>("rows");
const errorText = element<HTMLParagraphElement>("error");
const tokenInput = element<HTMLInputElement>("token");

// The bearer token lives in this tab's sessionStorage only: it is gone when the tab closes.
tokenInput.value = sessionStorage.getItem("mlmesh-token") ?? "";
tokenInput.addEventListener("change", () => sessionStorage.setItem("mlmesh-token", tokenInput.value.trim()));

/** The Authorization header of the page's calls, when a token was given. */
function authorization(): Record<string, string> {
  const token = tokenInput.value.trim();
  return token === "" ? {} : { authorization: `Bearer ${token}` };
}

const withToken: Interceptor = (next) => (request) => {
  for (const [name, value] of Object.entries(authorization())) request.header.set(name, value);
  return next(request);
};

function transport(baseUrl: string, protocol: Protocol): Transport {
  if (protocol === "grpc-web") return createGrpcWebTransport({ baseUrl, interceptors: [withToken] });
  return createConnectTransport({ baseUrl, useBinaryFormat: protocol === "connect-binary", interceptors: [withToken] });
}

function clients(endpoints: Endpoints) {
  const protocol = protocolSelect.value as Protocol;
  return {
    predictor: createClient(PredictorService, transport(endpoints.predictorUrl, protocol)),
    proxy: createClient(ProxyService, transport(endpoints.proxyUrl, protocol)),
    batch: createClient(BatchJobService, transport(endpoints.batchUrl, protocol)),
    registry: createClient(ModelRegistryService, transport(endpoints.registryUrl, protocol)),
  };
}

/** Replaces a table's body with one row per entry; cells are text, never HTML. */
function fillTable(testId: string, rows: readonly (readonly (string | number)[])[]): void {
  const body = document.querySelector(`[data-testid="${testId}"] tbody`)!;
  body.replaceChildren(
    ...rows.map((cells) => {
      const tr = document.createElement("tr");
      for (const cell of cells) tr.appendChild(document.createElement("td")).textContent = String(cell);
      return tr;
    }),
  );
}

function itemCells(item: Item): string[] {
  const detail = item.state === ItemState.FAILED ? item.error : item.probabilities.map((p) => p.toFixed(4)).join(" / ");
  return [item.id, ItemState[item.state], item.label, detail];
}

/** The textarea's rows; a value that is no number goes out as NaN, for the service to refuse. */
function parseRows(): { values: number[] }[] {
  return rowsInput.value
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "")
    .map((line) => ({ values: line.split(",").map((v) => (v.trim() === "" ? Number.NaN : Number(v))) }));
}

interface LivePoint {
  readonly t: number;
  readonly rps: number;
  readonly errorRate: number;
  readonly p99Ms: number | null;
}

/** A cell with a small line chart of `values` (scaled to their maximum) and the latest value. */
function chart(testId: string, values: readonly number[], latest: string): HTMLTableCellElement {
  const width = 160;
  const height = 32;
  const max = Math.max(...values, 1e-9);
  const step = values.length > 1 ? width / (values.length - 1) : 0;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  svg.dataset.testid = testId;
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", values.map((v, i) => `${(i * step).toFixed(1)},${(height - 1 - (v / max) * (height - 2)).toFixed(1)}`).join(" "));
  svg.appendChild(line);
  const cell = document.createElement("td");
  cell.appendChild(svg);
  cell.appendChild(document.createElement("span")).textContent = latest;
  return cell;
}

/** A status code as gRPC spells it: INVALID_ARGUMENT, not InvalidArgument. */
function statusName(code: Code): string {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** Runs one action, showing a failure as its gRPC status and message. */
async function run(action: () => Promise<void>): Promise<void> {
  errorText.textContent = "";
  try {
    await action();
  } catch (err) {
    const error = ConnectError.from(err);
    // fetch fails with a TypeError both when a service is down and when it refuses this page's
    // origin (CORS): the browser does not tell the page which, so the message names both.
    errorText.textContent =
      err instanceof TypeError || error.cause instanceof TypeError
        ? `network error: the service did not answer this page (is it running, and does its CORS_ORIGINS list ${location.origin}?)`
        : `${statusName(error.code)}: ${error.rawMessage}`;
  }
}

async function main(): Promise<void> {
  const endpoints = (await (await fetch("/config.json")).json()) as Endpoints;
  element("endpoints").textContent = [
    `${endpoints.predictorUrl} (Predictor)`,
    `${endpoints.proxyUrl} (Proxy)`,
    `${endpoints.batchUrl} (BatchJob)`,
    `${endpoints.registryUrl} (ModelRegistry)`,
  ].join(", ");

  const loadModels = () =>
    run(async () => {
      const { models } = await clients(endpoints).predictor.listModels({});
      fillTable("models", models.map((m) => [m.name, m.version, m.labels.join(", "), m.featureNames.join(", ")]));
      modelSelect.replaceChildren(...models.map((m) => new Option(`${m.name} v${m.version}`, `${m.name}@${m.version}`)));
    });

  element("predict").addEventListener("click", () =>
    run(async () => {
      fillTable("predictions", []);
      const [model, version] = modelSelect.value.split("@");
      const response = await clients(endpoints).predictor.predict({ model, version: Number(version), rows: parseRows() });
      fillTable(
        "predictions",
        response.predictions.map((p, i) => [i, p.label, p.probability.toFixed(4), p.probabilities.map((x) => x.toFixed(4)).join(" / ")]),
      );
    }),
  );

  element("predict-label").addEventListener("click", () =>
    run(async () => {
      fillTable("predictions", []);
      const response = await clients(endpoints).proxy.predictLabel({ rows: parseRows() });
      const answered = `answered: ${response.answeredBackends.join(", ")}`;
      fillTable("predictions", response.predictions.map((p, i) => [i, p.label, p.probability.toFixed(4), answered]));
    }),
  );

  element("check").addEventListener("click", () =>
    run(async () => {
      const { backends } = await clients(endpoints).proxy.checkBackends({});
      fillTable(
        "backends",
        backends.map((b) => [b.backend, b.address, b.model, b.serving ? "yes" : "no", CircuitState[b.circuit]]),
      );
    }),
  );

  element("register").addEventListener("click", () =>
    run(async () => {
      fillTable("items", []);
      const { batch } = clients(endpoints);
      const { items } = await batch.registerItems({ items: parseRows() });
      const states = [...items];
      const show = () => fillTable("items", states.map(itemCells));
      show();
      // One server stream per item; each ends when its item is predicted or failed.
      await Promise.all(
        items.map(async (item, i) => {
          for await (const update of batch.watchItem({ itemId: item.id })) {
            states[i] = update.item!;
            show();
          }
        }),
      );
    }),
  );

  const showJobStatus = async () => {
    const status = await clients(endpoints).batch.getJobStatus({ recentRuns: 1 });
    element("job-counts").textContent = `${status.pendingItems} pending, ${status.predictedItems} predicted, ${status.failedItems} failed`;
  };
  element("job-status").addEventListener("click", () => run(showJobStatus));
  element("run-job").addEventListener("click", () =>
    run(async () => {
      await clients(endpoints).batch.runJobNow({});
      await showJobStatus();
    }),
  );

  element("registry").addEventListener("click", () =>
    run(async () => {
      const { registry } = clients(endpoints);
      const [{ projects }, { models }] = await Promise.all([registry.listProjects({ pageSize: 100 }), registry.listModels({ pageSize: 100 })]);
      const projectNames = new Map(projects.map((p) => [p.id, p.name]));
      fillTable("registry", [
        ...models.map((m) => [projectNames.get(m.projectId) ?? m.projectId, m.name, m.description]),
        ...projects.filter((p) => !models.some((m) => m.projectId === p.id)).map((p) => [p.name, "(no model yet)", p.description]),
      ]);
    }),
  );

  const deployModel = element<HTMLSelectElement>("deploy-model");
  const aliasName = element<HTMLInputElement>("alias-name");
  const aliasVersion = element<HTMLSelectElement>("alias-version");
  /** The selected model's versions (registry) beside what the Predictor serves, and its alias history. */
  const showDeployment = async () => {
    const modelId = deployModel.value;
    if (modelId === "") return;
    const { registry, predictor } = clients(endpoints);
    const modelName = deployModel.selectedOptions[0].dataset.name!;
    const [{ modelVersions }, { changes }, served] = await Promise.all([
      registry.listModelVersions({ modelId, pageSize: 1000 }),
      registry.listAliasHistory({ modelId, pageSize: 20 }),
      predictor.listModels({ pageSize: 1000 }),
    ]);
    const onPredictor = new Map(served.models.filter((m) => m.name === modelName).map((m) => [m.version, m.aliases]));
    fillTable(
      "versions",
      modelVersions.map((v) => [
        v.version,
        v.aliases.join(", ") || "-",
        onPredictor.has(v.version) ? onPredictor.get(v.version)!.join(", ") || "loaded" : "-",
        v.serving.map((s) => s.predictor).join(", ") || "-",
        v.createTime ? timestampDate(v.createTime).toISOString().slice(0, 19).replace("T", " ") : "",
        v.files.find((f) => f.name === "model.onnx")?.sha256.slice(0, 12) ?? "(no artifact)",
      ]),
    );
    const selected = aliasVersion.value;
    aliasVersion.replaceChildren(...modelVersions.map((v) => new Option(`v${v.version}`, String(v.version))));
    if (selected !== "") aliasVersion.value = selected;
    fillTable(
      "alias-history",
      changes.map((c) => [
        c.changeTime ? timestampDate(c.changeTime).toISOString().slice(0, 19).replace("T", " ") : "",
        c.alias,
        c.previousVersion === 0 ? "-" : `v${c.previousVersion}`,
        c.version === 0 ? "(deleted)" : `v${c.version}`,
        c.actor,
      ]),
    );
  };
  element("load-deployments").addEventListener("click", () =>
    run(async () => {
      const { registry } = clients(endpoints);
      const [{ projects }, { models }] = await Promise.all([registry.listProjects({ pageSize: 1000 }), registry.listModels({ pageSize: 1000 })]);
      const projectNames = new Map(projects.map((p) => [p.id, p.name]));
      deployModel.replaceChildren(
        ...models.map((m) => {
          const option = new Option(`${projectNames.get(m.projectId) ?? m.projectId}/${m.name}`, m.id);
          option.dataset.name = m.name;
          return option;
        }),
      );
      await showDeployment();
    }),
  );
  deployModel.addEventListener("change", () => void run(showDeployment));
  element("deploy-refresh").addEventListener("click", () => void run(showDeployment));
  element("move-alias").addEventListener("click", () =>
    run(async () => {
      const { registry } = clients(endpoints);
      const modelId = deployModel.value;
      const alias = aliasName.value.trim();
      const version = Number(aliasVersion.value);
      if (modelId === "" || version === 0) return;
      const label = deployModel.selectedOptions[0].textContent;
      const current = await registry.getModelVersionByAlias({ modelId, alias }).then(
        (r) => `version ${r.modelVersion!.version}`,
        () => "nothing yet",
      );
      if (!confirm(`Move ${label}@${alias} from ${current} to version ${version}? Every Predictor serving it switches within seconds.`)) {
        element("deploy-status").textContent = "not moved";
        return;
      }
      await registry.setModelVersionAlias({ modelId, alias, version }, { headers: { "x-mlmesh-actor": "console" } });
      await showDeployment();
      element("deploy-status").textContent = `${label}@${alias} -> version ${version}`;
    }),
  );

  // The live panel: /live.json from the console's own server every 2 s, drawn as sparklines.
  const drawLive = async () => {
    const { services } = (await (await fetch("/live.json", { headers: authorization() })).json()) as { services: { service: string; points: LivePoint[] }[] };
    const body = document.querySelector('[data-testid="live"] tbody')!;
    body.replaceChildren(
      ...services.map(({ service, points }) => {
        const tr = document.createElement("tr");
        tr.appendChild(document.createElement("td")).textContent = service;
        const last = points.at(-1);
        tr.appendChild(chart(`live-${service}-rps`, points.map((p) => p.rps), last ? `${last.rps.toFixed(1)}/s` : "-"));
        tr.appendChild(chart(`live-${service}-errors`, points.map((p) => p.errorRate * 100), last ? `${(last.errorRate * 100).toFixed(1)} %` : "-"));
        tr.appendChild(chart(`live-${service}-p99`, points.map((p) => p.p99Ms ?? 0), last?.p99Ms != null ? `${last.p99Ms.toFixed(2)} ms` : "-"));
        return tr;
      }),
    );
  };
  const pollLive = () => void drawLive().catch(() => undefined).finally(() => setTimeout(pollLive, 2000));
  pollLive();

  protocolSelect.addEventListener("change", () => void loadModels());
  await loadModels();
  document.body.dataset.ready = "true";
}

void main();
