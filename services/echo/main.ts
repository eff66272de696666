import { EchoService } from "../../gen/mlmesh/echo/v1/echo_pb.js";
import type { Env } from "../runtime/env/variables.js";
import { ServingStatus } from "../runtime/serve/health.js";
import { serve } from "../runtime/serve/registration.js";
import { runService } from "../runtime/serve/run-service.js";
import { startServer } from "../runtime/serve/server.js";
import { createEchoService } from "./service.js";

/** Runs the echo diagnostics service (not part of `mlmesh up`). */
export function main(env: Env): Promise<void> {
  return runService("echo", env, async ({ config, logger, tracing, gatekeeper }) => {
    const server = await startServer({ config, logger, tracing, gatekeeper, services: [serve(EchoService, createEchoService())] });
    server.health.setAll(ServingStatus.SERVING);
    return { server };
  });
}
