// The console page's script, bundled for the browser by services/console/site.ts. It calls the
// mesh with the generated descriptors and @connectrpc/connect-web: no hand-written request code.
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { PredictorService } from "../../../gen/mlmesh/predictor/v1/predictor_pb.js";
import { CircuitState, ProxyService } from "../../../gen/mlmesh/proxy/v1/proxy_pb.js";

interface Endpoints {
  readonly predictorUrl: string;
  readonly proxyUrl: string;
}

type Protocol = "connect-json" | "connect-binary" | "grpc-web";

const element = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const protocolSelect = element<HTMLSelectElement>("protocol");
const modelSelect = element<HTMLSelectElement>("model");
const rowsInput = element<HTMLTextAreaElement>("rows");
const errorText = element<HTMLParagraphElement>("error");

function transport(baseUrl: string, protocol: Protocol): Transport {
  if (protocol === "grpc-web") return createGrpcWebTransport({ baseUrl });
  return createConnectTransport({ baseUrl, useBinaryFormat: protocol === "connect-binary" });
}

function clients(endpoints: Endpoints) {
  const protocol = protocolSelect.value as Protocol;
  return {
    predictor: createClient(PredictorService, transport(endpoints.predictorUrl, protocol)),
    proxy: createClient(ProxyService, transport(endpoints.proxyUrl, protocol)),
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

/** The textarea's rows; a value that is no number goes out as NaN, for the service to refuse. */
function parseRows(): { values: number[] }[] {
  return rowsInput.value
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "")
    .map((line) => ({ values: line.split(",").map((v) => (v.trim() === "" ? Number.NaN : Number(v))) }));
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
  element("endpoints").textContent = `${endpoints.predictorUrl} (Predictor) and ${endpoints.proxyUrl} (Proxy)`;

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

  protocolSelect.addEventListener("change", () => void loadModels());
  await loadModels();
  document.body.dataset.ready = "true";
}

void main();
