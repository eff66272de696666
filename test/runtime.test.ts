// The shared runtime, exercised through the echo diagnostics service: a real `mlmesh serve echo`
// process on a loopback port, called by real clients (connect-node over the three protocols,
// grpc-js with raw bytes, grpcurl, buf curl, plain fetch).
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EchoRequestSchema, EchoService } from "../gen/mlmesh/echo/v1/echo_pb.js";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { clientFor, protocols } from "./support/clients.js";
import { run, startService, tools, type ServiceProcess } from "./support/service-process.js";

/** Calls a method with raw request bytes over native gRPC; resolves to the status. */
function rawGrpcCall(address: string, path: string, body: Buffer): Promise<grpc.StatusObject> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure(), {
    "grpc.max_send_message_length": -1,
  });
  return new Promise<grpc.StatusObject>((resolve) => {
    const call = client.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      body,
      () => {},
    );
    call.on("status", resolve);
  }).finally(() => client.close());
}

describe("shared runtime (echo service)", () => {
  let echo: ServiceProcess;

  beforeAll(async () => {
    echo = await startService("echo", { MAX_MESSAGE_BYTES: "65536" });
  });
  afterAll(async () => {
    await echo?.stop();
  });

  it("binds to 127.0.0.1 by default", () => {
    expect(echo.address).toMatch(/^127\.0\.0\.1:\d+$/);
  });

  it.each(protocols)("answers over %s on the same port", async (protocol) => {
    const client = clientFor(EchoService, echo.baseUrl, protocol);
    const response = await client.echo({ values: [5.1, 3.5, 1.4, 0.2] });
    expect(response.values.map((v) => Math.round(v * 10) / 10)).toEqual([5.1, 3.5, 1.4, 0.2]);
  });

  it("answers a plain Connect JSON POST, as curl sends it", async () => {
    const response = await fetch(`${echo.baseUrl}/mlmesh.echo.v1.EchoService/Echo`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ values: [1, 2] }),
    });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ values: [1, 2] });
  });

  it("rejects a request that breaks a protovalidate rule with INVALID_ARGUMENT naming field and rule", async () => {
    for (const protocol of protocols) {
      const client = clientFor(EchoService, echo.baseUrl, protocol);
      const error = await client.echo({ delayMs: 70_000 }).catch((e: unknown) => ConnectError.from(e));
      expect(error, protocol).toBeInstanceOf(ConnectError);
      expect((error as ConnectError).code, protocol).toBe(Code.InvalidArgument);
      expect((error as ConnectError).rawMessage, protocol).toContain("delay_ms");
      expect((error as ConnectError).rawMessage, protocol).toContain("[uint32.lte]");
    }
  });

  it("answers malformed bytes with INVALID_ARGUMENT and keeps serving", async () => {
    const status = await rawGrpcCall(echo.address, "/mlmesh.echo.v1.EchoService/Echo", Buffer.from([0xff, 0xff, 0xff, 0x0f]));
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details).toContain("not a valid mlmesh.echo.v1.EchoRequest");
    // It went through the per-call pipeline like any call: a log line with its request id and trace.
    await expect
      .poll(() => echo.logs.find((l) => l.rpc === "/mlmesh.echo.v1.EchoService/Echo" && l.code === "InvalidArgument" && String(l.message).includes("not a valid")))
      .toMatchObject({ protocol: "grpc", requestId: expect.stringMatching(/^[0-9a-f-]{36}$/), trace_id: expect.stringMatching(/^[0-9a-f]{32}$/) });

    // connect-es maps undecodable binary to INTERNAL (its serialization.ts); the message says
    // what is wrong and carries no stack trace. Undecodable JSON is INVALID_ARGUMENT.
    const connectBinary = await fetch(`${echo.baseUrl}/mlmesh.echo.v1.EchoService/Echo`, {
      method: "POST",
      headers: { "content-type": "application/proto" },
      body: new Uint8Array([0xff, 0xff, 0xff, 0x0f]),
    });
    const binaryError = (await connectBinary.json()) as { code: string; message: string };
    expect(binaryError.message).toMatch(/^parse binary: /);
    expect(binaryError.message).not.toMatch(/\n\s+at /);
    const connectJson = await fetch(`${echo.baseUrl}/mlmesh.echo.v1.EchoService/Echo`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"values": "not a list"',
    });
    expect(connectJson.status).toBe(400);
    expect(((await connectJson.json()) as { code: string }).code).toBe("invalid_argument");

    const client = clientFor(EchoService, echo.baseUrl, "grpc");
    expect((await client.echo({ values: [1] })).values).toEqual([1]);
  });

  it("answers an unknown method or service with UNIMPLEMENTED", async () => {
    const empty = Buffer.alloc(0);
    expect((await rawGrpcCall(echo.address, "/mlmesh.echo.v1.EchoService/Nope", empty)).code).toBe(grpc.status.UNIMPLEMENTED);
    expect((await rawGrpcCall(echo.address, "/no.such.v1.Service/Echo", empty)).code).toBe(grpc.status.UNIMPLEMENTED);
    const connect = await fetch(`${echo.baseUrl}/mlmesh.echo.v1.EchoService/Nope`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    expect(connect.status).toBe(404);
  });

  it("answers plain HTTP paths it does not serve through the pipeline: 404 and 405 with JSON errors, logged with their codes", async () => {
    const nothing = await fetch(`${echo.baseUrl}/nothing?x=1`, { headers: { "x-request-id": "http-404" } });
    expect(nothing.status).toBe(404);
    expect(nothing.headers.get("x-request-id")).toBe("http-404");
    expect(await nothing.json()).toEqual({ error: "/nothing is not served here" });
    const post = await fetch(`${echo.baseUrl}/metrics`, { method: "POST", headers: { "x-request-id": "http-405" } });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET");
    expect(await post.json()).toEqual({ error: "POST is not allowed on /metrics" });
    await expect.poll(() => echo.logs.find((l) => l.requestId === "http-404")).toMatchObject({ rpc: "HTTP unrouted", protocol: "http", code: "NotFound" });
    await expect.poll(() => echo.logs.find((l) => l.requestId === "http-405")).toMatchObject({ rpc: "GET /metrics", protocol: "http", code: "Unimplemented" });
  });

  it("answers an oversized message with RESOURCE_EXHAUSTED and keeps serving", async () => {
    // MAX_MESSAGE_BYTES is 64 KiB for this server; 100,000 floats are ~400 KB.
    const big = create(EchoRequestSchema, { values: new Array(100_000).fill(1.5) });
    const status = await rawGrpcCall(echo.address, "/mlmesh.echo.v1.EchoService/Echo", Buffer.from(toBinary(EchoRequestSchema, big)));
    expect(status.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    const grpcWebError = await clientFor(EchoService, echo.baseUrl, "grpc-web")
      .echo(big)
      .catch((e: unknown) => ConnectError.from(e));
    expect((grpcWebError as ConnectError).code).toBe(Code.ResourceExhausted);
    // As curl sends it: the whole body first (a streaming client may see its upload cut short).
    const connectJson = await fetch(`${echo.baseUrl}/mlmesh.echo.v1.EchoService/Echo`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ values: big.values }),
    });
    expect(connectJson.status).toBe(429);
    expect(((await connectJson.json()) as { code: string }).code).toBe("resource_exhausted");
    expect((await clientFor(EchoService, echo.baseUrl, "grpc").echo({ values: [2] })).values).toEqual([2]);
  });

  it("ends a call at the caller's deadline with DEADLINE_EXCEEDED", async () => {
    const client = clientFor(EchoService, echo.baseUrl, "grpc");
    const started = Date.now();
    const error = await client.echo({ delayMs: 5000 }, { timeoutMs: 200 }).catch((e: unknown) => ConnectError.from(e));
    expect((error as ConnectError).code).toBe(Code.DeadlineExceeded);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it("reports health per service and for the whole server (Check, List, Watch)", async () => {
    const health = clientFor(Health, echo.baseUrl, "grpc");
    expect((await health.check({ service: "" })).status).toBe(ServingStatus.SERVING);
    expect((await health.check({ service: "mlmesh.echo.v1.EchoService" })).status).toBe(ServingStatus.SERVING);
    const unknown = await health.check({ service: "nope.v1.Nope" }).catch((e: unknown) => ConnectError.from(e));
    expect((unknown as ConnectError).code).toBe(Code.NotFound);
    const list = await health.list({});
    expect(Object.keys(list.statuses)).toEqual(expect.arrayContaining(["", "mlmesh.echo.v1.EchoService"]));
    const abort = new AbortController();
    const updates: ServingStatus[] = [];
    try {
      for await (const update of health.watch({ service: "mlmesh.echo.v1.EchoService" }, { signal: abort.signal })) {
        updates.push(update.status);
        abort.abort();
      }
    } catch (err) {
      expect(ConnectError.from(err).code).toBe(Code.Canceled);
    }
    expect(updates).toEqual([ServingStatus.SERVING]);
  });

  it("serves reflection to grpcurl: list, describe and a call with no .proto files", async () => {
    const list = await run(tools.grpcurl, ["-plaintext", echo.address, "list"]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout.split("\n")).toEqual(
      expect.arrayContaining([
        "mlmesh.echo.v1.EchoService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
      ]),
    );
    const describe = await run(tools.grpcurl, ["-plaintext", echo.address, "describe", "mlmesh.echo.v1.EchoRequest"]);
    expect(describe.stdout).toContain("delay_ms");
    const call = await run(tools.grpcurl, ["-plaintext", "-d", '{"values":[7]}', echo.address, "mlmesh.echo.v1.EchoService/Echo"]);
    expect(call.code, call.stderr).toBe(0);
    expect(JSON.parse(call.stdout)).toEqual({ values: [7] });
  });

  it("serves buf curl over gRPC-web, Connect and gRPC, resolving the schema by reflection", async () => {
    for (const protocol of ["grpcweb", "connect", "grpc"]) {
      const result = await run(tools.buf, [
        "curl",
        "--protocol",
        protocol,
        "-d",
        '{"values":[3]}',
        `${echo.baseUrl}/mlmesh.echo.v1.EchoService/Echo`,
      ]);
      expect(result.code, `${protocol}: ${result.stderr}`).toBe(0);
      expect(JSON.parse(result.stdout), protocol).toEqual({ values: [3] });
    }
  });

  it("logs one JSON line per RPC with method, status code, duration and request id", async () => {
    const client = clientFor(EchoService, echo.baseUrl, "grpc");
    await client.echo({ values: [1] }, { headers: { "x-request-id": "req-ok-1" } });
    await client.echo({ delayMs: 99_999 }, { headers: { "x-request-id": "req-bad-1" } }).catch(() => undefined);
    await expect.poll(() => echo.logs.filter((l) => String(l.requestId).startsWith("req-")).length).toBe(2);
    const ok = echo.logs.find((l) => l.requestId === "req-ok-1")!;
    expect(ok).toMatchObject({ msg: "rpc", rpc: "/mlmesh.echo.v1.EchoService/Echo", code: "OK", protocol: "grpc" });
    expect(typeof ok.ms).toBe("number");
    const bad = echo.logs.find((l) => l.requestId === "req-bad-1")!;
    expect(bad).toMatchObject({ code: "InvalidArgument", rpc: "/mlmesh.echo.v1.EchoService/Echo" });
  });

  it("gives a call without a request id a fresh random UUID (version 4), in its answer and its log line", async () => {
    const ids = await Promise.all(
      Array.from({ length: 20 }, async () => (await fetch(`${echo.baseUrl}/nothing`)).headers.get("x-request-id")),
    );
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(new Set(ids).size).toBe(ids.length);
    await expect.poll(() => echo.logs.filter((l) => ids.includes(String(l.requestId))).length).toBe(ids.length);
  });
});

describe("process lifecycle", () => {
  it("on SIGTERM finishes in-flight calls, refuses new ones and exits 0 within 5 s", async () => {
    const echo = await startService("echo");
    const grpcClient = clientFor(EchoService, echo.baseUrl, "grpc");
    const connectClient = clientFor(EchoService, echo.baseUrl, "connect");
    await grpcClient.echo({}); // connection established before the calls start
    const watched: ServingStatus[] = [];
    const watch = (async () => {
      for await (const update of clientFor(Health, echo.baseUrl, "grpc").watch({ service: "" })) watched.push(update.status);
    })();
    await expect.poll(() => watched).toEqual([ServingStatus.SERVING]);
    const inFlight = [
      ...Array.from({ length: 20 }, (_, i) => grpcClient.echo({ values: [i], delayMs: 800 })),
      ...Array.from({ length: 5 }, (_, i) => connectClient.echo({ values: [100 + i], delayMs: 800 })),
    ];
    await new Promise((resolve) => setTimeout(resolve, 200));
    const stoppedAt = Date.now();
    const exited = echo.stop("SIGTERM");
    const responses = await Promise.all(inFlight);
    expect(responses.map((r) => r.values[0])).toEqual([...Array(20).keys(), 100, 101, 102, 103, 104]);
    expect(await exited).toBe(0);
    expect(Date.now() - stoppedAt).toBeLessThan(5000);
    // Health turned NOT_SERVING as draining began, and the watch stream ended cleanly.
    await watch;
    expect(watched).toEqual([ServingStatus.SERVING, ServingStatus.NOT_SERVING]);
    const after = await clientFor(EchoService, echo.baseUrl, "grpc")
      .echo({}, { timeoutMs: 2000 })
      .catch((e: unknown) => ConnectError.from(e));
    expect((after as ConnectError).code).toBe(Code.Unavailable);
    expect(echo.logs.some((l) => l.msg === "stopped")).toBe(true);
  });

  it("cuts calls that outlive the grace period and still exits 0", async () => {
    const echo = await startService("echo", { SHUTDOWN_GRACE: "300ms" });
    const client = clientFor(EchoService, echo.baseUrl, "grpc");
    const slow = client.echo({ delayMs: 30_000 }).catch((e: unknown) => ConnectError.from(e));
    await new Promise((resolve) => setTimeout(resolve, 200));
    const stoppedAt = Date.now();
    expect(await echo.stop("SIGTERM")).toBe(0);
    expect(Date.now() - stoppedAt).toBeLessThan(3000);
    expect(await slow).toBeInstanceOf(ConnectError);
  });

  it("exits 2 naming the variable when configuration is invalid", async () => {
    for (const [variable, value] of [
      ["ECHO_PORT", "http"],
      ["SHUTDOWN_GRACE", "soon"],
      ["LOG_LEVEL", "loud"],
      ["CORS_ORIGINS", "http://127.0.0.1:50050/console"],
    ]) {
      const result = await run(process.execPath, ["bin/mlmesh.js", "serve", "echo"], { env: { [variable]: value } });
      expect(result.code, variable).toBe(2);
      expect(result.stderr, variable).toContain(`configuration error: ${variable}:`);
    }
  });
});
