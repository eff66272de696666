import { Code, ConnectError } from "@connectrpc/connect";
import { BatchJobService } from "../../gen/mlmesh/batch/v1/batch_pb.js";
import { Role } from "../../gen/mlmesh/policy/v1/policy_pb.js";
import { PredictorService } from "../../gen/mlmesh/predictor/v1/predictor_pb.js";
import { ProxyService } from "../../gen/mlmesh/proxy/v1/proxy_pb.js";
import { ModelRegistryService } from "../../gen/mlmesh/registry/v1/registry_pb.js";
import { checkHealth, ServingStatus } from "../runtime/client/health-client.js";
import type { MeshCredentials } from "../runtime/client/mesh-credentials.js";
import { buildInfo } from "../runtime/observability/build-info.js";
import { methodNotAllowed, type HttpReply, type HttpRoute } from "../runtime/serve/http-routes.js";
import type { ConsoleConfig } from "./config.js";
import type { MetricsHistory } from "./metrics-history.js";
import type { MetricsPoller } from "./metrics-poller.js";
import { prometheusHistory, type ChartSeries, type HistoryQuery } from "./prometheus-history.js";
import { parseSeriesKey, seriesKey } from "./scrape.js";

/**
 * The console's own JSON endpoints, read by the page (never the services' /metrics):
 * - GET /live.json: each followed service's last minutes, from the poller;
 * - GET /history.json: a chart's series over the last `minutes` (a service, a model by
 *   version, a Proxy by backend), from the console's history or from Prometheus;
 * - GET /services.json: each followed service's health, addresses, TLS, authentication and
 *   build, and the console's own.
 * Each is a route of the server's per-call pipeline under the READER role.
 */

/** The gRPC service whose health says a followed service is ready, by the console's name for it. */
const readinessServices: Record<string, string> = {
  registry: ModelRegistryService.typeName,
  predictor: PredictorService.typeName,
  batch: BatchJobService.typeName,
  proxy: ProxyService.typeName,
};

const json = (body: unknown): HttpReply => ({
  status: 200,
  headers: { "content-type": "application/json", "cache-control": "no-store" },
  body: Buffer.from(JSON.stringify(body)),
});

function getOnly(route: Omit<HttpRoute, "answer"> & { path: string; answer: HttpRoute["answer"] }): HttpRoute {
  return {
    ...route,
    answer(request, url, ctx) {
      if (request.method !== "GET") throw methodNotAllowed(request.method ?? "", route.path, "GET");
      return route.answer(request, url, ctx);
    },
  };
}

export function consoleApi(config: ConsoleConfig, poller: MetricsPoller, history: MetricsHistory, pollMs: number, credentials: MeshCredentials): Map<string, HttpRoute> {
  const live = getOnly({
    name: "GET /live.json",
    path: "/live.json",
    role: Role.READER,
    quiet: true, // polled every two seconds by every open page
    answer: () => json({ services: poller.live(), models: poller.modelRates() }),
  });

  const historyRoute = getOnly({
    name: "GET /history.json",
    path: "/history.json",
    role: Role.READER,
    quiet: true, // each chart asks every few seconds
    async answer(_request, url) {
      const query = historyQueryOf(url.searchParams, config);
      const maxMinutes = (config.history.fineMs + config.history.coarseMs) / 60_000;
      const minutes = Number(url.searchParams.get("minutes") ?? 60);
      if (!Number.isInteger(minutes) || minutes < 1 || minutes > maxMinutes) {
        throw new ConnectError(`minutes must be a whole number from 1 to ${maxMinutes}, got "${url.searchParams.get("minutes")}"`, Code.InvalidArgument);
      }
      const to = Date.now();
      const from = to - minutes * 60_000;
      if (config.prometheusUrl !== undefined) {
        try {
          return json({ ...query, source: "prometheus", ...(await prometheusHistory(config.prometheusUrl, query, from, to)) });
        } catch (err) {
          throw new ConnectError(`Prometheus at ${config.prometheusUrl} did not answer: ${(err as Error).message}`, Code.Unavailable);
        }
      }
      return json({ ...query, source: "console", pollSeconds: pollMs / 1000, series: ownSeries(history, query, from, to) });
    },
  });

  const services = getOnly({
    name: "GET /services.json",
    path: "/services.json",
    role: Role.READER,
    async answer() {
      const browserUrls: Record<string, string> = { registry: config.registryUrl, predictor: config.predictorUrl, batch: config.batchUrl, proxy: config.proxyUrl, monitor: config.monitorUrl };
      const states = await Promise.all(
        poller.states().map(async (state) => {
          const address = new URL(state.metricsUrl).host;
          const readiness = readinessServices[state.service];
          const [server, ready] = await Promise.all([
            checkHealth(address, "", 1000, credentials).catch(() => undefined),
            readiness === undefined ? undefined : checkHealth(address, readiness, 1000, credentials).catch(() => undefined),
          ]);
          const name = (s: ServingStatus | undefined) => (s === undefined ? "UNREACHABLE" : ServingStatus[s]);
          return {
            ...state,
            address,
            browserUrl: browserUrls[state.service],
            health: name(server),
            readiness: readiness === undefined ? undefined : { service: readiness, status: name(ready) },
          };
        }),
      );
      return json({ console: { ...buildInfo, prometheusUrl: config.prometheusUrl ?? null }, services: states });
    },
  });

  return new Map([
    ["/live.json", live],
    ["/history.json", historyRoute],
    ["/services.json", services],
  ]);
}

/** ?service=S (its calls), ?model=M (each version on every Predictor), ?service=S&by=backend (a Proxy's backends). */
function historyQueryOf(params: URLSearchParams, config: ConsoleConfig): HistoryQuery {
  const model = params.get("model");
  if (model !== null) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(model)) throw new ConnectError(`model "${model}" is not a model name`, Code.InvalidArgument);
    return { of: "model", model };
  }
  const service = params.get("service") ?? "";
  if (!config.metricsTargets.has(service)) {
    throw new ConnectError(`service "${service}" has no history; the console follows ${[...config.metricsTargets.keys()].join(", ")}`, Code.NotFound);
  }
  const by = params.get("by");
  if (by === null) return { of: "service", service };
  if (by !== "backend") throw new ConnectError(`by must be "backend", got "${by}"`, Code.InvalidArgument);
  return { of: "backends", service };
}

/** A chart's series from the console's own history. */
function ownSeries(history: MetricsHistory, query: HistoryQuery, from: number, to: number): (ChartSeries & { fineFromMs: number })[] {
  const line = (label: string, key: string) => ({ label, ...history.range(key, from, to) });
  if (query.of === "service") return [line(query.service, seriesKey(query.service, { kind: "service" }))];
  const keys = history.keys().map((key) => ({ key, ...parseSeriesKey(key) }));
  if (query.of === "backends") {
    return keys
      .flatMap(({ key, service, of }) => (service === query.service && of.kind === "backend" ? [line(of.backend, key)] : []))
      .sort((a, b) => a.label.localeCompare(b.label));
  }
  const versions = keys.flatMap(({ key, service, of }) => (of.kind === "model" && of.model === query.model ? [{ key, service, version: of.version }] : []));
  const predictors = new Set(versions.map((v) => v.service));
  return versions
    .sort((a, b) => Number(a.version) - Number(b.version) || a.service.localeCompare(b.service))
    .map((v) => line(predictors.size > 1 ? `v${v.version} on ${v.service}` : `v${v.version}`, v.key));
}
