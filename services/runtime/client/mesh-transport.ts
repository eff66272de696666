import type { Interceptor, Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { meshScheme, type MeshCredentials } from "./mesh-credentials.js";

/**
 * The transport a mesh service or the CLI uses to call another mesh service that streams
 * (the registry's uploads, downloads and watch): native gRPC over one HTTP/2 connection, with
 * the caller's mesh credentials (TLS, bearer token). Unary hot paths between services use
 * GrpcClient (grpc-client.ts) instead.
 */
export function meshTransport(address: string, options: { interceptors?: Interceptor[]; credentials?: MeshCredentials } = {}): Transport {
  const { credentials } = options;
  const authorization = credentials?.authorization;
  const withToken: Interceptor[] = authorization === undefined ? [] : [(next) => (request) => {
    request.header.set("authorization", authorization);
    return next(request);
  }];
  return createGrpcTransport({
    baseUrl: `${meshScheme(credentials)}://${address}`,
    interceptors: [...withToken, ...(options.interceptors ?? [])],
    nodeOptions: credentials?.tls ? { ca: credentials.tls.ca, cert: credentials.tls.cert, key: credentials.tls.key } : undefined,
  });
}
