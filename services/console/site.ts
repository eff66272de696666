import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { build, stop as stopEsbuild } from "esbuild";
import { Code, ConnectError } from "@connectrpc/connect";
import { Role } from "../../gen/mlmesh/policy/v1/policy_pb.js";
import { methodNotAllowed, type HttpRoute, type HttpRouter } from "../runtime/serve/http-routes.js";
import type { ConsoleConfig } from "./config.js";
import type { LiveMetrics } from "./live-metrics.js";
import type { MetricsHistory } from "./metrics-history.js";
import { prometheusHistory } from "./prometheus-history.js";

/** How often the console's server polls each service's /metrics (the live panel and the history). */
export const pollMs = 2000;

const webDir = fileURLToPath(new URL("./web/", import.meta.url));

interface Asset {
  readonly type: string;
  readonly body: Buffer;
}

/**
 * The console's files: the page, its script (web/app.ts bundled by esbuild at start-up, about
 * a second, so there is no build step to forget), the endpoints the script calls, and
 * /live.json (the live panel's series, read by the console's server from the services): two
 * routes of the server's per-call pipeline (runtime/serve/http-routes.ts). The page's files are
 * open to anyone; the series need a reader when authentication is on.
 */
export async function loadSite(config: ConsoleConfig, live: Pick<LiveMetrics, "series">, history: MetricsHistory): Promise<HttpRouter> {
  const bundle = await build({
    entryPoints: [`${webDir}app.ts`],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    write: false,
    logLevel: "silent",
  });
  // The page is bundled once: end esbuild's helper process now rather than leave it to exit.
  await stopEsbuild();
  const html = await readFile(`${webDir}index.html`);
  const assets = new Map<string, Asset>([
    ["/", { type: "text/html; charset=utf-8", body: html }],
    ["/index.html", { type: "text/html; charset=utf-8", body: html }],
    ["/app.js", { type: "text/javascript; charset=utf-8", body: Buffer.from(bundle.outputFiles[0].contents) }],
    ["/config.json", { type: "application/json", body: Buffer.from(JSON.stringify({ predictorUrl: config.predictorUrl, proxyUrl: config.proxyUrl, batchUrl: config.batchUrl, registryUrl: config.registryUrl })) }],
  ]);
  // The page may call the configured services and nothing else.
  const services = [config.predictorUrl, config.proxyUrl, config.batchUrl, config.registryUrl].join(" ");
  const csp = `default-src 'self'; connect-src 'self' ${services}; style-src 'self' 'unsafe-inline'; img-src 'self' data:`;

  const liveSeries: HttpRoute = {
    name: "GET /live.json",
    role: Role.READER,
    quiet: true, // polled every two seconds by every open page
    answer(request) {
      if (request.method !== "GET") throw methodNotAllowed(request.method ?? "", "/live.json", "GET");
      return { status: 200, headers: { "content-type": "application/json", "cache-control": "no-store" }, body: Buffer.from(JSON.stringify({ services: live.series() })) };
    },
  };
  const files: HttpRoute = {
    name: "GET console files",
    role: Role.ANYONE,
    answer(request, url) {
      const path = url.pathname;
      const asset = assets.get(path);
      if (asset === undefined) throw new ConnectError(`${path} is not part of the console`, Code.NotFound);
      if (request.method !== "GET" && request.method !== "HEAD") throw methodNotAllowed(request.method ?? "", path, "GET, HEAD");
      return {
        status: 200,
        headers: {
          "content-type": asset.type,
          "content-length": asset.body.length,
          "cache-control": "no-cache",
          "content-security-policy": csp,
          "x-content-type-options": "nosniff",
        },
        body: request.method === "HEAD" ? undefined : asset.body,
      };
    },
  };
  const historyRoute: HttpRoute = {
    name: "GET /history.json",
    role: Role.READER,
    async answer(request, url) {
      if (request.method !== "GET") throw methodNotAllowed(request.method ?? "", "/history.json", "GET");
      const service = url.searchParams.get("service") ?? "";
      if (!config.metricsTargets.has(service)) {
        throw new ConnectError(`service "${service}" has no history; the console follows ${[...config.metricsTargets.keys()].join(", ")}`, Code.NotFound);
      }
      const maxMinutes = (config.history.fineMs + config.history.coarseMs) / 60_000;
      const minutes = Number(url.searchParams.get("minutes") ?? 60);
      if (!Number.isInteger(minutes) || minutes < 1 || minutes > maxMinutes) {
        throw new ConnectError(`minutes must be a whole number from 1 to ${maxMinutes}, got "${url.searchParams.get("minutes")}"`, Code.InvalidArgument);
      }
      const to = Date.now();
      const from = to - minutes * 60_000;
      let body: unknown;
      if (config.prometheusUrl !== undefined) {
        try {
          body = { service, source: "prometheus", ...(await prometheusHistory(config.prometheusUrl, service, from, to)) };
        } catch (err) {
          throw new ConnectError(`Prometheus at ${config.prometheusUrl} did not answer: ${(err as Error).message}`, Code.Unavailable);
        }
      } else {
        const { points, fineFromMs } = history.range(service, from, to);
        body = { service, source: "console", pollSeconds: pollMs / 1000, fineFromMs, points };
      }
      return { status: 200, headers: { "content-type": "application/json", "cache-control": "no-store" }, body: Buffer.from(JSON.stringify(body)) };
    },
  };
  return (_method, path) => (path === "/live.json" ? liveSeries : path === "/history.json" ? historyRoute : files);
}
