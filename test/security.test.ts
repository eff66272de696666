// Security with real processes and real clients: TLS on the whole port (grpcurl -cacert, curl
// over HTTPS, a Connect client), bearer tokens and roles on every mutation, a token rotated in
// the file without restart, JWTs checked against a JWKS file, mutual TLS between the Proxy and
// the Predictor, per-client limits on a flood, slow HTTP/1.1 clients cut off — and no token in
// any log line of the run.
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BatchJobService } from "../gen/mlmesh/batch/v1/batch_pb.js";
import { PredictorService } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { ProxyService } from "../gen/mlmesh/proxy/v1/proxy_pb.js";
import { ModelRegistryService } from "../gen/mlmesh/registry/v1/registry_pb.js";
import { failure } from "./support/clients.js";
import { repoRoot, run, startService, tools, type ServiceProcess } from "./support/service-process.js";

const scratch = mkdtempSync(join(tmpdir(), "mlmesh-security-"));
const ca = join(scratch, "ca");
const started: ServiceProcess[] = [];
const tokens: Record<string, string> = {};
const row = { values: [5.1, 3.5, 1.4, 0.2] };

/** A new token from `mlmesh token new`, and its tokens-file line. */
async function newToken(role: string, name: string): Promise<{ token: string; line: string }> {
  const { code, stdout } = await run(process.execPath, [`${repoRoot}bin/mlmesh.js`, "token", "new", role, name]);
  expect(code).toBe(0);
  const token = /^token: (\S+)$/m.exec(stdout)![1];
  tokens[name] = token;
  return { token, line: /^tokens file line: (.+)$/m.exec(stdout)![1] };
}

async function start(service: string, env: Record<string, string>): Promise<ServiceProcess> {
  const process = await startService(service, env);
  started.push(process);
  return process;
}

/** A typed client over native gRPC with TLS (our CA) and, when given, a bearer token. */
function tlsClient<S extends Parameters<typeof createClient>[0]>(service: S, address: string, token?: string): Client<S> {
  const bearer: Interceptor = (next) => (request) => {
    if (token !== undefined) request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
  return createClient(service, createGrpcTransport({ baseUrl: `https://${address}`, nodeOptions: { ca: readFileSync(join(ca, "ca.pem")) }, interceptors: [bearer] })) as Client<S>;
}

const tlsEnv = () => ({ TLS_CERT_FILE: join(ca, "server.pem"), TLS_KEY_FILE: join(ca, "server.key") });

describe("security", () => {
  let tokensFile: string;
  let registry: ServiceProcess;

  beforeAll(async () => {
    expect((await run("bash", [`${repoRoot}scripts/dev-ca.sh`, ca])).code).toBe(0);
    const lines = [];
    for (const [role, name] of [["reader", "alice-reader"], ["writer", "bob-writer"], ["admin", "carol-admin"], ["writer", "flooder"], ["writer", "neighbour"]]) {
      lines.push((await newToken(role, name)).line);
    }
    tokensFile = join(scratch, "tokens");
    writeFileSync(tokensFile, `# test tokens\n${lines.join("\n")}\n`);
    registry = await start("registry", { ...tlsEnv(), AUTH_TOKENS_FILE: tokensFile, DATABASE_URL: `file:${join(scratch, "registry.db")}`, ARTIFACT_DIR: join(scratch, "artifacts") });
  });
  afterAll(async () => {
    await Promise.all(started.map((s) => s.stop()));
  });

  it("serves TLS on the whole port: grpcurl -cacert with and without a token, curl over HTTPS, plaintext refused", async () => {
    const grpcurl = (...args: string[]) => run(tools.grpcurl, ["-cacert", join(ca, "ca.pem"), ...args]);
    const listed = await grpcurl(registry.address, "list");
    expect(listed.stdout).toContain("mlmesh.registry.v1.ModelRegistryService"); // reflection needs no token

    const create = ["-d", '{"name":"tls_demo"}', registry.address, "mlmesh.registry.v1.ModelRegistryService/CreateProject"];
    const anonymous = await grpcurl(...create);
    expect(anonymous.stderr).toContain("Code: Unauthenticated");
    const withWriter = await grpcurl("-H", `authorization: Bearer ${tokens["bob-writer"]}`, ...create);
    expect(withWriter.code, withWriter.stderr).toBe(0);
    expect(JSON.parse(withWriter.stdout).project.name).toBe("tls_demo");
    const aliasMove = await grpcurl("-H", `authorization: Bearer ${tokens["bob-writer"]}`, "-d", '{"model_id":"m","alias":"production","version":1}', registry.address, "mlmesh.registry.v1.ModelRegistryService/SetModelVersionAlias");
    expect(aliasMove.stderr).toContain("Code: PermissionDenied");
    expect(aliasMove.stderr).toContain("needs the admin role");

    const curl = (...args: string[]) => run("curl", ["-sS", "--max-time", "5", ...args]);
    const connectJson = await curl("--cacert", join(ca, "ca.pem"), "-H", "content-type: application/json", "-H", `authorization: Bearer ${tokens["alice-reader"]}`, "-d", '{"name":"tls_demo"}', `https://${registry.address}/mlmesh.registry.v1.ModelRegistryService/GetProjectByName`);
    expect(JSON.parse(connectJson.stdout).project.name).toBe("tls_demo");
    const unverified = await curl("-d", "{}", "-H", "content-type: application/json", `https://${registry.address}/mlmesh.registry.v1.ModelRegistryService/ListProjects`);
    expect(unverified.code).toBe(60); // curl: the server's certificate is not trusted without our CA
    const metrics = await curl("--cacert", join(ca, "ca.pem"), "-w", "%{http_code}", "-o", "/dev/null", `https://${registry.address}/metrics`);
    expect(metrics.stdout).toBe("401");
    const plaintext = await run(tools.grpcurl, ["-plaintext", "-max-time", "3", registry.address, "list"]);
    expect(plaintext.code).not.toBe(0);
  });

  it("checks each role against each mutation (table-driven): UNAUTHENTICATED, PERMISSION_DENIED or let through", async () => {
    const admin = tlsClient(ModelRegistryService, registry.address, tokens["carol-admin"]);
    const { project } = await admin.createProject({ name: "roles" });
    const { model } = await admin.createModel({ projectId: project!.id, name: "m" });
    const modelId = model!.id;
    await admin.createModelVersion({ modelId, sourceUri: "file://v1" });
    await admin.setModelVersionAlias({ modelId, alias: "production", version: 1 });
    let n = 0;
    const calls: [string, "reader" | "writer" | "admin", (c: Client<typeof ModelRegistryService>) => Promise<unknown>][] = [
      ["GetModelVersionByAlias", "reader", (c) => c.getModelVersionByAlias({ modelId, alias: "production" })],
      ["CreateProject", "writer", (c) => c.createProject({ name: `p${n++}` })],
      ["CreateModel", "writer", (c) => c.createModel({ projectId: project!.id, name: `m${n++}` })],
      ["CreateExperiment", "writer", (c) => c.createExperiment({ modelId })],
      ["CreateModelVersion", "writer", (c) => c.createModelVersion({ modelId, sourceUri: "file://vN" })],
      ["SetModelTag", "writer", (c) => c.setModelTag({ modelId, key: "k", value: "v" })],
      ["SetModelVersionTag", "writer", (c) => c.setModelVersionTag({ modelId, version: 1, key: "k", value: "v" })],
      ["SetModelVersionAlias", "admin", (c) => c.setModelVersionAlias({ modelId, alias: "staging", version: 1 })],
      ["RollbackModelVersionAlias", "admin", (c) => c.rollbackModelVersionAlias({ modelId, alias: "production" })],
      ["DeleteModelVersionAlias", "admin", (c) => c.deleteModelVersionAlias({ modelId, alias: "staging" })],
    ];
    const rank = { none: 0, reader: 1, writer: 2, admin: 3 } as const;
    const callers = { none: undefined, reader: tokens["alice-reader"], writer: tokens["bob-writer"], admin: tokens["carol-admin"] };
    const outcomes: string[] = [];
    for (const [method, needed, call] of calls) {
      for (const [role, token] of Object.entries(callers) as [keyof typeof rank, string | undefined][]) {
        const code = await call(tlsClient(ModelRegistryService, registry.address, token)).then(
          () => "OK",
          (err: unknown) => Code[(err as { code: Code }).code],
        );
        const expected = role === "none" ? "Unauthenticated" : rank[role] < rank[needed] ? "PermissionDenied" : "let through";
        const got = code === "Unauthenticated" || code === "PermissionDenied" ? code : "let through";
        outcomes.push(`${method} as ${role}: ${got}`);
        expect(got, `${method} as ${role} (answered ${code})`).toBe(expected);
      }
    }
    expect(outcomes).toHaveLength(calls.length * 4);

    // The authenticated caller reaches the handler (the alias history's actor) and the log line,
    // a refused one's too.
    const { changes } = await admin.listAliasHistory({ modelId, alias: "production" });
    expect(changes.length).toBeGreaterThan(0);
    expect(new Set(changes.map((c) => c.actor))).toEqual(new Set(["carol-admin"]));
    const aliasLines = registry.logs.filter((l) => l.rpc === "/mlmesh.registry.v1.ModelRegistryService/SetModelVersionAlias");
    expect(new Set(aliasLines.map((l) => `${String(l.code)} ${String(l.client)}`))).toEqual(
      new Set(["OK carol-admin", "Unauthenticated undefined", "PermissionDenied alice-reader", "PermissionDenied bob-writer"]),
    );
  });

  it("takes a token rotated in the file at once, without a restart", async () => {
    const before = tokens["bob-writer"];
    const client = (token: string) => tlsClient(ModelRegistryService, registry.address, token);
    expect((await client(before).listProjects({})).projects.length).toBeGreaterThan(0);
    const rotated = await newToken("writer", "bob-writer-2");
    const text = readFileSync(tokensFile, "utf8").split("\n").filter((line) => !line.endsWith(" bob-writer"));
    writeFileSync(`${tokensFile}.new`, `${[...text.filter((l) => l !== ""), rotated.line].join("\n")}\n`);
    await run("mv", [`${tokensFile}.new`, tokensFile]); // replaced atomically, as a deployment would
    const deadline = Date.now() + 5000;
    while ((await client(rotated.token).listProjects({}).then(() => true, () => false)) === false) {
      expect(Date.now()).toBeLessThan(deadline);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect((await failure(client(before).listProjects({}))).code).toBe(Code.Unauthenticated);
    expect(registry.child.exitCode).toBeNull();
  });

  it("verifies JWTs against a JWKS file: role from the claim, expired and foreign tokens refused", async () => {
    const { publicKey, privateKey } = await generateKeyPair("ES256");
    const jwk = { ...(await exportJWK(publicKey)), kid: "k1", alg: "ES256" };
    const jwksFile = join(scratch, "jwks.json");
    writeFileSync(jwksFile, JSON.stringify({ keys: [jwk] }));
    const jwtRegistry = await start("registry", { AUTH_JWKS: jwksFile, AUTH_JWT_ISSUER: "https://issuer.test", DATABASE_URL: `file:${join(scratch, "jwt.db")}` });
    const sign = (roles: string[], expires = "5m", key = privateKey) =>
      new SignJWT({ roles }).setProtectedHeader({ alg: "ES256", kid: "k1" }).setSubject("ci-bot").setIssuer("https://issuer.test").setExpirationTime(expires).sign(key);
    const client = (token: string) =>
      createClient(ModelRegistryService, createGrpcTransport({ baseUrl: jwtRegistry.baseUrl, interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${token}`), next(req))] }));
    const writerJwt = await sign(["writer"]);
    tokens["jwt-writer"] = writerJwt;
    expect((await client(writerJwt).createProject({ name: "from_jwt" })).project!.name).toBe("from_jwt");
    expect((await failure(client(await sign(["reader"])).createProject({ name: "nope" }))).code).toBe(Code.PermissionDenied);
    expect((await failure(client(await sign(["writer"], "1s ago")).createProject({ name: "late" }))).code).toBe(Code.Unauthenticated);
    const stranger = await generateKeyPair("ES256");
    expect((await failure(client(await sign(["admin"], "5m", stranger.privateKey)).createProject({ name: "forged" }))).code).toBe(Code.Unauthenticated);
  });

  it("runs the Proxy → Predictor hop over mutual TLS, each with its own token; a Proxy without a client certificate is refused", async () => {
    const proxyToken = await newToken("reader", "proxy-service");
    const predictorTokens = join(scratch, "predictor-tokens");
    writeFileSync(predictorTokens, `${proxyToken.line}\n`);
    const proxyTokenFile = join(scratch, "proxy-token");
    writeFileSync(proxyTokenFile, `${proxyToken.token}\n`);
    const predictor = await start("predictor", { ...tlsEnv(), TLS_CLIENT_CA_FILE: join(ca, "ca.pem"), AUTH_TOKENS_FILE: predictorTokens });
    const mesh = { TLS_CA_FILE: join(ca, "ca.pem"), MESH_TOKEN_FILE: proxyTokenFile, PREDICTOR_ADDRESS: predictor.address };
    const proxy = await start("proxy", { ...mesh, TLS_CLIENT_CERT_FILE: join(ca, "client.pem"), TLS_CLIENT_KEY_FILE: join(ca, "client.key") });
    const answer = await createClient(ProxyService, createGrpcTransport({ baseUrl: proxy.baseUrl })).predictLabel({ rows: [row] });
    expect(answer.predictions[0].label).toBe("setosa");
    expect(answer.answeredBackends).toEqual(["setosa", "versicolor", "virginica"]);

    const noCertificate = await start("proxy", mesh);
    const refused = await failure(createClient(ProxyService, createGrpcTransport({ baseUrl: noCertificate.baseUrl })).predictLabel({ rows: [row] }));
    expect(refused.code).toBe(Code.Unavailable);
    // And a direct caller needs both a certificate and a token.
    const direct = tlsClient(PredictorService, predictor.address, proxyToken.token);
    expect([Code.Unavailable, Code.Internal]).toContain((await failure(direct.predict({ model: "iris_svc", rows: [row] }))).code); // the handshake fails
  });

  it("limits a flood of RegisterItems from one client with RESOURCE_EXHAUSTED and a retry hint, while another client's calls succeed", async () => {
    const batch = await start("batch", {
      AUTH_TOKENS_FILE: tokensFile,
      BATCH_DATABASE_URL: `file:${join(scratch, "batch.db")}`,
      BATCH_INTERVAL: "1h",
      LIMIT_CONCURRENCY: "2",
      LIMIT_RATE: "10",
      LIMIT_BURST: "10",
    });
    const client = (token: string) =>
      createClient(BatchJobService, createGrpcTransport({ baseUrl: batch.baseUrl, interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${token}`), next(req))] }));
    const items = Array.from({ length: 200 }, () => ({ values: row.values }));
    const flood = Promise.allSettled(Array.from({ length: 60 }, () => client(tokens.flooder).registerItems({ items })));
    const neighbour: number[] = [];
    for (let i = 0; i < 5; i++) {
      neighbour.push((await client(tokens.neighbour).registerItems({ items })).items.length);
      await new Promise((resolve) => setTimeout(resolve, 120));
    }
    const results = await flood;
    const refused = results.filter((r) => r.status === "rejected").map((r) => (r as PromiseRejectedResult).reason as { code: Code; rawMessage: string; metadata: Headers });
    expect(neighbour).toEqual([200, 200, 200, 200, 200]);
    expect(refused.length).toBeGreaterThan(30);
    expect(results.length - refused.length).toBeGreaterThan(0);
    for (const error of refused) {
      expect(error.code).toBe(Code.ResourceExhausted);
      expect(error.rawMessage).toMatch(/^RegisterItems refused: flooder .*; retry in \d+ ms$/);
      expect(Number(error.metadata.get("retry-after-ms"))).toBeGreaterThan(0);
    }
  });

  it("closes HTTP/1.1 connections whose headers do not arrive in time (slow clients)", async () => {
    const echo = await start("echo", { HTTP_HEADERS_TIMEOUT: "1s" });
    const [host, port] = echo.address.split(":");
    const socket = net.connect({ host, port: Number(port) });
    const startedAt = Date.now();
    socket.write("POST /mlmesh.echo.v1.EchoService/Echo HTTP/1.1\r\nHost: x\r\n"); // and never the rest
    const closed = await new Promise<string>((resolve) => {
      let answer = "";
      socket.on("data", (chunk) => (answer += chunk.toString()));
      socket.on("close", () => resolve(answer));
      setTimeout(() => resolve("still open"), 8000);
    });
    expect(closed).toMatch(/^HTTP\/1.1 408/);
    expect(Date.now() - startedAt).toBeLessThan(4000);
  });

  it("warns at start when it listens beyond this machine without TLS or authentication", async () => {
    const open = await start("echo", { HOST: "0.0.0.0" });
    const warnings = () => open.logs.filter((l) => l.level === "warn").map((l) => String(l.msg));
    for (let i = 0; i < 40 && warnings().length < 2; i++) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(warnings()).toEqual([
      "listening beyond this machine without TLS: set TLS_CERT_FILE and TLS_KEY_FILE",
      "listening beyond this machine with authentication off: set AUTH_TOKENS_FILE or AUTH_JWKS",
    ]);
  });

  it("never writes a token or an authorization header into any log line of this run", async () => {
    await new Promise((resolve) => setTimeout(resolve, 200)); // the last lines of async logs
    const everything = started.flatMap((s) => s.logs.map((l) => JSON.stringify(l))).join("\n");
    expect(everything.length).toBeGreaterThan(1000);
    for (const [name, token] of Object.entries(tokens)) expect(everything.includes(token), `${name}'s token in a log`).toBe(false);
    expect(everything).not.toMatch(/bearer [\w.-]{20,}/i);
  });
});
