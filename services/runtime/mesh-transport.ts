import type { Interceptor, Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

/**
 * The transport a mesh service or the CLI uses to call another mesh service that streams
 * (the registry's uploads, downloads and watch): native gRPC over one HTTP/2 connection.
 * Unary hot paths between services use GrpcClient (grpc-client.ts) instead.
 */
export function meshTransport(address: string, options: { interceptors?: Interceptor[] } = {}): Transport {
  return createGrpcTransport({ baseUrl: `http://${address}`, interceptors: options.interceptors });
}
