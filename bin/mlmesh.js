#!/usr/bin/env node
// The mlmesh command. It runs the compiled build (dist/, made by scripts/build.mjs with esbuild,
// which `npm start` and `npm test` run first) when that build is newer than every source file;
// otherwise the TypeScript itself through tsx's loader, so an edit is never run stale and
// needs no build step. Stack traces point into the TypeScript either way (source maps).
import { buildIsFresh } from "../scripts/build-freshness.mjs";

if (await buildIsFresh()) {
  process.setSourceMapsEnabled(true);
  await import("../dist/mlmesh.js");
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import("../services/cli/mlmesh.ts");
}
