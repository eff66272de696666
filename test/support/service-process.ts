import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { catalogEntry } from "../../services/catalog.js";

export const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const bin = `${repoRoot}bin/mlmesh.js`;

/** One log line of a service (pino JSON), or the raw text when it is not JSON. */
export type LogLine = Record<string, unknown>;

/** A service started as a real process, as `mlmesh serve` runs it in production. */
export interface ServiceProcess {
  readonly child: ChildProcess;
  /** "127.0.0.1:port" */
  readonly address: string;
  readonly baseUrl: string;
  readonly logs: LogLine[];
  /** Sends a signal and resolves to the exit code (a killed process resolves to the signal). */
  stop(signal?: NodeJS.Signals): Promise<number | NodeJS.Signals>;
  readonly exited: Promise<number | NodeJS.Signals>;
}

/**
 * Starts `mlmesh serve <service>` on a free loopback port (unless env sets its port) and
 * resolves once it listens. Rejects with the process's output when it exits first.
 */
export function startService(service: string, env: Record<string, string> = {}): Promise<ServiceProcess> {
  const entry = catalogEntry(service);
  if (entry === undefined) throw new Error(`no service "${service}" in services/catalog.ts`);
  return startProcess(service, [bin, "serve", service], { [entry.portVariable]: "0", ...env });
}

/** Starts a TypeScript server script of the test suite (test/fixtures) through tsx. */
export function startScript(script: string, portVariable: string, env: Record<string, string> = {}): Promise<ServiceProcess> {
  return startProcess(script, ["--import", "tsx", `${repoRoot}${script}`], { [portVariable]: "0", ...env });
}

async function startProcess(service: string, args: string[], env: Record<string, string>): Promise<ServiceProcess> {
  const child = spawn(process.execPath, args, {
    cwd: repoRoot,
    env: { ...process.env, HOST: "127.0.0.1", LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: LogLine[] = [];
  const stderr: string[] = [];
  const exited = new Promise<number | NodeJS.Signals>((resolve) =>
    child.once("exit", (code, signal) => resolve(code ?? (signal as NodeJS.Signals))),
  );
  createInterface({ input: child.stderr! }).on("line", (line) => stderr.push(line));
  const listening = new Promise<string>((resolve) => {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      let entry: LogLine;
      try {
        entry = JSON.parse(line) as LogLine;
      } catch {
        entry = { text: line };
      }
      logs.push(entry);
      if (typeof entry.address === "string" && String(entry.msg).startsWith("listening")) resolve(entry.address);
    });
  });
  const address = await Promise.race([
    listening,
    exited.then((code) => {
      throw new Error(`${service} exited (${code}) before listening:\n${stderr.join("\n")}\n${JSON.stringify(logs)}`);
    }),
  ]);
  return {
    child,
    address,
    baseUrl: `http://${address}`,
    logs,
    exited,
    stop(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** A loopback port that was free a moment ago (for a service that must keep its port across a restart, or be known before it starts). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Runs a program to completion; never throws for a non-zero exit. */
export async function run(
  file: string,
  args: readonly string[],
  options: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(file, args, {
      cwd: options.cwd ?? repoRoot,
      env: { ...process.env, ...options.env },
      timeout: options.timeoutMs ?? 60_000,
      maxBuffer: 64 * 1024 * 1024,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string };
    return { code: typeof e.code === "number" ? e.code : -1, stdout: e.stdout ?? "", stderr: e.stderr ?? String(err) };
  }
}

/** The Go tools installed by scripts/install-tools.sh; a test fails (never skips) without them. */
export const tools = {
  grpcurl: `${repoRoot}.tools/bin/grpcurl`,
  ghz: `${repoRoot}.tools/bin/ghz`,
  buf: `${repoRoot}node_modules/.bin/buf`,
};
