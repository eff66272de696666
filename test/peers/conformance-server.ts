// The server the Connect conformance suite tests (connectconformance --mode server): mlmesh's
// serving stack (services/runtime/serve: the same startServer, pipeline and transports every
// service runs) hosting connectrpc.conformance.v1.ConformanceService. The runner writes a
// size-prefixed ServerCompatRequest to stdin; this starts the server it asks for and answers a
// size-prefixed ServerCompatResponse on stdout. GRPC_STACK chooses what serves native gRPC.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { ServerCompatRequestSchema, ServerCompatResponseSchema } from "../../gen/connectrpc/conformance/v1/server_compat_pb.js";
import { ConformanceService } from "../../gen/connectrpc/conformance/v1/service_pb.js";
import { loadServerConfig } from "../../services/runtime/env/settings.js";
import { createLogger } from "../../services/runtime/observability/logger.js";
import { ServingStatus } from "../../services/runtime/serve/health.js";
import { serve } from "../../services/runtime/serve/registration.js";
import { startServer } from "../../services/runtime/serve/server.js";
import { createConformanceService } from "./conformance-service.js";

async function readSizePrefixed(): Promise<Buffer> {
  let buffered = Buffer.alloc(0);
  for await (const chunk of process.stdin) {
    buffered = Buffer.concat([buffered, chunk as Buffer]);
    if (buffered.length >= 4 && buffered.length >= 4 + buffered.readUInt32BE(0)) break;
  }
  if (buffered.length < 4) throw new Error("no ServerCompatRequest on stdin");
  return buffered.subarray(4, 4 + buffered.readUInt32BE(0));
}

const request = fromBinary(ServerCompatRequestSchema, await readSizePrefixed());
const env: Record<string, string | undefined> = {
  HOST: "127.0.0.1",
  ECHO_PORT: "0",
  LOG_LEVEL: process.env.LOG_LEVEL ?? "fatal",
  GRPC_STACK: process.env.GRPC_STACK,
  SHUTDOWN_GRACE: "0s",
};
if (request.messageReceiveLimit > 0) env.MAX_MESSAGE_BYTES = String(request.messageReceiveLimit);
if (request.useTls) {
  const creds = request.serverCreds;
  if (creds === undefined) throw new Error("use_tls without server_creds");
  const dir = mkdtempSync(join(tmpdir(), "mlmesh-conformance-"));
  const file = (name: string, pem: Uint8Array) => {
    writeFileSync(join(dir, name), pem);
    return join(dir, name);
  };
  env.TLS_CERT_FILE = file("cert.pem", creds.cert);
  env.TLS_KEY_FILE = file("key.pem", creds.key);
  if (request.clientTlsCert.length > 0) env.TLS_CLIENT_CA_FILE = file("client-ca.pem", request.clientTlsCert);
}
const config = loadServerConfig(env, "echo");
const logger = createLogger("conformance", config.logLevel);
const server = await startServer({ config, logger, services: [serve(ConformanceService, createConformanceService())] });
server.health.setAll(ServingStatus.SERVING);

const response = toBinary(ServerCompatResponseSchema, {
  $typeName: "connectrpc.conformance.v1.ServerCompatResponse",
  host: "127.0.0.1",
  port: server.port,
  pemCert: request.useTls ? request.serverCreds!.cert : new Uint8Array(),
});
const prefix = Buffer.alloc(4);
prefix.writeUInt32BE(response.length);
process.stdout.write(Buffer.concat([prefix, response]));

for (const signal of ["SIGTERM", "SIGINT"] as const) process.once(signal, () => void server.shutdown().then(() => process.exit(0)));
