import { readFileSync } from "node:fs";
import { gauge } from "./metrics.js";

/** Set by scripts/build.mjs (esbuild's define) in dist/; absent when the sources run through tsx. */
declare const __MLMESH_COMMIT__: string | undefined;

/** What this process runs: the package's version, and the commit dist/ was built from ("source" under tsx). */
export const buildInfo = Object.freeze({
  version: (JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string }).version,
  commit: typeof __MLMESH_COMMIT__ === "string" ? __MLMESH_COMMIT__ : "source",
  node: process.version,
});

/**
 * mlmesh_build_info: one series of value 1 whose labels say what runs and how it is exposed
 * (TLS and authentication on or off), as Prometheus' own build_info does; the console's
 * Services page reads it from each service's /metrics.
 */
export function recordBuildInfo(service: string, exposure: { tls: boolean; auth: boolean }): void {
  gauge({
    name: "mlmesh_build_info",
    help: "What this process runs (version, commit, Node.js) and how it serves (tls, auth: on or off); always 1.",
    labelNames: ["service", "version", "commit", "node", "tls", "auth"],
  }).set({ service, ...buildInfo, tls: exposure.tls ? "on" : "off", auth: exposure.auth ? "on" : "off" }, 1);
}
