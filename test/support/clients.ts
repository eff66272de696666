import type { DescService } from "@bufbuild/protobuf";
import { ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";

/** The three ways a client reaches an mlmesh port; each test can run over all of them. */
export const protocols = ["grpc", "grpc-web", "connect"] as const;
export type Protocol = (typeof protocols)[number];

/**
 * A typed client over one protocol: native gRPC over HTTP/2 cleartext (served by grpc-js),
 * gRPC-web or Connect over HTTP/1.1 (served by connect-node).
 */
export function clientFor<S extends DescService>(service: S, baseUrl: string, protocol: Protocol): Client<S> {
  switch (protocol) {
    case "grpc":
      return createClient(service, createGrpcTransport({ baseUrl }));
    case "grpc-web":
      return createClient(service, createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }));
    case "connect":
      return createClient(service, createConnectTransport({ baseUrl, httpVersion: "1.1" }));
  }
}

/** The ConnectError a call failed with; throws when it succeeded. */
export async function failure(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected the call to fail");
}
