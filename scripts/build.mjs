// Compiles the services to JavaScript with esbuild: one bundle of the `mlmesh` command
// (services/cli/mlmesh.ts) and of the batch job's worker, split into chunks so each service loads only its own code, npm
// packages left to node_modules, with source maps. bin/mlmesh.js runs it when it is newer
// than every source file, and the TypeScript through tsx otherwise, so a stale build is never
// run. Measured: a service boots in about half the CPU time without tsx's loader (README).
//   node scripts/build.mjs           build dist/ when a source file is newer than it
//   node scripts/build.mjs --force   build it anyway
import { execFileSync } from "node:child_process";
import { readFile, rm, writeFile } from "node:fs/promises";
import { extname, join, relative } from "node:path";
import { build } from "esbuild";
import { buildIsFresh, outdir, root, stampFile } from "./build-freshness.mjs";

/**
 * `import.meta.url` of a bundled module, as the URL of its source file (computed from the
 * chunk's own location, so dist/ works wherever the checkout is): the files a module finds
 * beside it (migrations, the web page, the bundled models, the batch job's worker) stay found.
 */
const sourceImportMetaUrl = {
  name: "source-import-meta-url",
  setup(b) {
    b.onLoad({ filter: /\.(ts|mts|js|mjs)$/ }, async (args) => {
      if (args.path.includes(`${join("node_modules", "")}`)) return undefined;
      const text = await readFile(args.path, "utf8");
      if (!text.includes("import.meta.url")) return undefined;
      const fromChunk = relative(outdir, args.path).split("\\").join("/");
      const loader = extname(args.path).slice(1).replace(/^m/, "");
      return { contents: text.replaceAll("import.meta.url", `new URL(${JSON.stringify(fromChunk)}, import.meta.url).href`), loader };
    });
  },
};

/** The checkout's commit, with "+changes" when files differ from it; "unknown" outside git. */
function commitOfCheckout() {
  try {
    const git = (...args) => execFileSync("git", args, { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    return `${git("rev-parse", "--short=12", "HEAD")}${git("status", "--porcelain", "--untracked-files=no") === "" ? "" : "+changes"}`;
  } catch {
    return "unknown";
  }
}

async function main() {
  if (!process.argv.includes("--force") && (await buildIsFresh())) return;
  const started = performance.now();
  await rm(outdir, { recursive: true, force: true });
  await build({
    // The command, and the batch job a bree worker thread runs (services/batch/scheduled-job-worker.mjs).
    entryPoints: { mlmesh: join(root, "services/cli/mlmesh.ts"), "scheduled-job": join(root, "services/batch/scheduled-job.ts") },
    outdir,
    bundle: true,
    splitting: true,
    format: "esm",
    platform: "node",
    target: "node20",
    packages: "external",
    sourcemap: true,
    logLevel: "warning",
    plugins: [sourceImportMetaUrl],
    // The commit the services report in mlmesh_build_info (runtime/observability/build-info.ts).
    define: { __MLMESH_COMMIT__: JSON.stringify(commitOfCheckout()) },
  });
  await writeFile(stampFile, `${new Date().toISOString()}\n`);
  process.stderr.write(`build: dist/ from services/ in ${Math.round(performance.now() - started)} ms\n`);
}

await main();

