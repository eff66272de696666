import { hostname, userInfo } from "node:os";
import { fileURLToPath } from "node:url";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { readFile } from "node:fs/promises";
import { create, fromJsonString, toJsonString } from "@bufbuild/protobuf";
import { AliasChangeKind, RolloutChange, type ModelVersion } from "../../gen/mlmesh/registry/v1/registry_pb.js";
import { RequestKeySchema, TrafficPolicySchema, type TrafficPolicy } from "../../gen/mlmesh/registry/v1/traffic_pb.js";
import { loadMeshClientSettings } from "../runtime/env/settings.js";
import { ConfigError, envDurationMs, type Env } from "../runtime/env/variables.js";
import { durationFromMs, durationMs } from "@bufbuild/protobuf/wkt";
import { RollbackRule, RolloutState, type Rollout } from "../../gen/mlmesh/registry/v1/rollout_pb.js";
import { servicePorts } from "../runtime/env/service-ports.js";
import { checkHealth, ServingStatus } from "../runtime/client/health-client.js";
import { loadMeshCredentials, type MeshCredentials } from "../runtime/client/mesh-credentials.js";
import { bootstrapRegistry } from "./bootstrap.js";
import { ModelFolderError, parseModelRef, pushModelFolder, registryClient, resolveModel, UsageError, type RegistryClient } from "./model-push.js";

const bundledModels = fileURLToPath(new URL("../../models", import.meta.url));

export const modelsUsage = `usage: mlmesh models <command> (the registry at REGISTRY_ADDRESS, default 127.0.0.1:${servicePorts.registry.port})
  push <folder> <project/model> [--alias <alias>] [--description <text>]
                      upload model.onnx + metadata.json of <folder> as the model's next version
                      (the project and the model are created when missing)
  list <project/model>
                      the model's versions, their aliases, and the Predictors serving them
  alias <project/model> <alias> <version>
                      point an alias at a version (the Predictors follow within seconds)
  rollback <project/model> <alias>
                      move an alias back to the version it pointed at before its last move
  policy <project/model> <alias> [--arms 1=90,2=10] [--sticky header:<name>|parameter:<name>]
                      [--shadow <version>=<percent>] | --file <policy.json> | --show | --clear
                      split the alias's calls among versions (weights summing to 100), keep a
                      caller on one arm, copy a sample to a shadow version; --file takes a
                      TrafficPolicy in protobuf JSON (routes by header, parameter, time window)
  canary <project/model> <alias> --to <version> [--steps 10,50,100] [--interval 60s]
                      [--min-requests 100] [--max-error-rate 0.01] [--max-p99 <duration>]
                      [--min-agreement <0-1>] [--on-failure rollback|pause]
                      roll the alias out to a version step by step; the registry advances
                      while the gates hold and rolls back by itself when one fails
  rollout <rollout id> [pause|resume|promote|abort]
                      where a rollout stands, or change it by hand
  rollouts <project/model>
                      the model's rollouts, newest first
  history <project/model> [alias]
                      who changed the model's aliases and policies, when, from what to what
  bootstrap [project] register the bundled models/ under a project (by default the one each
                      name starts with: iris_svc in iris) unless they have versions already,
                      waiting up to 60 s for the registry (mlmesh up does this)`;

/** `mlmesh models ...`; resolves to the exit code (0 done, 1 failed, 2 bad usage). */
export async function modelsCommand(args: readonly string[], env: Env): Promise<number> {
  const address = env.REGISTRY_ADDRESS || `127.0.0.1:${env[servicePorts.registry.variable] || servicePorts.registry.port}`;
  try {
    const credentials = loadMeshCredentials(loadMeshClientSettings(env));
    const [command, ...rest] = args;
    // Who the registry records as having made each change (x-mlmesh-actor): MLMESH_ACTOR, or user@host.
    const actor = env.MLMESH_ACTOR || `${userInfo().username}@${hostname()}`;
    const client = registryClient(address, actor, credentials);
    switch (command) {
      case "push":
        return await push(client, rest);
      case "list":
        return await list(client, rest);
      case "alias":
        return await alias(client, rest);
      case "rollback":
        return await rollback(client, rest);
      case "history":
        return await history(client, rest);
      case "policy":
        return await policy(client, rest);
      case "canary":
        return await canary(client, rest);
      case "rollout":
        return await rollout(client, rest);
      case "rollouts":
        return await rollouts(client, rest);
      case "bootstrap":
        return await bootstrap(client, address, rest, credentials);
      default:
        throw new UsageError(command === undefined ? "which command?" : `unknown command "${command}"`);
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`mlmesh models: configuration error: ${err.message}\n`);
      return 2;
    }
    if (err instanceof UsageError) {
      process.stderr.write(`mlmesh models: ${err.message}\n${modelsUsage}\n`);
      return 2;
    }
    if (err instanceof ModelFolderError) {
      process.stderr.write(`mlmesh models: ${err.message}\n`);
      return 1;
    }
    const error = ConnectError.from(err);
    const message =
      error.code === Code.Unavailable && /ECONNREFUSED|connect/i.test(error.rawMessage)
        ? `cannot reach the registry at ${address} (${error.rawMessage}); is it running? (REGISTRY_ADDRESS)`
        : `${Code[error.code]}: ${error.rawMessage}`;
    process.stderr.write(`mlmesh models: ${message}\n`);
    return 1;
  }
}

async function push(client: RegistryClient, args: readonly string[]): Promise<number> {
  const { positional, options } = parseArgs(args, ["alias", "description"]);
  if (positional.length !== 2) throw new UsageError("push takes <folder> <project/model>");
  const [folder, refText] = positional;
  const ref = parseModelRef(refText);
  const model = await resolveModel(client, ref, true);
  if (model.created) process.stdout.write(`created model ${ref.project}/${ref.name}\n`);
  const version = await pushModelFolder(client, folder, { modelId: model.id, modelName: ref.name, alias: options.alias, description: options.description });
  const aliases = version.aliases.length > 0 ? ` (${version.aliases.join(", ")})` : "";
  process.stdout.write(`pushed ${ref.project}/${ref.name} version ${version.version}${aliases} from ${folder}\n`);
  return 0;
}

async function list(client: RegistryClient, args: readonly string[]): Promise<number> {
  if (args.length !== 1) throw new UsageError("list takes <project/model>");
  const ref = parseModelRef(args[0]);
  const { id } = await resolveModel(client, ref, false);
  const versions: ModelVersion[] = [];
  let pageToken = "";
  do {
    const page = await client.listModelVersions({ modelId: id, pageToken, pageSize: 1000 });
    versions.push(...page.modelVersions);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  const rows = versions.map((v) => [
    String(v.version),
    v.aliases.join(",") || "-",
    v.files.length > 0 ? v.files.find((f) => f.name === "model.onnx")!.sha256.slice(0, 12) : "(no artifact)",
    v.createTime ? timestampDate(v.createTime).toISOString().slice(0, 19).replace("T", " ") : "",
    v.serving.map((s) => s.predictor).join(",") || "-",
  ]);
  process.stdout.write(`${ref.project}/${ref.name}\n${table(["version", "aliases", "model.onnx sha256", "created (UTC)", "served by"], rows)}\n`);
  return 0;
}

async function alias(client: RegistryClient, args: readonly string[]): Promise<number> {
  if (args.length !== 3 || !/^[1-9]\d*$/.test(args[2])) throw new UsageError("alias takes <project/model> <alias> <version number>");
  const ref = parseModelRef(args[0]);
  const { id } = await resolveModel(client, ref, false);
  const { modelVersion } = await client.setModelVersionAlias({ modelId: id, alias: args[1], version: Number(args[2]) });
  process.stdout.write(`${ref.project}/${ref.name}@${args[1]} -> version ${modelVersion!.version}\n`);
  return 0;
}

async function rollback(client: RegistryClient, args: readonly string[]): Promise<number> {
  if (args.length !== 2) throw new UsageError("rollback takes <project/model> <alias>");
  const ref = parseModelRef(args[0]);
  const { id } = await resolveModel(client, ref, false);
  const { modelVersion } = await client.rollbackModelVersionAlias({ modelId: id, alias: args[1] });
  process.stdout.write(`${ref.project}/${ref.name}@${args[1]} rolled back to version ${modelVersion!.version}\n`);
  return 0;
}

async function history(client: RegistryClient, args: readonly string[]): Promise<number> {
  if (args.length < 1 || args.length > 2) throw new UsageError("history takes <project/model> [alias]");
  const ref = parseModelRef(args[0]);
  const { id } = await resolveModel(client, ref, false);
  const { changes } = await client.listAliasHistory({ modelId: id, alias: args[1] ?? "", pageSize: 100 });
  const rows = changes.map((c) => {
    const policyChange = c.kind === AliasChangeKind.POLICY_SET || c.kind === AliasChangeKind.POLICY_DELETED;
    return [
      c.changeTime ? timestampDate(c.changeTime).toISOString().slice(0, 19).replace("T", " ") : "",
      c.alias,
      policyChange ? policySummary(c.previousPolicy) : c.previousVersion === 0 ? "-" : String(c.previousVersion),
      policyChange ? policySummary(c.policy) : c.version === 0 ? "(deleted)" : String(c.version),
      c.actor,
      c.reason,
    ];
  });
  process.stdout.write(`${table(["when (UTC)", "alias", "from", "to", "by", "why"], rows)}\n`);
  return 0;
}

async function policy(client: RegistryClient, args: readonly string[]): Promise<number> {
  const flags: string[] = args.filter((a) => a === "--show" || a === "--clear");
  const { positional, options } = parseArgs(args.filter((a) => !flags.includes(a)), ["arms", "sticky", "shadow", "file"]);
  if (positional.length !== 2) throw new UsageError("policy takes <project/model> <alias> and what to do");
  const ref = parseModelRef(positional[0]);
  const alias = positional[1];
  const { id } = await resolveModel(client, ref, false);
  const where = `${ref.project}/${ref.name}@${alias}`;
  if (flags.includes("--show")) {
    const { trafficPolicy } = await client.getTrafficPolicy({ modelId: id, alias });
    process.stdout.write(`${where}: ${policySummary(trafficPolicy?.policy)}\n${toJsonString(TrafficPolicySchema, trafficPolicy!.policy!, { prettySpaces: 2 })}\n`);
    return 0;
  }
  if (flags.includes("--clear")) {
    await client.deleteTrafficPolicy({ modelId: id, alias });
    process.stdout.write(`${where}: no policy; every call goes to the alias's version\n`);
    return 0;
  }
  let policy: TrafficPolicy;
  if (options.file !== undefined) {
    if (Object.keys(options).length > 1) throw new UsageError("--file takes the whole policy: no --arms, --sticky or --shadow beside it");
    policy = fromJsonString(TrafficPolicySchema, await readFile(options.file, "utf8"));
  } else {
    if (options.arms === undefined && options.shadow === undefined) throw new UsageError("policy needs --arms, --shadow, --file, --show or --clear");
    policy = create(TrafficPolicySchema, {
      arms: (options.arms ?? "").split(",").filter(Boolean).map((arm) => {
        const [version, weight] = versionAndNumber(arm, "--arms");
        return { version, weight };
      }),
      shadows: (options.shadow ?? "").split(",").filter(Boolean).map((shadow) => {
        const [version, samplePercent] = versionAndNumber(shadow, "--shadow");
        return { version, samplePercent };
      }),
    });
    if (options.sticky !== undefined) {
      const match = /^(header|parameter):(.+)$/.exec(options.sticky);
      if (match === null) throw new UsageError(`--sticky is header:<name> or parameter:<name>, got "${options.sticky}"`);
      policy.stickyKey = create(RequestKeySchema, { source: { case: match[1] as "header" | "parameter", value: match[2] } });
    }
  }
  const { trafficPolicy } = await client.setTrafficPolicy({ modelId: id, alias, policy });
  process.stdout.write(`${where}: ${policySummary(trafficPolicy?.policy)}\n`);
  return 0;
}

async function canary(client: RegistryClient, args: readonly string[]): Promise<number> {
  const { positional, options } = parseArgs(args, ["to", "steps", "interval", "min-requests", "max-error-rate", "max-p99", "min-agreement", "on-failure"]);
  if (positional.length !== 2 || options.to === undefined || !/^[1-9]\d*$/.test(options.to)) throw new UsageError("canary takes <project/model> <alias> --to <version>");
  const ref = parseModelRef(positional[0]);
  const { id } = await resolveModel(client, ref, false);
  // Durations as the environment's are written ("60s", "500ms", "2m").
  const duration = (option: string) => (options[option] === undefined ? undefined : durationFromMs(envDurationMs({ [option]: options[option] }, option, 0, 1, 86_400_000)));
  const number = (option: string) => {
    if (options[option] === undefined) return undefined;
    const value = Number(options[option]);
    if (!Number.isFinite(value) || value < 0) throw new UsageError(`--${option} takes a number, got "${options[option]}"`);
    return value;
  };
  if (options["on-failure"] !== undefined && !["rollback", "pause"].includes(options["on-failure"])) throw new UsageError(`--on-failure is rollback or pause, got "${options["on-failure"]}"`);
  const gated = ["min-requests", "max-error-rate", "max-p99", "min-agreement"].some((o) => options[o] !== undefined);
  const { rollout } = await client.startRollout({
    modelId: id,
    alias: positional[1],
    toVersion: Number(options.to),
    steps: options.steps === undefined ? [] : options.steps.split(",").map((step) => Number(step.trim())),
    interval: duration("interval"),
    // Gates named on the command line replace the defaults as a whole (100 calls, 1 % errors).
    gates: gated
      ? { minRequests: number("min-requests") ?? 100, maxErrorRate: number("max-error-rate") ?? 0.01, maxP99Latency: duration("max-p99"), minShadowAgreement: number("min-agreement") ?? 0 }
      : undefined,
    rollbackRule: options["on-failure"] === "pause" ? RollbackRule.PAUSE : RollbackRule.ROLL_BACK,
  });
  process.stdout.write(`${rolloutSummary(rollout!)}\n`);
  return 0;
}

async function rollout(client: RegistryClient, args: readonly string[]): Promise<number> {
  const changes: Record<string, RolloutChange> = { pause: RolloutChange.PAUSE, resume: RolloutChange.RESUME, promote: RolloutChange.PROMOTE, abort: RolloutChange.ABORT };
  if (args.length < 1 || args.length > 2 || (args[1] !== undefined && changes[args[1]] === undefined)) throw new UsageError("rollout takes <rollout id> [pause|resume|promote|abort]");
  const { rollout: found } = args[1] === undefined ? await client.getRollout({ rolloutId: args[0] }) : await client.changeRollout({ rolloutId: args[0], change: changes[args[1]] });
  process.stdout.write(`${rolloutSummary(found!)}\n`);
  return 0;
}

async function rollouts(client: RegistryClient, args: readonly string[]): Promise<number> {
  if (args.length !== 1) throw new UsageError("rollouts takes <project/model>");
  const ref = parseModelRef(args[0]);
  const { id } = await resolveModel(client, ref, false);
  const { rollouts: found } = await client.listRollouts({ modelId: id, pageSize: 50 });
  const rows = found.map((r) => [r.id, r.alias, `v${r.fromVersion} -> v${r.toVersion}`, RolloutState[r.state].toLowerCase(), `${r.steps[r.step]} %`, r.lastDecision]);
  process.stdout.write(`${table(["rollout", "alias", "versions", "state", "weight", "last decision"], rows)}\n`);
  return 0;
}

/** A rollout in a few lines. */
function rolloutSummary(r: Rollout): string {
  return [
    `rollout ${r.id}: alias "${r.alias}" v${r.fromVersion} -> v${r.toVersion}, ${RolloutState[r.state].toLowerCase()}`,
    `  steps ${r.steps.map((s, i) => (i === r.step ? `[${s} %]` : `${s} %`)).join(" -> ")}, every ${r.interval ? durationMs(r.interval) / 1000 : 0} s`,
    `  ${r.lastDecision}`,
  ].join("\n");
}

/** "3=40" as [3, 40]. */
function versionAndNumber(text: string, option: string): [number, number] {
  const match = /^([1-9]\d*)=(\d+(?:\.\d+)?)$/.exec(text.trim());
  if (match === null) throw new UsageError(`${option} takes <version>=<percent>, got "${text}"`);
  return [Number(match[1]), Number(match[2])];
}

/** A policy in one line: "v1 90%, v2 10%; sticky header:x-user; route beta -> v2; shadow v3 10%". */
function policySummary(policy: TrafficPolicy | undefined): string {
  if (policy === undefined) return "(none)";
  const parts: string[] = [];
  if (policy.arms.length > 0) parts.push(policy.arms.map((a) => `v${a.version} ${a.weight}%`).join(", "));
  if (policy.stickyKey !== undefined) parts.push(`sticky ${policy.stickyKey.source.case}:${policy.stickyKey.source.value}`);
  for (const route of policy.routes) parts.push(`route ${route.name} -> v${route.version}`);
  for (const shadow of policy.shadows) parts.push(`shadow v${shadow.version} ${shadow.samplePercent}%`);
  return parts.join("; ");
}

async function bootstrap(client: RegistryClient, address: string, args: readonly string[], credentials: MeshCredentials): Promise<number> {
  if (args.length > 1) throw new UsageError("bootstrap takes [project]");
  const deadline = Date.now() + 60_000;
  while ((await checkHealth(address, "", 1000, credentials)) !== ServingStatus.SERVING) {
    if (Date.now() > deadline) throw new ConnectError(`the registry at ${address} did not answer within 60 s`, Code.Unavailable);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  const done = await bootstrapRegistry(client, bundledModels, args[0], new AbortController().signal);
  process.stdout.write(done.length === 0 ? "the bundled models are registered already\n" : `${done.join("\n")}\n`);
  return 0;
}

function parseArgs(args: readonly string[], known: readonly string[]): { positional: string[]; options: Record<string, string> } {
  const positional: string[] = [];
  const options: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (!arg.startsWith("--")) {
      positional.push(arg);
      continue;
    }
    const name = arg.slice(2);
    if (!known.includes(name)) throw new UsageError(`unknown option ${arg}`);
    if (i + 1 >= args.length) throw new UsageError(`${arg} needs a value`);
    options[name] = args[++i];
  }
  return { positional, options };
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd();
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}
