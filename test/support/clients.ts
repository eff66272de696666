import type { DescService } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
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
