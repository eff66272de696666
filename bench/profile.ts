// Where a service's CPU goes under load: runs the service with V8's sampling profiler
// (--cpu-prof) pinned to core 0, drives one RPC with h2load from core 1, stops the service and
// prints the self time by package and by function. The .cpuprofile is kept for Chrome DevTools.
//
//   npm run bench:profile -- predictor 1      (Predict, 1 row, 50 streams)
//   npm run bench:profile -- predictor 100    (Predict, 100 rows; BENCH_LOGGING=1 records every prediction)
//   npm run bench:profile -- proxy            (PredictLabel, with its Predictor on core 0 unprofiled)
//   npm run bench:profile -- registry         (GetModelVersionByAlias on SQLite)
//   npm run bench:profile -- batch            (RegisterItems of 1,000 items on SQLite, the job idle)
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { RegisterItemsRequestSchema } from "../gen/mlmesh/batch/v1/batch_pb.js";
import { PredictRequestSchema } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { PredictLabelRequestSchema } from "../gen/mlmesh/proxy/v1/proxy_pb.js";
import { GetModelVersionByAliasRequestSchema, ModelRegistryService } from "../gen/mlmesh/registry/v1/registry_pb.js";
import { GrpcClient } from "../services/runtime/client/grpc-client.js";
import { checkGrpc, grpcFrame, h2load } from "./h2load.js";
import { startBenchService, type BenchService } from "./support.js";
import { readProcessEnvironment } from "../services/runtime/env/variables.js";

const environment = readProcessEnvironment();

const [target = "predictor", rowsArg = "1"] = process.argv.slice(2);
const seconds = Number(environment.BENCH_SECONDS ?? 10);
const streams = Number(environment.BENCH_STREAMS ?? 50);
const iris = [5.1, 3.5, 1.4, 0.2];
const profileDir = mkdtempSync(join(tmpdir(), "mlmesh-profile-"));
const profiled = ["--cpu-prof", `--cpu-prof-dir=${profileDir}`];

let url: string;
let body: Buffer;
const helpers: BenchService[] = [];
let service: BenchService;
if (target === "predictor") {
  // BENCH_LOGGING=1: every prediction recorded to a monitor on core 1 (under SCHED_IDLE, as bench:monitor runs it).
  const logging = environment.BENCH_LOGGING === "1";
  if (logging) {
    const dir = mkdtempSync(join(tmpdir(), "mlmesh-profile-monitor-"));
    helpers.push(await startBenchService("monitor", 50315, { cpus: "1", idle: true, env: { MONITOR_DATABASE_URL: `file:${join(dir, "monitor.db")}` } }));
  }
  service = await startBenchService("predictor", 50310, { cpus: "0", nodeArgs: profiled, env: logging ? { MONITOR_ADDRESS: "127.0.0.1:50315" } : {} });
  const rows = Array.from({ length: Number(rowsArg) }, () => ({ values: iris }));
  url = `http://${service.address}/mlmesh.predictor.v1.PredictorService/Predict`;
  body = grpcFrame(toBinary(PredictRequestSchema, create(PredictRequestSchema, { model: "iris_svc", rows })));
} else if (target === "proxy") {
  helpers.push(await startBenchService("predictor", 50311, { cpus: "0" }));
  service = await startBenchService("proxy", 50312, { cpus: "0", nodeArgs: profiled, env: { PREDICTOR_PORT: "50311" } });
  url = `http://${service.address}/mlmesh.proxy.v1.ProxyService/PredictLabel`;
  body = grpcFrame(toBinary(PredictLabelRequestSchema, create(PredictLabelRequestSchema, { rows: [{ values: iris }] })));
} else if (target === "registry") {
  const dir = mkdtempSync(join(tmpdir(), "mlmesh-profile-registry-"));
  service = await startBenchService("registry", 50313, { cpus: "0", nodeArgs: profiled, env: { DATABASE_URL: `file:${join(dir, "registry.db")}` } });
  const client = new GrpcClient(service.address);
  const deadlineMs = Date.now() + 10_000;
  const { project } = await client.unary(ModelRegistryService.method.createProject, { name: "bench" }, { deadlineMs });
  const { model } = await client.unary(ModelRegistryService.method.createModel, { projectId: project!.id, name: "iris_svc" }, { deadlineMs });
  await client.unary(ModelRegistryService.method.createModelVersion, { modelId: model!.id, sourceUri: "file://model.onnx" }, { deadlineMs });
  await client.unary(ModelRegistryService.method.setModelVersionAlias, { modelId: model!.id, alias: "production", version: 1 }, { deadlineMs });
  client.close();
  url = `http://${service.address}/mlmesh.registry.v1.ModelRegistryService/GetModelVersionByAlias`;
  body = grpcFrame(toBinary(GetModelVersionByAliasRequestSchema, create(GetModelVersionByAliasRequestSchema, { modelId: model!.id, alias: "production" })));
} else if (target === "batch") {
  // RegisterItems of 1,000 items on SQLite, the job idle (its interval an hour).
  const dir = mkdtempSync(join(tmpdir(), "mlmesh-profile-batch-"));
  service = await startBenchService("batch", 50314, { cpus: "0", nodeArgs: profiled, env: { BATCH_DATABASE_URL: `file:${join(dir, "batch.db")}`, BATCH_INTERVAL: "1h", LIMIT_RATE: "100000", LIMIT_CONCURRENCY: "1000" } });
  url = `http://${service.address}/mlmesh.batch.v1.BatchJobService/RegisterItems`;
  body = grpcFrame(toBinary(RegisterItemsRequestSchema, create(RegisterItemsRequestSchema, { items: Array.from({ length: 1000 }, () => ({ values: iris })) })));
} else {
  throw new Error(`unknown target "${target}": predictor [rows], proxy, registry or batch`);
}

await checkGrpc(url, body);
const result = await h2load({ url, body, streams, seconds, warmupSeconds: 2, cpus: "1" });
await service.stop();
await Promise.all(helpers.map((h) => h.stop()));
console.log(`${target}: ${Math.round(result.rps)} req/s at ${streams} streams, p50 ${result.p50Ms.toFixed(3)} ms`);

// V8's profile: nodes (call frames) and samples (which node was on top, every ~1 ms).
interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
const file = readdirSync(profileDir).find((f) => f.endsWith(".cpuprofile"));
if (!file) throw new Error(`no profile was written to ${profileDir}`);
const profile = JSON.parse(readFileSync(join(profileDir, file), "utf8")) as { nodes: ProfileNode[]; samples: number[] };
const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
const parents = new Map<number, number>();
for (const node of profile.nodes) for (const child of node.children ?? []) parents.set(child, node.id);
const frameName = ({ functionName, url: source, lineNumber }: ProfileNode["callFrame"]) =>
  `${functionName || "(anonymous)"} ${source ? `${source.replace(/^.*\/(node_modules|services|gen)\//, "$1/")}:${lineNumber + 1}` : ""}`;
const byPackage = new Map<string, number>();
const byFunction = new Map<string, number>();
// Inclusive time: a function counts once per sample it is anywhere on the stack of.
const inclusive = new Map<string, number>();
for (const id of profile.samples) {
  const { callFrame } = nodes.get(id)!;
  const pkg = packageOf(callFrame.url, callFrame.functionName);
  byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + 1);
  const key = frameName(callFrame);
  byFunction.set(key, (byFunction.get(key) ?? 0) + 1);
  const onStack = new Set<string>();
  for (let at: number | undefined = id; at !== undefined; at = parents.get(at)) {
    const frame = nodes.get(at)!.callFrame;
    if (frame.url.includes("/services/") || /@bufbuild|prom-client|pino|onnxruntime/.test(frame.url)) onStack.add(frameName(frame));
  }
  for (const name of onStack) inclusive.set(name, (inclusive.get(name) ?? 0) + 1);
}
const total = profile.samples.length;
const top = (map: Map<string, number>, n: number) =>
  [...map]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([name, count]) => `${((count * 100) / total).toFixed(1).padStart(5)} %  ${name}`)
    .join("\n");
console.log(`\nself time by package (${total} samples):\n${top(byPackage, 15)}`);
console.log(`\nself time by function:\n${top(byFunction, 30)}`);
console.log(`\ntime including callees (mlmesh and its libraries):\n${top(inclusive, 30)}`);
console.log(`\nprofile: ${join(profileDir, file)}`);

/** Which package (or "idle", "gc", "node internals", "mlmesh") a frame belongs to. */
function packageOf(source: string, functionName: string): string {
  if (functionName === "(idle)") return "idle";
  if (functionName === "(garbage collector)") return "gc";
  if (functionName === "(program)") return "program (native, outside JS)";
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(source)?.[1];
  if (pkg) return pkg;
  if (source.startsWith("node:")) return `node: ${source.slice(5).split("/")[0]}`;
  if (source === "") return `native: ${functionName}`;
  return "mlmesh";
}
