import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { build, stop as stopEsbuild } from "esbuild";
import { Role } from "../../gen/mlmesh/policy/v1/policy_pb.js";
import type { HttpReply, HttpRoute, HttpRouter } from "../runtime/serve/http-routes.js";
import type { ConsoleConfig } from "./config.js";
import type { LiveMetrics } from "./live-metrics.js";

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
export async function loadSite(config: ConsoleConfig, live: Pick<LiveMetrics, "series">): Promise<HttpRouter> {
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

  const text = (status: number, message: string, headers: Record<string, string> = {}): HttpReply => ({
    status,
    headers: { "content-type": "text/plain; charset=utf-8", ...headers },
    body: Buffer.from(message),
  });
  const liveSeries: HttpRoute = {
    name: "GET /live.json",
    role: Role.READER,
    quiet: true, // polled every two seconds by every open page
    answer(request) {
      if (request.method !== "GET") return text(405, `${request.method} is not allowed on /live.json\n`, { allow: "GET" });
      return { status: 200, headers: { "content-type": "application/json", "cache-control": "no-store" }, body: Buffer.from(JSON.stringify({ services: live.series() })) };
    },
  };
  const files: HttpRoute = {
    name: "GET console files",
    role: Role.ANYONE,
    answer(request, url) {
      const path = url.pathname;
      const asset = assets.get(path);
      if (asset === undefined) return text(404, `${path} is not part of the console\n`);
      if (request.method !== "GET" && request.method !== "HEAD") return text(405, `${request.method} is not allowed on ${path}\n`, { allow: "GET, HEAD" });
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
  return (_method, path) => (path === "/live.json" ? liveSeries : files);
}
