import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { build, stop as stopEsbuild } from "esbuild";
import type { HttpHandler } from "../runtime/server.js";
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
 * /live.json (the live panel's series, read by the console's server from the services).
 */
export async function loadSite(config: ConsoleConfig, live: Pick<LiveMetrics, "series">): Promise<HttpHandler> {
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

  return (request, response) => {
    const path = new URL(request.url ?? "/", "http://console").pathname;
    if (path === "/live.json" && request.method === "GET") {
      const body = Buffer.from(JSON.stringify({ services: live.series() }));
      response.writeHead(200, { "content-type": "application/json", "content-length": body.length, "cache-control": "no-store" });
      response.end(body);
      return;
    }
    const asset = assets.get(path);
    if (asset === undefined) {
      response.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
      response.end(`${path} is not part of the console\n`);
    } else if (request.method !== "GET" && request.method !== "HEAD") {
      response.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" });
      response.end(`${request.method} is not allowed on ${path}\n`);
    } else {
      response.writeHead(200, {
        "content-type": asset.type,
        "content-length": asset.body.length,
        "cache-control": "no-cache",
        "content-security-policy": csp,
        "x-content-type-options": "nosniff",
      });
      if (request.method === "HEAD") response.end();
      else response.end(asset.body);
    }
  };
}
