import { setTimeout as sleep } from "node:timers/promises";
import type { EchoService } from "../../gen/mlmesh/echo/v1/echo_pb.js";
import type { PartialServiceImpl } from "../runtime/serve/registration.js";

/** Echo: the values back, after the requested delay (cut short if the call is cancelled). */
export function createEchoService(): PartialServiceImpl<typeof EchoService> {
  return {
    async echo(request, ctx) {
      if (request.delayMs > 0) await sleep(request.delayMs, undefined, { signal: ctx.signal });
      return { values: request.values };
    },
  };
}
