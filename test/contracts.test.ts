// The contract gates CI relies on must be able to fail: each test copies the protos to a
// scratch module, breaks one rule, and runs the real buf binary against it.
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getOption, hasOption } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it } from "vitest";
import { GRPCInferenceService } from "../gen/inference/open_inference_pb.js";
import { BatchJobService } from "../gen/mlmesh/batch/v1/batch_pb.js";
import { EchoService } from "../gen/mlmesh/echo/v1/echo_pb.js";
import { policy, Role } from "../gen/mlmesh/policy/v1/policy_pb.js";
import { PredictorService } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { ProxyService } from "../gen/mlmesh/proxy/v1/proxy_pb.js";
import { ModelRegistryService } from "../gen/mlmesh/registry/v1/registry_pb.js";
import { repoRoot, run, tools } from "./support/service-process.js";

const predictorProto = "proto/mlmesh/predictor/v1/predictor.proto";
const scratchDirs: string[] = [];

/** A copy of buf.yaml, proto/ and third_party/ in a fresh directory. */
async function scratchModule(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "mlmesh-buf-"));
  scratchDirs.push(dir);
  for (const entry of ["buf.yaml", "proto", "third_party"]) {
    await cp(join(repoRoot, entry), join(dir, entry), { recursive: true });
  }
  return dir;
}

async function edit(dir: string, file: string, from: string | RegExp, to: string): Promise<void> {
  const path = join(dir, file);
  const text = await readFile(path, "utf8");
  const edited = text.replace(from, to);
  expect(edited, `edit of ${file} changed nothing`).not.toBe(text);
  await writeFile(path, edited);
}

afterEach(async () => {
  await Promise.all(scratchDirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
});

describe("contract gates", () => {
  it("the contracts pass buf lint and buf format", async () => {
    const lint = await run(tools.buf, ["lint"]);
    expect(lint.code, lint.stdout + lint.stderr).toBe(0);
    const format = await run(tools.buf, ["format", "-d", "--exit-code", "proto"]);
    expect(format.code, format.stdout).toBe(0);
  });

  it("buf lint fails on an RPC without a comment", async () => {
    const dir = await scratchModule();
    await edit(dir, predictorProto, /  \/\/ GetModelMetadata describes[^\n]*\n  \/\/ Errors:[^\n]*\n/, "");
    const lint = await run(tools.buf, ["lint"], { cwd: dir });
    expect(lint.code).not.toBe(0);
    expect(lint.stdout).toContain('RPC "GetModelMetadata" should have a non-empty comment');
  });

  it("buf breaking fails when a field is removed", async () => {
    const before = await scratchModule();
    const dir = await scratchModule();
    await edit(dir, predictorProto, /  \/\/ Model version; 0 means the highest loaded version[^\n]*\n  uint32 version = 2;\n/, "");
    const breaking = await run(tools.buf, ["breaking", "--against", before], { cwd: dir });
    expect(breaking.code).not.toBe(0);
    expect(breaking.stdout).toMatch(/Previously present field "2" with name "version" on message "\w+" was deleted/);
  });

  it("buf format fails on an unformatted file", async () => {
    const dir = await scratchModule();
    await edit(dir, predictorProto, "message Row {", "message   Row{");
    const format = await run(tools.buf, ["format", "-d", "--exit-code", "proto"], { cwd: dir });
    expect(format.code).not.toBe(0);
  });

  it("every RPC of mlmesh's services declares who may call it (mlmesh.policy.v1.policy)", () => {
    const services = [ModelRegistryService, PredictorService, BatchJobService, ProxyService, EchoService, GRPCInferenceService];
    const missing = services.flatMap((service) => service.methods.filter((m) => !hasOption(m, policy)).map((m) => `${service.typeName}/${m.name}`));
    expect(missing).toEqual([]);
    const unset = services.flatMap((service) => service.methods.filter((m) => getOption(m, policy).role === Role.UNSPECIFIED).map((m) => m.name));
    expect(unset).toEqual([]);
    // The production-changing calls are an admin's; registration is a writer's and limited.
    expect(getOption(ModelRegistryService.method.setModelVersionAlias, policy).role).toBe(Role.ADMIN);
    expect(getOption(BatchJobService.method.runJobNow, policy).role).toBe(Role.ADMIN);
    expect(getOption(BatchJobService.method.registerItems, policy)).toMatchObject({ role: Role.WRITER, limited: true });
  });
});
