import { EchoService } from "../../gen/mlmesh/echo/v1/echo_pb.js";
import type { Env } from "../runtime/config.js";
import { ServingStatus } from "../runtime/health.js";
import { serve } from "../runtime/instrument.js";
import { runService } from "../runtime/run-service.js";
import { startServer } from "../runtime/server.js";
import { createEchoService } from "./service.js";

/** Runs the echo diagnostics service (not part of `mlmesh up`). */
export function main(env: Env): Promise<void> {
  return runService("echo", env, async ({ config, logger, tracing, gatekeeper }) => {
    const server = await startServer({ config, logger, tracing, gatekeeper, services: [serve(EchoService, createEchoService())] });
    server.health.setAll(ServingStatus.SERVING);
    return { server };
  });
}
