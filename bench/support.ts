// Shared by the benchmark scripts: start services as real processes, run ghz, format tables.
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { catalogEntry } from "../services/catalog.js";
import { checkHealth, ServingStatus } from "../services/runtime/client/health-client.js";
import { readProcessEnvironment } from "../services/runtime/env/variables.js";

const environment = readProcessEnvironment();

export const repoRoot = fileURLToPath(new URL("..", import.meta.url));
// Services are measured as `npm start` runs them, from dist/: bin/mlmesh.js runs the TypeScript
// through tsx's loader instead when the build is older than a file under services/ or gen/
// (one edited README is enough), and a run's figures would then not be the build's. (A file
// edited during a run still turns the services started after it to the TypeScript.)
execFileSync(process.execPath, [join(repoRoot, "scripts/build.mjs")], { stdio: "inherit" });
const ghz = `${repoRoot}.tools/bin/ghz`;

/**
 * A service process started for a benchmark, optionally pinned to CPU cores with taskset, and
 * optionally from another checkout (a baseline measured side by side in the same run).
 */
export interface BenchService {
  readonly address: string;
  readonly pid: number;
  stop(): Promise<void>;
}

export async function startBenchService(
  service: string,
  port: number,
  options: {
    cpus?: string;
    env?: Record<string, string>;
    checkout?: string;
    nodeArgs?: readonly string[];
    /**
     * Runs the service under SCHED_IDLE: it gets its cores only when no other process wants them,
     * and gives them up at once when one wakes (stricter than nice 19, which still takes a share).
     */
    idle?: boolean;
  } = {},
): Promise<BenchService> {
  const entry = catalogEntry(service);
  if (entry === undefined) throw new Error(`no service "${service}" in services/catalog.ts`);
  const command = [process.execPath, ...(options.nodeArgs ?? []), `${options.checkout ?? repoRoot}/bin/mlmesh.js`, "serve", service];
  const scheduled = options.idle ? ["chrt", "--idle", "0", ...command] : command;
  const [file, ...args] = options.cpus ? ["taskset", "-c", options.cpus, ...scheduled] : scheduled;
  const child: ChildProcess = spawn(file, args, {
    env: { ...environment, LOG_LEVEL: "warn", HOST: "127.0.0.1", [entry.portVariable]: String(port), ...options.env },
    stdio: ["ignore", "inherit", "inherit"],
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const address = `127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  while ((await checkHealth(address, "", 1000)) !== ServingStatus.SERVING) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`${service} did not start on ${address}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return {
    address,
    pid: child.pid!,
    stop: () => {
      child.kill("SIGTERM");
      return exited;
    },
  };
}

/** One ghz run's figures. */
export interface GhzResult {
  readonly rps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly count: number;
  readonly errors: number;
}

/** Options of one ghz run. */
export interface GhzOptions {
  address: string;
  call: string;
  /** The request as JSON; or its serialized bytes (ghz --binary-file), to spare ghz the JSON. */
  data: unknown;
  concurrency: number;
  durationSeconds: number;
  cpus?: string;
  /** Connections the concurrency is spread over (default 1). */
  connections?: number;
  /** "wait": the calls in flight when the duration ends are awaited and counted, not cut (default "close"). */
  durationStop?: "close" | "wait";
}

/**
 * A warm-up run that is not recorded, then the measured run. Fails when more calls failed than
 * were in flight when the duration ended (ghz closes its connection under those).
 */
export async function measure(options: GhzOptions & { warmupSeconds: number }): Promise<GhzResult> {
  await runGhz({ ...options, durationSeconds: options.warmupSeconds });
  const result = await runGhz(options);
  if (result.errors > options.concurrency) {
    throw new Error(`${options.call} at ${options.address}, concurrency ${options.concurrency}: ${result.errors} errors`);
  }
  return result;
}

/** Runs ghz against a method (schema by server reflection) and returns its figures. */
export async function runGhz(options: GhzOptions): Promise<GhzResult> {
  let data = ["--data", JSON.stringify(options.data)];
  if (options.data instanceof Uint8Array) {
    const file = join(await mkdtemp(join(tmpdir(), "mlmesh-ghz-")), "request.bin");
    await writeFile(file, options.data);
    data = ["--binary-file", file];
  }
  const ghzArgs = [
    "--insecure",
    "--call",
    options.call,
    ...data,
    "--concurrency",
    String(options.concurrency),
    "--connections",
    String(options.connections ?? 1),
    "--duration",
    `${options.durationSeconds}s`,
    "--duration-stop",
    options.durationStop ?? "close",
    "--format",
    "json",
    options.address,
  ];
  const [file, args] = options.cpus ? ["taskset", ["-c", options.cpus, ghz, ...ghzArgs]] : [ghz, ghzArgs];
  const { stdout } = await promisify(execFile)(file, args, { maxBuffer: 256 * 1024 * 1024 });
  const report = JSON.parse(stdout) as {
    count: number;
    rps: number;
    latencyDistribution: { percentage: number; latency: number }[] | null;
    statusCodeDistribution: Record<string, number>;
  };
  const percentile = (p: number) => (report.latencyDistribution?.find((d) => d.percentage === p)?.latency ?? NaN) / 1e6;
  const ok = report.statusCodeDistribution.OK ?? 0;
  return { rps: report.rps, p50Ms: percentile(50), p99Ms: percentile(99), count: report.count, errors: report.count - ok };
}

/** A Markdown table. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const line = (cells: readonly string[]) => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}

export const fmt = {
  rps: (n: number) => Math.round(n).toLocaleString("en-US"),
  ms: (n: number) => n.toFixed(2),
  ratio: (n: number) => n.toFixed(2),
};

/**
 * Replaces the part of docs/benchmarks.md between `<!-- name:start -->` and `<!-- name:end -->`
 * (appending it the first time), so each benchmark script owns one section.
 */
export async function writeDocSection(name: string, body: string): Promise<void> {
  const path = `${repoRoot}docs/benchmarks.md`;
  const start = `<!-- ${name}:start -->`;
  const end = `<!-- ${name}:end -->`;
  let doc = await readFile(path, "utf8").catch(() => "# Benchmarks\n");
  const section = `${start}\n${body.trim()}\n${end}`;
  const from = doc.indexOf(start);
  const to = doc.indexOf(end);
  doc = from >= 0 && to > from ? doc.slice(0, from) + section + doc.slice(to + end.length) : `${doc.trimEnd()}\n\n${section}\n`;
  await writeFile(path, doc);
}

/** Facts about the machine a benchmark ran on, for the record. */
export async function machineSummary(): Promise<string> {
  const cpu = (await readFile("/proc/cpuinfo", "utf8")).match(/model name\s*:\s*(.*)/)?.[1] ?? "unknown CPU";
  const { stdout: cores } = await promisify(execFile)("nproc");
  return `${cores.trim()} cores (${cpu}), Node ${process.version}`;
}
