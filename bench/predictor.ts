// Predictor throughput and latency, side by side with the echo service on the same serving
// stack, measured with ghz in one run. Writes its section of docs/benchmarks.md.
//
//   npm run bench:predictor            (about 2 minutes; runs scripts/install-tools.sh first)
//
// Each server runs pinned to core 0 and ghz to core 1, so the two do not compete for a core;
// every scenario gets a warm-up run that is not recorded.
import { fmt, machineSummary, measure, startBenchService, table, writeDocSection } from "./support.js";
import { readProcessEnvironment } from "../services/runtime/env/variables.js";

const environment = readProcessEnvironment();

const durationSeconds = Number(environment.BENCH_SECONDS ?? 10);
const warmupSeconds = 3;
const serverCpus = "0";
const loadCpus = "1";

const iris = [5.1, 3.5, 1.4, 0.2];
const rows = (n: number) => ({ model: "iris_svc", rows: Array.from({ length: n }, () => ({ values: iris })) });
const echoOf = (n: number) => ({ values: Array.from({ length: n }, () => iris).flat() });

const scenarios = [
  { name: "1 row", predict: rows(1), echo: echoOf(1) },
  { name: "100 rows", predict: rows(100), echo: echoOf(100) },
];
const concurrencies = [1, 50];

const echo = await startBenchService("echo", 50159, { cpus: serverCpus });
const predictor = await startBenchService("predictor", 50152, { cpus: serverCpus });
const results: string[][] = [];
try {
  for (const scenario of scenarios) {
    for (const concurrency of concurrencies) {
      const run = { concurrency, durationSeconds, warmupSeconds, cpus: loadCpus };
      const e = await measure({ ...run, address: echo.address, call: "mlmesh.echo.v1.EchoService/Echo", data: scenario.echo });
      const p = await measure({
        ...run,
        address: predictor.address,
        call: "mlmesh.predictor.v1.PredictorService/Predict",
        data: scenario.predict,
      });
      results.push([
        scenario.name,
        String(concurrency),
        fmt.rps(e.rps),
        fmt.ms(e.p50Ms),
        fmt.ms(e.p99Ms),
        fmt.rps(p.rps),
        fmt.ms(p.p50Ms),
        fmt.ms(p.p99Ms),
        fmt.ratio(p.rps / e.rps),
      ]);
      console.log(results.at(-1)!.join("\t"));
    }
  }
} finally {
  await Promise.all([echo.stop(), predictor.stop()]);
}

await writeDocSection(
  "predictor",
  `
## Predictor vs echo (same serving stack)

Measured ${new Date().toISOString().slice(0, 10)} on ${await machineSummary()}; server pinned to core ${serverCpus}, ghz to core ${loadCpus},
one HTTP/2 connection, ${warmupSeconds} s warm-up then ${durationSeconds} s measured per row, LOG_LEVEL=warn.
Echo sends back as many floats as the Predict request carries (4 per row). Ratio = Predict RPS / echo RPS.

${table(["request", "concurrency", "echo RPS", "echo p50 ms", "echo p99 ms", "Predict RPS", "Predict p50 ms", "Predict p99 ms", "ratio"], results)}

Reproduce: \`npm run bench:predictor\` (bench/predictor.ts; BENCH_SECONDS sets the measured seconds).
`,
);
console.log("wrote docs/benchmarks.md");
