import { ModelRegistryService } from "../../gen/mlmesh/registry/v1/registry_pb.js";
import type { Env } from "../runtime/config.js";
import { ServingStatus } from "../runtime/health.js";
import { serve } from "../runtime/instrument.js";
import { runService } from "../runtime/run-service.js";
import { startServer } from "../runtime/server.js";

/**
 * Runs the registry service. Its implementation has not landed yet: every RPC answers
 * UNIMPLEMENTED and its health stays NOT_SERVING, while the server itself (health,
 * reflection) is up so the mesh starts as a whole.
 */
export function main(env: Env): Promise<void> {
  return runService("registry", env, async ({ config, logger }) => {
    const server = await startServer({ config, logger, services: [serve(ModelRegistryService, {})] });
    server.health.set("", ServingStatus.SERVING);
    logger.warn("not implemented yet: every RPC of this service answers UNIMPLEMENTED");
    return { server };
  });
}
