// PredictLabel through the Proxy (fan-out to the three one-vs-rest models) vs one direct
// Predict call, ghz side by side in one run. Writes its section of docs/benchmarks.md.
//
//   npm run bench:proxy                (about 1 minute)
//
// The Predictor and the Proxy share core 0 (as on one small host); ghz runs on core 1.
import { fmt, machineSummary, measure, startBenchService, table, writeDocSection } from "./support.js";
import { readProcessEnvironment } from "../services/runtime/env/variables.js";

const environment = readProcessEnvironment();

const durationSeconds = Number(environment.BENCH_SECONDS ?? 10);
const warmupSeconds = 3;
const row = { values: [5.1, 3.5, 1.4, 0.2] };

const predictor = await startBenchService("predictor", 50172, { cpus: "0" });
const proxy = await startBenchService("proxy", 50174, { cpus: "0", env: { PREDICTOR_PORT: "50172" } });
// The same proxy with one backend: the cost of the hop alone, to tell fan-out from the hop.
const proxyOne = await startBenchService("proxy", 50175, {
  cpus: "0",
  env: { PROXY_BACKENDS: "setosa=127.0.0.1:50172/iris_svc_setosa" },
});
const rows: string[][] = [];
try {
  for (const concurrency of [1, 50]) {
    const run = { concurrency, durationSeconds, warmupSeconds, cpus: "1" };
    const predict = "mlmesh.predictor.v1.PredictorService/Predict";
    const predictLabel = "mlmesh.proxy.v1.ProxyService/PredictLabel";
    const direct = await measure({ ...run, address: predictor.address, call: predict, data: { model: "iris_svc", rows: [row] } });
    const viaProxy = await measure({ ...run, address: proxy.address, call: predictLabel, data: { rows: [row] } });
    const viaProxyOne = await measure({ ...run, address: proxyOne.address, call: predictLabel, data: { rows: [row] } });
    rows.push([
      String(concurrency),
      fmt.rps(direct.rps),
      fmt.ms(direct.p50Ms),
      fmt.ms(direct.p99Ms),
      fmt.rps(viaProxy.rps),
      fmt.ms(viaProxy.p50Ms),
      fmt.ms(viaProxy.p99Ms),
      fmt.ms(viaProxyOne.p50Ms),
      fmt.ratio(viaProxy.p50Ms / direct.p50Ms),
      fmt.ratio(viaProxy.p50Ms / viaProxyOne.p50Ms),
    ]);
    console.log(rows.at(-1)!.join("\t"));
  }
} finally {
  await Promise.all([proxy.stop(), proxyOne.stop(), predictor.stop()]);
}

await writeDocSection(
  "proxy",
  `
## Proxy fan-out vs a direct Predictor call

One row; direct = \`PredictorService/Predict\` on iris_svc; proxy = \`ProxyService/PredictLabel\`,
which calls the three one-vs-rest models in parallel (three backend calls per request) and
aggregates. Measured ${new Date().toISOString().slice(0, 10)} on ${await machineSummary()}; Predictor and Proxy on core 0,
ghz on core 1, ${warmupSeconds} s warm-up then ${durationSeconds} s measured, LOG_LEVEL=warn. "1 backend" is the same proxy
configured with the setosa backend only: the hop without the fan-out.
vs direct = proxy p50 / direct p50 (target <= 1.5); vs 1 backend = 3-backend p50 / 1-backend p50 (1.0 = fully parallel).

${table(["concurrency", "direct RPS", "direct p50 ms", "direct p99 ms", "proxy RPS", "proxy p50 ms", "proxy p99 ms", "1 backend p50 ms", "vs direct", "vs 1 backend"], rows)}

Reproduce: \`npm run bench:proxy\` (bench/proxy.ts).
`,
);
console.log("wrote docs/benchmarks.md");
