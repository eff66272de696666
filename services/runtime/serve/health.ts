import { EventEmitter, on } from "node:events";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  Health,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "../../../gen/grpc/health/v1/health_pb.js";
import { serve, type ServiceRegistration } from "./registration.js";

export { ServingStatus };

/**
 * The serving status of each service of a process, answered over grpc.health.v1 (Check, Watch,
 * List). The empty name "" stands for the whole server. Services start NOT_SERVING and are
 * set SERVING by their main once really ready (models loaded, database connected).
 */
export class HealthStatuses {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly changes = new EventEmitter().setMaxListeners(0);

  constructor(serviceNames: readonly string[]) {
    for (const name of ["", ...serviceNames]) this.statuses.set(name, ServingStatus.NOT_SERVING);
  }

  /** Sets one service's status; watchers of that service see the change. */
  set(service: string, status: ServingStatus): void {
    if (this.statuses.get(service) === status) return;
    this.statuses.set(service, status);
    this.changes.emit(service, status);
  }

  /** Sets every service and the server itself. */
  setAll(status: ServingStatus): void {
    for (const service of this.statuses.keys()) this.set(service, status);
  }

  get(service: string): ServingStatus | undefined {
    return this.statuses.get(service);
  }

  /**
   * The grpc.health.v1.Health implementation. Watch streams the current status, then each
   * change, until the client goes away or the server stops (stopSignal).
   */
  registration(stopSignal: AbortSignal): ServiceRegistration {
    const statuses = this.statuses;
    const changes = this.changes;
    return serve(Health, {
      check: (request) => {
        const status = this.statuses.get(request.service);
        if (status === undefined) {
          throw new ConnectError(`unknown service "${request.service}"`, Code.NotFound);
        }
        return { status };
      },
      list: () => ({
        statuses: Object.fromEntries([...this.statuses].map(([name, status]) => [name, { status }])),
      }),
      async *watch(request, ctx) {
        yield { status: statuses.get(request.service) ?? ServingStatus.SERVICE_UNKNOWN };
        if (stopSignal.aborted) return;
        const signal = AbortSignal.any([ctx.signal, stopSignal]);
        try {
          for await (const [status] of on(changes, request.service, { signal })) {
            yield { status: status as ServingStatus };
          }
        } catch (err) {
          if (!signal.aborted) throw err;
        }
      },
    });
  }
}
