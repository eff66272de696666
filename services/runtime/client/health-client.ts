import { Code, ConnectError } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../../../gen/grpc/health/v1/health_pb.js";
import { GrpcClient } from "./grpc-client.js";
import type { MeshCredentials } from "./mesh-credentials.js";

/**
 * Asks a server for a service's health over native gRPC ("" for the whole server). Resolves to
 * the status, or undefined when the server cannot be reached or does not know the service.
 */
export async function checkHealth(address: string, service: string, timeoutMs: number, credentials?: MeshCredentials): Promise<ServingStatus | undefined> {
  const client = new GrpcClient(address, credentials);
  try {
    return (await client.unary(Health.method.check, { service }, { deadlineMs: Date.now() + timeoutMs })).status;
  } catch (err) {
    if (err instanceof ConnectError && err.code !== Code.Internal) return undefined;
    throw err;
  } finally {
    client.close();
  }
}

export { ServingStatus };
