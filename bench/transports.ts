// The serving-stack choice, measured: the echo service with native gRPC served by
// serve/grpc-h2.ts (GRPC_STACK=node-http2, the default), by grpc-js (GRPC_STACK=grpc-js) and by
// connect-node (GRPC_STACK=connect-node), same handlers and runtime, ghz side by side in one run. Writes its section of docs/benchmarks.md.
//
//   npm run bench:transports           (about 1 minute)
import { fmt, machineSummary, measure, startBenchService, table, writeDocSection, type GhzResult } from "./support.js";
import { readProcessEnvironment } from "../services/runtime/env/variables.js";

const environment = readProcessEnvironment();

const durationSeconds = Number(environment.BENCH_SECONDS ?? 10);
const warmupSeconds = 3;
const stacks = ["node-http2", "grpc-js", "connect-node"] as const;
const data = { values: [5.1, 3.5, 1.4, 0.2] };

const servers = await Promise.all(
  stacks.map((stack, i) => startBenchService("echo", 50160 + i, { cpus: "0", env: { GRPC_STACK: stack } })),
);
const rows: string[][] = [];
try {
  for (const concurrency of [1, 50]) {
    const results: GhzResult[] = [];
    for (const server of servers) {
      const call = "mlmesh.echo.v1.EchoService/Echo";
      results.push(await measure({ address: server.address, call, data, concurrency, durationSeconds, warmupSeconds, cpus: "1" }));
    }
    results.forEach((r, i) => {
      rows.push([stacks[i], String(concurrency), fmt.rps(r.rps), fmt.ms(r.p50Ms), fmt.ms(r.p99Ms), fmt.ratio(r.rps / results[stacks.indexOf("connect-node")].rps)]);
      console.log(rows.at(-1)!.join("\t"));
    });
  }
} finally {
  await Promise.all(servers.map((s) => s.stop()));
}

await writeDocSection(
  "transports",
  `
## Serving stack: native gRPC on node:http2, grpc-js and connect-node

The echo service (4 floats in, 4 out) on the shared runtime with \`GRPC_STACK=node-http2\`
(serve/grpc-h2.ts, the default), \`GRPC_STACK=grpc-js\` and \`GRPC_STACK=connect-node\`: the
same handlers, validation and logging; only the server of native gRPC differs. Measured ${new Date().toISOString().slice(0, 10)} on ${await machineSummary()}; server on core 0, ghz on core 1,
one connection, ${warmupSeconds} s warm-up then ${durationSeconds} s measured, LOG_LEVEL=warn. Ratio = RPS / connect-node RPS.

${table(["native gRPC served by", "concurrency", "RPS", "p50 ms", "p99 ms", "ratio"], rows)}

ghz (one Go process on one core) is itself near its limit at concurrency 50, so the figures of
the two fast stacks understate the gap that h2load measured (grpc-js ~16,000 vs connect-node
~2,800 RPS: "Transport ceilings" above; node-http2 against grpc-js on the Predictor: "The
serving path"). gRPC-web and Connect are served by connect-node in every setting.

Reproduce: \`npm run bench:transports\` (bench/transports.ts).
`,
);
console.log("wrote docs/benchmarks.md");
