import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { repoRoot, run } from "./support/service-process.js";

/*
 * Peers' own test suites against mlmesh's serving stack (services/runtime/serve: startServer,
 * the call pipeline, both native gRPC stacks, connect-node for gRPC-web and Connect), each
 * hosting the service its suite speaks to (test/peers/):
 *  - the Connect conformance suite (connectrpc.com/conformance, server mode): every protocol
 *    (gRPC, gRPC-web, Connect), codec, compression, stream type, HTTP/1.1 and h2c, TLS and
 *    client certificates, message limits, timeouts, metadata and error details;
 *  - gRPC's interop test cases, run by grpc-go's interop client against grpc.testing.TestService:
 *    deadlines, cancellation, flow control, large messages, status and its message, metadata
 *    and trailers, unimplemented methods and services.
 */

const peers = join(repoRoot, "test/peers");
const tsx = join(repoRoot, "node_modules/.bin/tsx");
const conformance = join(repoRoot, ".tools/bin/connectconformance");
const interopClient = join(repoRoot, ".tools/bin/grpc-interop-client");

/** The runner's closing line, "N passed, M failed", and the names of the failed cases. */
function conformanceOutcome(output: string) {
  const totals = /(\d+) passed, (\d+) failed/.exec(output);
  const failed = [...output.matchAll(/^FAILED: (.*?):?$/gm)].map((m) => m[1]);
  return { passed: Number(totals?.[1] ?? 0), failed: Number(totals?.[2] ?? -1), failedCases: failed };
}

describe.each(["grpc-js", "node-http2", "connect-node"] as const)("Connect conformance suite, native gRPC by %s", (stack) => {
  it("passes every case that applies to a server (known grpc-js failures listed with their reason)", async () => {
    const knownFailing = stack === "grpc-js" ? ["--known-failing", `@${join(peers, "conformance-known-failing-grpc-js.txt")}`] : [];
    const result = await run(conformance, ["--mode", "server", "--conf", join(peers, "conformance.yaml"), ...knownFailing, "--", tsx, join(peers, "conformance-server.ts")], {
      env: { GRPC_STACK: stack },
      timeoutMs: 600_000,
    });
    const outcome = conformanceOutcome(result.stdout + result.stderr);
    expect(outcome.failedCases, result.stdout.slice(-4000)).toEqual([]);
    expect(result.code, result.stderr.slice(-2000)).toBe(0);
    // Every protocol, codec, compression, stream type, HTTP version and TLS setting: thousands of cases.
    expect(outcome.passed).toBeGreaterThan(3000);
  }, 660_000);
});

/** The test cases of grpc-go's interop client that test a server (the others need Google credentials, load balancers or ORCA). */
const interopCases = [
  "empty_unary",
  "large_unary",
  "client_streaming",
  "server_streaming",
  "ping_pong",
  "empty_stream",
  "timeout_on_sleeping_server",
  "cancel_after_begin",
  "cancel_after_first_response",
  "status_code_and_message",
  "special_status_message",
  "custom_metadata",
  "unimplemented_method",
  "unimplemented_service",
  "rpc_soak",
  "channel_soak",
];

describe.each([
  { stack: "grpc-js", tls: false },
  { stack: "grpc-js", tls: true },
  { stack: "node-http2", tls: false },
  { stack: "node-http2", tls: true },
  { stack: "connect-node", tls: false },
])("gRPC interop test cases, native gRPC by $stack, TLS $tls", ({ stack, tls }) => {
  let server: ReturnType<typeof spawn>;
  let port: number;

  let certs: string;

  beforeAll(async () => {
    certs = await mkdtemp(join(tmpdir(), "mlmesh-interop-ca-"));
    if (tls) expect((await run("bash", [join(repoRoot, "scripts/dev-ca.sh"), certs])).code).toBe(0);
    const tlsEnv = tls ? { TLS_CERT_FILE: join(certs, "server.pem"), TLS_KEY_FILE: join(certs, "server.key") } : {};
    server = spawn(tsx, [join(peers, "interop-server.ts")], { env: { ...process.env, GRPC_STACK: stack, ...tlsEnv }, stdio: ["ignore", "pipe", "inherit"] });
    const [line] = (await once(server.stdout!, "data")) as [Buffer];
    port = (JSON.parse(line.toString()) as { port: number }).port;
  });
  afterAll(() => {
    server?.kill();
  });

  it.each(interopCases)("%s", async (testCase) => {
    const tlsArgs = tls ? ["--use_tls", "--use_test_ca", `--ca_file=${join(certs, "ca.pem")}`, "--server_host_override=localhost"] : [];
    const result = await run(interopClient, ["--server_host=127.0.0.1", `--server_port=${port}`, `--test_case=${testCase}`, "--soak_iterations=20", ...tlsArgs], { timeoutMs: 60_000 });
    expect(result.code, `${result.stdout}\n${result.stderr}`.slice(-3000)).toBe(0);
  }, 90_000);
});

