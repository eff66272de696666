// The prediction log and the monitor (issue 21), measured side by side in one run:
//  1. what recording every prediction costs the Predictor: 1 row at 50 streams and 100 rows at
//     50 streams, logging off against on (each Predictor pinned to core 0, h2load and the
//     monitor on core 1, the monitor under SCHED_IDLE), in interleaved rounds, then in paired
//     rounds (both loaded at once, sharing core 0); then every call's record counted in the
//     monitor's database (0 lost) and the drop counter read;
//  2. the monitor's ingestion on one core (pinned to core 0; this process sends pre-encoded
//     records from core 1, whole and in blocks), and GetPrediction by request id over 1,000
//     random ids;
//  3. the monitor down for BENCH_DOWN_SECONDS (default 300) under full load: the Predictor's
//     requests/s against logging off, its RSS every 5 s, then the monitor started again and
//     the records missing compared with the drop counter.
// Writes its section of docs/benchmarks.md.
//
//   npm run bench:monitor        (installs h2load first; about 17 minutes)
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import Database from "better-sqlite3";
import { MonitorService } from "../gen/mlmesh/monitor/v1/monitor_pb.js";
import { PredictRequestSchema } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { GrpcClient } from "../services/runtime/client/grpc-client.js";
import { readProcessEnvironment } from "../services/runtime/env/variables.js";
import { RecordBlock } from "../services/runtime/prediction-log/record-block.js";
import { encodeIngestRequest, encodeRecord, ProtoWriter, RecordSource, type RecordFacts } from "../services/runtime/prediction-log/record-writer.js";
import { checkGrpc, grpcFrame, h2load, medianOf, pin, type LoadResult } from "./h2load.js";
import { machineSummary, startBenchService, table, writeDocSection, type BenchService } from "./support.js";

const environment = readProcessEnvironment();
const seconds = Number(environment.BENCH_SECONDS ?? 5);
const runs = Number(environment.BENCH_RUNS ?? 3);
/** Rounds of logging off and on loaded at once (paired). */
const pairRuns = Number(environment.BENCH_PAIR_RUNS ?? 25);
const downSeconds = Number(environment.BENCH_DOWN_SECONDS ?? 300);
const ingestRecords = Number(environment.BENCH_INGEST_RECORDS ?? 1_000_000);
/** BENCH_ONLY=cost,ingest,down picks parts (a part does not write the doc); BENCH_PROFILE=1 profiles the ingesting monitor (--cpu-prof into the working folder). */
const only = new Set((environment.BENCH_ONLY ?? "cost,ingest,down").split(","));
const iris = [5.1, 3.5, 1.4, 0.2];
/** The iris classifier's labels, one list for every record (as a loaded version shares its own). */
const irisLabels = ["setosa", "versicolor", "virginica"];
const predictPath = "/mlmesh.predictor.v1.PredictorService/Predict";
const predictBody = (rows: number) => grpcFrame(toBinary(PredictRequestSchema, create(PredictRequestSchema, { model: "iris_svc", rows: Array.from({ length: rows }, () => ({ values: iris })) })));
const scratch = mkdtempSync(join(tmpdir(), "mlmesh-bench-monitor-"));
const started: BenchService[] = [];
let port = 50400;

async function start(service: string, cpus: string, env: Record<string, string> = {}, at = port++, nodeArgs: string[] = [], idle?: boolean): Promise<BenchService> {
  const s = await startBenchService(service, at, { cpus, env, nodeArgs, idle });
  started.push(s);
  return s;
}

async function metric(address: string, pattern: RegExp): Promise<number> {
  const text = await (await fetch(`http://${address}/metrics`)).text();
  return [...text.matchAll(new RegExp(pattern.source, "gm"))].reduce((sum, m) => sum + Number(m[1]), 0);
}

const predictOk = (address: string) => metric(address, /^mlmesh_rpc_requests_total\{service="mlmesh\.predictor\.v1\.PredictorService",method="Predict",[^}]*code="OK"\} (\d+)/);
const dropped = (address: string) => metric(address, /^mlmesh_prediction_log_dropped_total\{[^}]*\} (\d+)/);
/** The drop counter by reason, as "queue_full 12, rejected 0" (none: "none"). */
async function dropReasons(address: string): Promise<string> {
  const text = await (await fetch(`http://${address}/metrics`)).text();
  const reasons = [...text.matchAll(/^mlmesh_prediction_log_dropped_total\{reason="([a-z_]+)"\} (\d+)/gm)].filter((m) => m[2] !== "0").map((m) => `${m[1]} ${m[2]}`);
  return reasons.length === 0 ? "none" : reasons.join(", ");
}
const queueBytes = (address: string) => metric(address, /^mlmesh_prediction_log_queue_bytes (\d+)/);

function storedRecords(dbFile: string, model: string): number {
  const db = new Database(dbFile, { readonly: true });
  try {
    return (db.prepare(`SELECT count(*) AS n FROM prediction_records WHERE model = ?`).get(model) as { n: number }).n;
  } finally {
    db.close();
  }
}

/** CPU time a process has used, in milliseconds (user + system, from /proc). */
function cpuMs(pid: number): number {
  const { userMs, systemMs } = cpuSplitMs(pid);
  return userMs + systemMs;
}

/** A process's user and system (kernel) CPU time, in milliseconds. */
function cpuSplitMs(pid: number): { userMs: number; systemMs: number } {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  // utime and stime are fields 14 and 15 of stat (11 and 12 after the command), in clock ticks (100 Hz).
  return { userMs: Number(fields[11]) * 10, systemMs: Number(fields[12]) * 10 };
}

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const doc: string[] = [];

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

/**
 * A 95 % interval of the median of `values` (percentile bootstrap, 4,000 resamples, seeded so a
 * run's figures can be recomputed): how far the median could move if the rounds were run again.
 */
function medianInterval(values: readonly number[]): [number, number] {
  let seed = 0x2545f491;
  // mulberry32: a small seeded generator; Math.random cannot be seeded.
  const random = () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const medians = Array.from({ length: 4000 }, () => median(values.map(() => values[Math.floor(random() * values.length)])));
  medians.sort((a, b) => a - b);
  return [medians[Math.floor(medians.length * 0.025)], medians[Math.floor(medians.length * 0.975)]];
}

/** Part 1: logging off against on, interleaved; then every record counted. */
async function loggingCost(): Promise<void> {
  const monitorDb = join(scratch, "monitor-cost.db");
  // The monitor shares core 1 with h2load under SCHED_IDLE: it works in what the load generator
  // leaves, and yields at once when h2load wakes (elsewhere it runs on machines of its own).
  const monitor = await start("monitor", "1", { MONITOR_DATABASE_URL: `file:${monitorDb}` }, port++, [], true);
  const off = await start("predictor", "0");
  const on = await start("predictor", "0", { MONITOR_ADDRESS: monitor.address });
  const plain = await start("predictor", "0", { PREDICTOR_OUTLIER_MODELS: "none" });
  const scenarios = [
    { name: "logging off", server: off },
    { name: "logging on (every prediction)", server: on },
    { name: "logging off, outlier scoring off", server: plain },
  ];
  const loads = [
    { rows: 1, streams: 50 },
    { rows: 100, streams: 50 },
  ];
  const results = new Map<string, LoadResult[]>();
  /** Per scenario and load: the Predictor's CPU milliseconds per Predict call (warm-ups included), per round. */
  const cpuPerCall = new Map<string, number[]>();
  /** Per scenario and load: the share of the run's wall time the Predictor was on its core, per round. */
  const busyShare = new Map<string, number[]>();
  for (const s of scenarios) for (const l of loads) await checkGrpc(`http://${s.server.address}${predictPath}`, predictBody(l.rows));
  for (let round = 0; round < runs; round++) {
    for (const l of loads) {
      for (const s of scenarios) {
        const key = `${s.name}|${l.rows}`;
        const [cpuBefore, callsBefore, splitBefore] = [cpuMs(s.server.pid), await predictOk(s.server.address), cpuSplitMs(s.server.pid)];
        const wallBefore = performance.now();
        const r = await h2load({ url: `http://${s.server.address}${predictPath}`, body: predictBody(l.rows), streams: l.streams, seconds, warmupSeconds: 2, cpus: "1" });
        const [cpuAfter, callsAfter, splitAfter] = [cpuMs(s.server.pid), await predictOk(s.server.address), cpuSplitMs(s.server.pid)];
        const busy = (cpuAfter - cpuBefore) / (performance.now() - wallBefore);
        busyShare.set(key, [...(busyShare.get(key) ?? []), busy]);
        results.set(key, [...(results.get(key) ?? []), r]);
        cpuPerCall.set(key, [...(cpuPerCall.get(key) ?? []), (cpuAfter - cpuBefore) / (callsAfter - callsBefore)]);
        const calls = callsAfter - callsBefore;
        const perCall = (ms: number) => ((ms / calls) * 1000).toFixed(1);
        console.log(
          `${s.name}\t${l.rows} rows\t${Math.round(r.rps)} req/s\tp50 ${r.p50Ms.toFixed(3)} ms\tCPU µs/call: user ${perCall(splitAfter.userMs - splitBefore.userMs)}, system ${perCall(splitAfter.systemMs - splitBefore.systemMs)}\tbusy ${(busy * 100).toFixed(1)} %`,
        );
      }
    }
  }
  const rows: string[][] = [];
  for (const l of loads) {
    const base = medianOf(results.get(`logging off|${l.rows}`)!);
    for (const s of scenarios) {
      const m = medianOf(results.get(`${s.name}|${l.rows}`)!);
      const cpu = median(cpuPerCall.get(`${s.name}|${l.rows}`)!);
      const baseCpu = median(cpuPerCall.get(`logging off|${l.rows}`)!);
      rows.push([
        s.name,
        String(l.rows),
        String(l.streams),
        `${Math.round(m.rps)} (${Math.round(m.min)}-${Math.round(m.max)})`,
        `${Math.round(m.rps * l.rows)}`,
        (m.rps / base.rps).toFixed(3),
        `${(cpu * 1000).toFixed(1)}`,
        (baseCpu / cpu).toFixed(3),
        `${(median(busyShare.get(`${s.name}|${l.rows}`)!) * 100).toFixed(1)}`,
        m.p50Ms.toFixed(3),
        m.p99Ms.toFixed(3),
      ]);
    }
  }
  for (const r of rows) console.log(r.join("\t"));
  const paired = await pairedRounds(off, on, loads);
  // Every call of the logging Predictor has its record (after the queue drained).
  await waitFor("the prediction log to drain", async () => (await queueBytes(on.address)) === 0, 30_000);
  await new Promise((r) => setTimeout(r, 1000));
  const calls = await predictOk(on.address);
  const stored = storedRecords(monitorDb, "iris_svc");
  const drops = await dropped(on.address);
  const reasons = await dropReasons(on.address);
  console.log(`calls ${calls}, records stored ${stored}, dropped ${drops} (${reasons})`);
  doc.push(
    "### What recording every prediction costs the Predictor",
    "",
    `Each Predictor pinned to core 0; h2load (one connection) on core 1, and the monitor on core 1 under SCHED_IDLE (it works in what h2load leaves, and yields when h2load wakes). Median of ${runs} interleaved rounds of ${seconds} s (min-max in brackets); ratio against logging off in the same run. Outlier scoring is on in the first two (iris_svc ships outlier.onnx).`,
    "",
    table(["Predictor", "rows/request", "streams", "req/s", "rows/s", "÷ logging off", "Predictor CPU µs/call", "calls per CPU-second ÷ logging off", "Predictor busy %", "p50 ms", "p99 ms"], rows),
    "",
    "req/s is what h2load saw. The Predictor's CPU per call is from /proc, over every call of the run (warm-ups included) that its /metrics counted; it depends on the load too, since concurrent calls share onnxruntime runs. Predictor busy is its CPU time over the run's wall time: under 100 % when it waited for requests (the load generator, not the Predictor, set the pace).",
    "",
    `**Paired rounds.** This machine's speed drifts by ±20 % from one round to the next, more than the cost being measured, so the rounds above scatter around it. In ${pairRuns} paired rounds of ${seconds} s, both Predictors ran at once on core 0, each loaded by its own h2load on core 1 (50 streams): the kernel gives each half the core, so req/s with logging ÷ req/s without is what a call costs with logging against without, and whatever the machine does in a round it does to both.`,
    "",
    table(["rows/request", "streams", "req/s logging off", "req/s logging on", "on ÷ off, median (min-max)", "95 % interval of the median", "CPU share off / on"], paired),
    "",
    "The interval is a percentile bootstrap of the rounds' ratios: a median whose interval straddles 0.950 is not told apart from the target by one run.",
    "",
    `Records lost while the monitor was up: the logging Predictor answered ${calls} Predict calls OK (warm-ups included); the monitor stored ${stored} records of iris_svc; the drop counter says ${drops} (by reason: ${reasons}). Lost: ${calls - stored}.`,
  );
  for (const s of [monitor, off, on, plain]) await s.stop();
}

/**
 * Logging off and on loaded at the same time on one core: per round, each one's req/s and CPU
 * share, and the ratio. Returns a table row per load.
 */
async function pairedRounds(off: BenchService, on: BenchService, loads: readonly { rows: number; streams: number }[]): Promise<string[][]> {
  const rows: string[][] = [];
  for (const l of loads) {
    const ratios: number[] = [];
    const rps: [number[], number[]] = [[], []];
    const shares: [number[], number[]] = [[], []];
    for (let round = 0; round < pairRuns; round++) {
      const cpuBefore = [cpuMs(off.pid), cpuMs(on.pid)];
      const wallBefore = performance.now();
      const [a, b] = await Promise.all([off, on].map((s) => h2load({ url: `http://${s.address}${predictPath}`, body: predictBody(l.rows), streams: l.streams, seconds, warmupSeconds: 2, cpus: "1" })));
      const wall = performance.now() - wallBefore;
      const share = [(cpuMs(off.pid) - cpuBefore[0]) / wall, (cpuMs(on.pid) - cpuBefore[1]) / wall];
      ratios.push(b.rps / a.rps);
      rps[0].push(a.rps);
      rps[1].push(b.rps);
      shares[0].push(share[0]);
      shares[1].push(share[1]);
      console.log(`paired\t${l.rows} rows\toff ${Math.round(a.rps)} req/s (${(share[0] * 100).toFixed(1)} % CPU)\ton ${Math.round(b.rps)} req/s (${(share[1] * 100).toFixed(1)} % CPU)\ton ÷ off ${(b.rps / a.rps).toFixed(3)}`);
    }
    const [min, max] = [Math.min(...ratios), Math.max(...ratios)];
    const [low, high] = medianInterval(ratios);
    rows.push([
      String(l.rows),
      String(l.streams),
      String(Math.round(median(rps[0]))),
      String(Math.round(median(rps[1]))),
      `**${median(ratios).toFixed(3)}** (${min.toFixed(3)}-${max.toFixed(3)})`,
      `${low.toFixed(3)}-${high.toFixed(3)}`,
      `${(median(shares[0]) * 100).toFixed(1)} % / ${(median(shares[1]) * 100).toFixed(1)} %`,
    ]);
    console.log(rows[rows.length - 1].join("\t"));
  }
  return rows;
}

/** Part 2: ingestion on one core, and GetPrediction by request id. */
async function ingestion(): Promise<void> {
  const perMessage = 1000;
  const perStream = 10;
  const ids: string[] = [];
  // The same records in both forms a sender uses: each record whole, and (what the Predictor
  // sends for a successful classifier call) a block of a message's records.
  const recordStreams: Uint8Array[][] = [];
  const blockStreams: Uint8Array[][] = [];
  const block = new RecordBlock();
  const now = Date.now();
  for (let sent = 0; sent < ingestRecords; sent += perMessage * perStream) {
    const recordMessages: Uint8Array[] = [];
    const blockMessages: Uint8Array[] = [];
    for (let m = 0; m < perStream; m++) {
      const records: Uint8Array[] = [];
      for (let i = 0; i < perMessage; i++) {
        const requestId = randomUUID();
        if (Math.random() < 0.001) ids.push(requestId);
        const facts: RecordFacts = {
          requestId,
          traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
          source: RecordSource.predictor,
          api: "predict",
          model: "iris_svc",
          version: 1,
          timeMs: now + Math.floor((sent + m * perMessage + i) / 100),
          latencyMs: 0.2,
          status: 0,
          rowCount: 1,
          rows: { width: 4, values: Float32Array.from(iris) },
          classification: { labels: irisLabels, probabilities: Float32Array.from([0.97, 0.02, 0.01]) },
          outlierScores: Float32Array.from([-0.1]),
        };
        records.push(encodeRecord(facts, 65536));
        if (block.records === 0) block.start(facts);
        block.add(facts);
      }
      recordMessages.push(encodeIngestRequest(records));
      const w = new ProtoWriter(Buffer.allocUnsafe(128 * 1024));
      block.writeTo(w);
      blockMessages.push(w.buffer.subarray(0, w.at));
    }
    recordStreams.push(recordMessages);
    blockStreams.push(blockMessages);
  }
  const size = (streams: Uint8Array[][]) => Math.round(streams[0][0].length / perMessage);
  const rows: string[][] = [];
  for (const [form, streams] of [
    ["records, each whole", recordStreams],
    ["blocks of 1,000", blockStreams],
  ] as const) {
    const monitorDb = join(scratch, `monitor-ingest-${rows.length}.db`);
    const monitor = await start("monitor", "0", { MONITOR_DATABASE_URL: `file:${monitorDb}` }, port++, environment.BENCH_PROFILE ? ["--cpu-prof"] : []);
    await pin(process.pid, "1");
    const begin = performance.now();
    let next = 0;
    // Eight senders, each on its own connection, as eight Predictors would be.
    const lane = async () => {
      const sender = new GrpcClient(monitor.address);
      while (next < streams.length) {
        const messages = streams[next++];
        await sender.clientStreamBytes(MonitorService.method.ingestRecords, messages, { deadlineMs: Date.now() + 120_000 });
      }
      sender.close();
    };
    await Promise.all(Array.from({ length: 8 }, lane));
    const elapsed = (performance.now() - begin) / 1000;
    const stored = storedRecords(monitorDb, "iris_svc");
    const perSecond = stored / elapsed;
    console.log(`${form}: ingested ${stored} records in ${elapsed.toFixed(1)} s: ${Math.round(perSecond)} records/s`);
    const latencies: number[] = [];
    const client = new GrpcClient(monitor.address);
    const { GetPredictionRequestSchema } = await import("../gen/mlmesh/monitor/v1/monitor_pb.js");
    for (let k = 0; k < 1000; k++) {
      const id = ids[k % ids.length];
      const t = performance.now();
      await client.unaryBytes(MonitorService.method.getPrediction, toBinary(GetPredictionRequestSchema, create(GetPredictionRequestSchema, { requestId: id })), { deadlineMs: Date.now() + 5000 });
      latencies.push(performance.now() - t);
    }
    latencies.sort((a, b) => a - b);
    const p = (q: number) => latencies[Math.floor(q * (latencies.length - 1))].toFixed(2);
    console.log(`GetPrediction p50 ${p(0.5)} ms p99 ${p(0.99)} ms`);
    rows.push([form, String(size(streams)), String(stored), elapsed.toFixed(1), String(Math.round(perSecond)), p(0.5), p(0.99)]);
    client.close();
    await monitor.stop();
  }
  doc.push(
    "",
    "### The monitor's ingestion on one core, and a record by request id",
    "",
    `The monitor pinned to core 0 on SQLite (synchronous FULL), a fresh database per row; this benchmark on core 1 sends ${ingestRecords} pre-encoded records (4 features, 3 probabilities, an outlier score) in messages of ${perMessage}, ${perStream} messages per IngestRecords stream, eight streams at a time. The records come whole, or in blocks (what the Predictor sends for a successful classifier call: the monitor writes each record from the block's columns).`,
    "",
    table(["records sent as", "bytes per record", "records", "seconds", "records/s", "GetPrediction p50 ms", "GetPrediction p99 ms"], rows),
    "",
    `GetPrediction: 1,000 calls in sequence over ${ids.length} request ids drawn at random from the table (round trip on loopback included).`,
  );
}

/** Part 3: the monitor down under load. */
async function monitorDown(): Promise<void> {
  const monitorDb = join(scratch, "monitor-down.db");
  const monitorPort = port++;
  const predictor = await start("predictor", "0", { MONITOR_ADDRESS: `127.0.0.1:${monitorPort}` });
  const url = `http://${predictor.address}${predictPath}`;
  await checkGrpc(url, predictBody(1));
  // The reference: the same load on a Predictor logging nothing, just before.
  const off = await start("predictor", "0");
  const offUrl = `http://${off.address}${predictPath}`;
  await checkGrpc(offUrl, predictBody(1));
  const reference = await h2load({ url: offUrl, body: predictBody(1), streams: 50, seconds: 30, warmupSeconds: 2, cpus: "1" });
  await off.stop();
  const rss: number[] = [rssMiB(predictor.pid)];
  const sampler = setInterval(() => rss.push(rssMiB(predictor.pid)), 5000);
  const load = await h2load({ url, body: predictBody(1), streams: 50, seconds: downSeconds, warmupSeconds: 2, cpus: "1" });
  clearInterval(sampler);
  const monitor = await start("monitor", "1", { MONITOR_DATABASE_URL: `file:${monitorDb}` }, monitorPort);
  await waitFor("the prediction log to drain", async () => (await queueBytes(predictor.address)) === 0, 120_000);
  await new Promise((r) => setTimeout(r, 1000));
  const calls = await predictOk(predictor.address);
  const stored = storedRecords(monitorDb, "iris_svc");
  const drops = await dropped(predictor.address);
  const downReasons = await dropReasons(predictor.address);
  console.log(`down ${downSeconds} s: ${Math.round(load.rps)} req/s; calls ${calls}, stored ${stored}, dropped ${drops}; RSS ${rss.map((r) => r.toFixed(0)).join(" ")}`);
  const firstMinute = rss.slice(0, 13);
  doc.push(
    "",
    `### The monitor down for ${downSeconds / 60} minutes under load`,
    "",
    `A Predictor recording every prediction to a monitor that is not there, under h2load at 1 row and 50 streams for ${downSeconds} s (Predictor on core 0, h2load on core 1); then the monitor is started and the queue drains into it. PREDICTION_LOG_QUEUE_BYTES is the default 64 MiB.`,
    "",
    table(
      ["req/s (monitor down)", "÷ logging off", "p99 ms", "RSS MiB: start, max of 1st minute, max, end", "calls OK", "records stored", "drop counter", "calls - stored"],
      [
        [
          String(Math.round(load.rps)),
          `${(load.rps / reference.rps).toFixed(3)} (${Math.round(reference.rps)} req/s, 30 s just before)`,
          load.p99Ms.toFixed(3),
          `${rss[0].toFixed(0)}, ${Math.max(...firstMinute).toFixed(0)}, ${Math.max(...rss).toFixed(0)}, ${rss[rss.length - 1].toFixed(0)}`,
          String(calls),
          String(stored),
          String(drops),
          String(calls - stored),
        ],
      ],
    ),
    "",
    `Drops by reason: ${downReasons}. RSS every 5 s: ${rss.map((r) => r.toFixed(0)).join(" ")} MiB.`,
  );
  await monitor.stop();
  await predictor.stop();
}

try {
  if (only.has("cost")) await loggingCost();
  if (only.has("ingest")) await ingestion();
  await pin(process.pid, "0,1");
  if (only.has("down")) await monitorDown();
  if (only.size === 3) await writeDocSection("monitor", [`## Prediction log and monitor (issue 21): cost, ingestion, a monitor down`, "", await machineSummary(), "", ...doc, "", "`npm run bench:monitor` writes this section."].join("\n"));
} finally {
  for (const s of started) await s.stop().catch(() => undefined);
  rmSync(scratch, { recursive: true, force: true });
}
