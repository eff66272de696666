// h2load (Debian nghttp2-client) as the load generator of the serving benchmarks: one HTTP/2
// connection, N concurrent streams, the same request body on every stream. It costs far less
// client CPU than ghz, so a server pinned to one core is measured, not the client.
import { execFile } from "node:child_process";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import * as http2 from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const exec = promisify(execFile);

/** A gRPC request body as h2load sends it: one uncompressed length-prefixed message. */
export function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

/** One h2load run's figures. */
export interface LoadResult {
  readonly rps: number;
  /** Mean time per request, in ms. */
  readonly meanMs: number;
  /** Median and 99th percentile time per request, in ms (from h2load's per-request log). */
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly succeeded: number;
  readonly failed: number;
}

export interface LoadOptions {
  /** http://host:port/path */
  readonly url: string;
  readonly body: Uint8Array;
  readonly streams: number;
  readonly seconds: number;
  readonly warmupSeconds: number;
  /**
   * Send exactly this many requests instead of loading for `seconds` (no warm-up: send one
   * before): for requests that take seconds each, a timed window would count too few to be exact.
   */
  readonly requests?: number;
  /** Cores h2load runs on (taskset -c). */
  readonly cpus?: string;
  /** gRPC (default) or another content type. */
  readonly contentType?: string;
}

let bodyDir: string | undefined;

/** Runs h2load once; fails when a request failed (h2load counts gRPC errors as HTTP 200: see checkGrpc). */
export async function h2load(options: LoadOptions): Promise<LoadResult> {
  bodyDir ??= await mkdtemp(join(tmpdir(), "mlmesh-h2load-"));
  const stem = `${options.body.length}-${Math.random().toString(36).slice(2)}`;
  const bodyFile = join(bodyDir, `body-${stem}.bin`);
  const logFile = join(bodyDir, `log-${stem}.tsv`);
  await writeFile(bodyFile, options.body);
  const contentType = options.contentType ?? "application/grpc";
  const args = [
    "-c1",
    `-m${options.streams}`,
    ...(options.requests === undefined ? ["-D", String(options.seconds), "--warm-up-time", String(options.warmupSeconds)] : ["-n", String(options.requests)]),
    "-d",
    bodyFile,
    `--log-file=${logFile}`,
    "-H",
    `content-type: ${contentType}`,
    ...(contentType === "application/grpc" ? ["-H", "te: trailers"] : []),
    options.url,
  ];
  const [file, fullArgs] = options.cpus ? ["taskset", ["-c", options.cpus, "h2load", ...args]] : ["h2load", args];
  const { stdout } = await exec(file, fullArgs, { maxBuffer: 16 * 1024 * 1024 });
  const rps = Number(/finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(stdout)?.[1]);
  const requests = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(stdout);
  const mean = /time for request:\s+[\d.]+\w+\s+[\d.]+\w+\s+([\d.]+)(us|ms|s)/.exec(stdout);
  if (!requests || !mean || Number.isNaN(rps)) throw new Error(`cannot read h2load's output:\n${stdout}`);
  const meanMs = Number(mean[1]) * ({ us: 0.001, ms: 1, s: 1000 } as Record<string, number>)[mean[2]];
  // The log: start time, status, microseconds to the end of the response, per request.
  const micros = (await readFile(logFile, "utf8"))
    .trim()
    .split("\n")
    .map((line) => Number(line.split("\t")[2]))
    .filter((v) => Number.isFinite(v))
    .sort((a, b) => a - b);
  const percentile = (p: number) => (micros.length === 0 ? Number.NaN : micros[Math.min(micros.length - 1, Math.floor(p * micros.length))] / 1000);
  const result = { rps, meanMs, p50Ms: percentile(0.5), p99Ms: percentile(0.99), succeeded: Number(requests[1]), failed: Number(requests[2]) + Number(requests[3]) };
  if (result.failed > 0) throw new Error(`${options.url}: ${result.failed} requests failed`);
  return result;
}

/**
 * Sends the body once over HTTP/2 and checks the gRPC status in the trailers: h2load would
 * count an error answer as a success.
 */
export function checkGrpc(url: string, body: Uint8Array): Promise<void> {
  const { origin, pathname } = new URL(url);
  return new Promise((resolve, reject) => {
    const session = http2.connect(origin);
    session.on("error", reject);
    const stream = session.request({ ":method": "POST", ":path": pathname, "content-type": "application/grpc", te: "trailers" });
    let status: string | undefined;
    let message = "";
    const read = (headers: http2.IncomingHttpHeaders) => {
      if (headers["grpc-status"] !== undefined) {
        status = String(headers["grpc-status"]);
        message = decodeURIComponent(String(headers["grpc-message"] ?? ""));
      }
    };
    stream.on("response", read);
    stream.on("trailers", read);
    stream.on("data", () => undefined);
    stream.on("end", () => {
      session.close();
      if (status === "0") resolve();
      else reject(new Error(`${url}: grpc-status ${status}: ${message}`));
    });
    stream.on("error", reject);
    stream.end(body);
  });
}

/** The median of `runs` runs' RPS (and the spread), with the latencies of the median run. */
export async function medianRun(runs: number, once: () => Promise<LoadResult>): Promise<MedianResult> {
  const results: LoadResult[] = [];
  for (let i = 0; i < runs; i++) results.push(await once());
  return medianOf(results);
}

/** The run of median RPS among several (and the spread). */
export function medianOf(results: readonly LoadResult[]): MedianResult {
  const sorted = [...results].sort((a, b) => a.rps - b.rps);
  const median = sorted[Math.floor(sorted.length / 2)];
  return { rps: median.rps, min: sorted[0].rps, max: sorted[sorted.length - 1].rps, meanMs: median.meanMs, p50Ms: median.p50Ms, p99Ms: median.p99Ms };
}

export interface MedianResult {
  readonly rps: number;
  readonly min: number;
  readonly max: number;
  readonly meanMs: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

/** Pins every thread of a process to the given cores (taskset -a -p -c). */
export async function pin(pid: number, cpus: string): Promise<void> {
  await exec("taskset", ["-a", "-p", "-c", cpus, String(pid)]);
}
