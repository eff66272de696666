import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { build, stop as stopEsbuild } from "esbuild";
import { Code, ConnectError } from "@connectrpc/connect";
import { Role } from "../../gen/mlmesh/policy/v1/policy_pb.js";
import { methodNotAllowed, type HttpRoute, type HttpRouter } from "../runtime/serve/http-routes.js";
import type { ConsoleConfig } from "./config.js";

const webDir = fileURLToPath(new URL("./web/", import.meta.url));

interface Asset {
  readonly type: string;
  readonly body: Buffer;
}

/** The app's script and style sheet, and their sizes (README reports them). */
export interface WebBundle {
  readonly script: Buffer;
  readonly styles: Buffer;
}

/**
 * Bundles the page (web/main.tsx: Preact, preact-iso, uPlot and the generated clients) with
 * esbuild at start-up, about a second, so there is no build step to forget.
 */
export async function bundleWeb(): Promise<WebBundle> {
  const result = await build({
    entryPoints: { app: `${webDir}main.tsx` },
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    jsx: "automatic",
    jsxImportSource: "preact",
    minify: true,
    write: false,
    outdir: "/console", // names the outputs; nothing is written
    logLevel: "silent",
  });
  // The page is bundled once: end esbuild's helper process now rather than leave it to exit.
  await stopEsbuild();
  const output = (extension: string) => Buffer.from(result.outputFiles.find((f) => f.path.endsWith(extension))!.contents);
  return { script: output(".js"), styles: output(".css") };
}

/**
 * The console's files: the app's page for every page path (the app routes in the browser, so
 * a deep link or a reload lands on the right page), with where the browser reaches each
 * service written into it (a JSON data block: no round trip before the first call), and its
 * script and styles. Open to anyone: the data behind them is not.
 */
export async function consoleFiles(config: ConsoleConfig, bundle: WebBundle, api: ReadonlyMap<string, HttpRoute>): Promise<HttpRouter> {
  const endpoints = { predictorUrl: config.predictorUrl, proxyUrl: config.proxyUrl, batchUrl: config.batchUrl, registryUrl: config.registryUrl, monitorUrl: config.monitorUrl };
  // "<" escaped: the JSON cannot end its script element.
  const data = JSON.stringify(endpoints).replaceAll("<", "\\u003c");
  const html = (await readFile(`${webDir}index.html`, "utf8")).replace("{/* endpoints */}", data);
  const page: Asset = { type: "text/html; charset=utf-8", body: Buffer.from(html) };
  const assets = new Map<string, Asset>([
    ["/app.js", { type: "text/javascript; charset=utf-8", body: bundle.script }],
    ["/app.css", { type: "text/css; charset=utf-8", body: bundle.styles }],
  ]);
  // The page may call the configured services and nothing else.
  const services = [config.predictorUrl, config.proxyUrl, config.batchUrl, config.registryUrl, config.monitorUrl].join(" ");
  const csp = `default-src 'self'; connect-src 'self' ${services}; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:`;

  const files: HttpRoute = {
    name: "GET console files",
    role: Role.ANYONE,
    answer(request, url) {
      const path = url.pathname;
      // A page path (no file extension) is the app; any other unknown file is not ours.
      const asset = assets.get(path) ?? (/\.[a-z0-9]+$/i.test(path) && path !== "/index.html" ? undefined : page);
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
  return (_method, path) => api.get(path) ?? files;
}
