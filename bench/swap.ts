// The deployment loop's swap under load: a Predictor in registry mode answers
// Predict(iris_svc@production) from 50 concurrent callers while "production" moves from v1 to
// v2 in the registry. Every call's latency and answering version is recorded; the table gives
// the calls and failures, p50 and p99 before, during and after the swap, and how long the
// switch took to become visible. Writes its section of docs/benchmarks.md.
//
//   npm run bench:swap                 (about 20 s)
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { PredictorService } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { pushModelFolder, registryClient, resolveModel } from "../services/cli/model-push.js";
import { fmt, machineSummary, repoRoot, startBenchService, table, writeDocSection } from "./support.js";

const concurrency = 50;
const phaseMs = 4000;
const row = { values: [5.9, 3.0, 4.2, 1.5] };

interface Call {
  readonly sentAt: number;
  readonly ms: number;
  readonly version: number;
  readonly failed: boolean;
}

const dir = mkdtempSync(join(tmpdir(), "mlmesh-bench-swap-"));
const registry = await startBenchService("registry", 50195, {
  env: { DATABASE_URL: `file:${join(dir, "registry.db")}`, ARTIFACT_DIR: join(dir, "artifacts") },
});
const registryCalls = registryClient(registry.address, "bench");
const { id: modelId } = await resolveModel(registryCalls, { project: "iris", name: "iris_svc" }, true);
await pushModelFolder(registryCalls, join(repoRoot, "models/iris_svc/1"), { modelId, modelName: "iris_svc", alias: "production" });
await pushModelFolder(registryCalls, join(repoRoot, "test/fixtures/models/iris_svc/2"), { modelId, modelName: "iris_svc" });
const predictor = await startBenchService("predictor", 50196, { env: { REGISTRY_ADDRESS: registry.address } });

const client = createClient(PredictorService, createGrpcTransport({ baseUrl: `http://${predictor.address}` }));
const calls: Call[] = [];
let running = true;
const lanes = Array.from({ length: concurrency }, async () => {
  while (running) {
    const sentAt = performance.now();
    try {
      const { version } = await client.predict({ model: "iris_svc@production", rows: [row] });
      calls.push({ sentAt, ms: performance.now() - sentAt, version, failed: false });
    } catch (err) {
      calls.push({ sentAt, ms: performance.now() - sentAt, version: 0, failed: true });
      if (calls.filter((c) => c.failed).length === 1) console.error(`first failed call: ${ConnectError.from(err).message}`);
    }
  }
});
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
await sleep(phaseMs); // warm-up: not recorded below
const before = performance.now();
await sleep(phaseMs);
const movedAt = performance.now();
await registryCalls.setModelVersionAlias({ modelId, alias: "production", version: 2 });
while (!calls.some((c) => c.sentAt > movedAt && c.version === 2)) await sleep(5);
const switchedAt = Math.min(...calls.filter((c) => c.sentAt > movedAt && c.version === 2).map((c) => c.sentAt + c.ms));
const swapEnd = switchedAt + 1000;
await sleep(swapEnd - performance.now() + phaseMs);
running = false;
await Promise.all(lanes);
await predictor.stop();
await registry.stop();
rmSync(dir, { recursive: true, force: true });

const windowOf = (from: number, to: number) => calls.filter((c) => c.sentAt >= from && c.sentAt < to);
const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
};
const rowOf = (name: string, window: Call[], seconds: number) => {
  const versions = [...new Set(window.map((c) => c.version))].sort().map((v) => `v${v}`).join(", ");
  return [
    name,
    fmt.rps(window.length / seconds),
    String(window.length),
    String(window.filter((c) => c.failed).length),
    fmt.ms(percentile(window.map((c) => c.ms), 50)),
    fmt.ms(percentile(window.map((c) => c.ms), 99)),
    versions,
  ];
};
const rows = [
  rowOf("before (v1)", windowOf(before, movedAt), (movedAt - before) / 1000),
  rowOf("during: the move until 1 s after the first v2 answer", windowOf(movedAt, swapEnd), (swapEnd - movedAt) / 1000),
  rowOf("after (v2)", windowOf(swapEnd, swapEnd + phaseMs), phaseMs / 1000),
];
console.log(rows.map((r) => r.join("\t")).join("\n"));
const outOfOrder = calls.filter((c) => c.sentAt > switchedAt && c.version !== 2).length;

await writeDocSection(
  "swap",
  `
## The deployment loop: moving "production" under load

A Predictor in registry mode (REGISTRY_ADDRESS) answers Predict(iris_svc@production), 1 row,
from ${concurrency} concurrent callers (one Node connect-node client over one HTTP/2 connection) while the
registry moves "production" from version 1 to version 2 (SetModelVersionAlias). The Predictor
hears of it on its WatchModelEvents stream, loads and warms v2, swaps, then releases v1 after
its last call. Measured ${new Date().toISOString().slice(0, 10)} on ${await machineSummary()}; registry on SQLite; nothing
pinned (client, registry and Predictor share the 2 cores: absolute figures are the client's).

${table(["window", "calls/s", "calls", "failed", "p50 ms", "p99 ms", "answered by"], rows)}

The switch was visible ${fmt.ms(switchedAt - movedAt)} ms after the alias moved (the registry's
commit to the first answer from v2); ${outOfOrder} calls sent after that were answered by v1.

Reproduce: \`npm run bench:swap\` (bench/swap.ts). The same swap is a test, on SQLite and
PostgreSQL, with ghz sending 30,000 calls at concurrency 50 (test/deployment.test.ts).
`,
);
console.log("wrote docs/benchmarks.md");
