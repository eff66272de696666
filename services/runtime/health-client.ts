import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  HealthCheckRequestSchema,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "../../gen/grpc/health/v1/health_pb.js";

/**
 * Asks a server for a service's health over native gRPC ("" for the whole server). Resolves to
 * the status, or undefined when the server cannot be reached or does not know the service.
 */
export function checkHealth(address: string, service: string, timeoutMs: number): Promise<ServingStatus | undefined> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  return new Promise<ServingStatus | undefined>((resolve) => {
    client.makeUnaryRequest(
      "/grpc.health.v1.Health/Check",
      (request: object) => Buffer.from(toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, request))),
      (bytes: Buffer) => fromBinary(HealthCheckResponseSchema, bytes),
      { service },
      { deadline: Date.now() + timeoutMs },
      (err, response) => resolve(err ? undefined : response?.status),
    );
  }).finally(() => client.close());
}

export { ServingStatus };
