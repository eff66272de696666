// The server gRPC's interop client tests (google.golang.org/grpc/interop/client): mlmesh's
// serving stack (services/runtime/serve, as every service runs it) hosting grpc.testing.TestService.
// Prints {"port": N} on stdout once listening; TLS_CERT_FILE / TLS_KEY_FILE and GRPC_STACK apply
// as for any service.
import { TestService } from "../../gen/grpc/testing/test_pb.js";
import { loadServerConfig } from "../../services/runtime/env/settings.js";
import { readProcessEnvironment } from "../../services/runtime/env/variables.js";
import { createLogger } from "../../services/runtime/observability/logger.js";
import { ServingStatus } from "../../services/runtime/serve/health.js";
import { serve } from "../../services/runtime/serve/registration.js";
import { startServer } from "../../services/runtime/serve/server.js";
import { createInteropService } from "./interop-service.js";

const env = readProcessEnvironment();
const config = loadServerConfig({ LOG_LEVEL: "fatal", SHUTDOWN_GRACE: "0s", ...env, ECHO_PORT: env.ECHO_PORT ?? "0" }, "echo");
const logger = createLogger("interop", config.logLevel);
const server = await startServer({ config, logger, services: [serve(TestService, createInteropService())] });
server.health.setAll(ServingStatus.SERVING);
process.stdout.write(`${JSON.stringify({ port: server.port })}\n`);
for (const signal of ["SIGTERM", "SIGINT"] as const) process.once(signal, () => void server.shutdown().then(() => process.exit(0)));
