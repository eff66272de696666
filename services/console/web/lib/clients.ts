import { createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { useMemo } from "preact/hooks";
import { BatchJobService } from "../../../../gen/mlmesh/batch/v1/batch_pb.js";
import { MonitorService } from "../../../../gen/mlmesh/monitor/v1/monitor_pb.js";
import { PredictorService } from "../../../../gen/mlmesh/predictor/v1/predictor_pb.js";
import { ProxyService } from "../../../../gen/mlmesh/proxy/v1/proxy_pb.js";
import { ModelRegistryService } from "../../../../gen/mlmesh/registry/v1/registry_pb.js";
import { authorization, useSettings, type Protocol } from "./settings";

/**
 * The mesh's services as the browser calls them: the generated descriptors with
 * @connectrpc/connect-web, no hand-written request code. Every call carries the token, and
 * names the console as the actor of what it changes (the registry records it in the history).
 */
function transport(baseUrl: string, protocol: Protocol, token: string): Transport {
  const withToken: Interceptor = (next) => (request) => {
    for (const [name, value] of Object.entries(authorization(token))) request.header.set(name, value);
    request.header.set("x-mlmesh-actor", "console");
    return next(request);
  };
  if (protocol === "grpc-web") return createGrpcWebTransport({ baseUrl, interceptors: [withToken] });
  return createConnectTransport({ baseUrl, useBinaryFormat: protocol === "connect-binary", interceptors: [withToken] });
}

export function useClients() {
  const { endpoints, protocol, token } = useSettings();
  return useMemo(
    () => ({
      predictor: createClient(PredictorService, transport(endpoints.predictorUrl, protocol, token)),
      proxy: createClient(ProxyService, transport(endpoints.proxyUrl, protocol, token)),
      batch: createClient(BatchJobService, transport(endpoints.batchUrl, protocol, token)),
      registry: createClient(ModelRegistryService, transport(endpoints.registryUrl, protocol, token)),
      monitor: createClient(MonitorService, transport(endpoints.monitorUrl, protocol, token)),
    }),
    [endpoints, protocol, token],
  );
}

export type Clients = ReturnType<typeof useClients>;
