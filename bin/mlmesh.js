#!/usr/bin/env node
// The mlmesh command. The services are TypeScript run through tsx's loader (esbuild, once per
// file at start-up), so there is no build step between a change and a run.
import { register } from "tsx/esm/api";

register();
await import("../services/cli/mlmesh.ts");
