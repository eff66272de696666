import { checkHealth, ServingStatus } from "../runtime/client/health-client.js";
import { loadMeshCredentials } from "../runtime/client/mesh-credentials.js";
import { loadMeshClientSettings } from "../runtime/env/settings.js";
import type { Env } from "../runtime/env/variables.js";

export const healthUsage = `usage: mlmesh health <host:port> [service]
  asks a server's grpc.health.v1 for a service ("" or none: the whole server) and exits 0 when
  it is SERVING, 1 when not or unreachable (within 2 s). Dials TLS with TLS_CA_FILE and sends
  MESH_TOKEN_FILE's token, as the services do: the probe of a pod whose port serves TLS, where
  the kubelet's own gRPC probe cannot (deploy/helm/mlmesh).`;

/** `mlmesh health ...`; resolves to the exit code. */
export async function healthCommand(args: readonly string[], env: Env): Promise<number> {
  const [address, service = ""] = args;
  if (address === undefined || args.length > 2 || !/^[^\s/]+:\d{1,5}$/.test(address)) {
    process.stderr.write(`${healthUsage}\n`);
    return 2;
  }
  const credentials = loadMeshCredentials(loadMeshClientSettings(env));
  const status = await checkHealth(address, service, 2000, credentials).catch(() => undefined);
  const serving = status === ServingStatus.SERVING;
  process.stdout.write(`${address} ${service || "(server)"}: ${status === undefined ? "unreachable" : ServingStatus[status]}\n`);
  return serving ? 0 : 1;
}
