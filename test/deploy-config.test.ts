// Envoy cannot run on this machine and there is no Docker engine, so the deployment files are
// checked with the real schemas instead: Envoy's (go-control-plane, envoy/validate) and a real
// compose parser (docker-compose config). Each check is also shown to fail on a broken file.
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { repoRoot, run, tools } from "./support/service-process.js";

const scratch = await mkdtemp(join(tmpdir(), "mlmesh-deploy-"));
afterAll(() => rm(scratch, { recursive: true, force: true }));

const validateEnvoy = (config: string, descriptor = join(repoRoot, "envoy/mlmesh.binpb")) =>
  run("go", ["run", ".", config, descriptor], { cwd: join(repoRoot, "envoy/validate"), timeoutMs: 300_000 });

async function brokenCopy(file: string, from: string, to: string): Promise<string> {
  const text = await readFile(join(repoRoot, file), "utf8");
  expect(text).toContain(from);
  const path = join(scratch, file.replaceAll("/", "_"));
  await writeFile(path, text.replace(from, to));
  return path;
}

describe("Envoy configuration", () => {
  it("is a valid Envoy bootstrap whose transcoder services are in the descriptor set", async () => {
    const result = await validateEnvoy(join(repoRoot, "envoy/envoy.yaml"));
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain("valid Envoy bootstrap configuration");
  }, 300_000);

  it("is rejected with a misspelt field, an out-of-range value or an unknown service", async () => {
    const cases = [
      ["stat_prefix: mesh", "stat_prefx: mesh", /unknown field "stat_prefx"/],
      ["port_value: 8443", "port_value: 84430", /PortValue: value must be less than or equal to 65535/],
      ["san_type: DNS", "san_type: DNSS", /invalid value for enum field sanType: "DNSS"/],
      ["- mlmesh.proxy.v1.ProxyService", "- mlmesh.proxy.v1.ProxyServic", /"mlmesh.proxy.v1.ProxyServic" is not in/],
    ] as const;
    for (const [from, to, message] of cases) {
      const result = await validateEnvoy(await brokenCopy("envoy/envoy.yaml", from, to));
      expect(result.code, to).not.toBe(0);
      expect(result.stderr, to).toMatch(message);
    }
  }, 300_000);

  it("reads a descriptor set that matches the protos (npm run envoy:descriptor)", async () => {
    const fresh = join(scratch, "fresh.binpb");
    // The peer test servers' protos (test/peers/) are not Envoy's to route.
    const peerProtos = ["--exclude-path", "third_party/connectrpc", "--exclude-path", "third_party/grpc/testing"];
    const build = await run(tools.buf, ["build", ...peerProtos, "--as-file-descriptor-set", "-o", fresh]);
    expect(build.code, build.stderr).toBe(0);
    expect(Buffer.compare(await readFile(fresh), await readFile(join(repoRoot, "envoy/mlmesh.binpb")))).toBe(0);
  });
});

describe("docker-compose.yml", () => {
  it("is valid for a real compose parser", async () => {
    const result = await run("docker-compose", ["-f", join(repoRoot, "docker-compose.yml"), "config", "-q"]);
    expect(result.code, result.stderr).toBe(0);
  });

  it("is rejected when broken", async () => {
    const broken = await brokenCopy("docker-compose.yml", 'command: ["serve", "proxy"]', "command: 12");
    const result = await run("docker-compose", ["-f", broken, "config", "-q"]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain("services.proxy.command contains an invalid type");
  });
});
