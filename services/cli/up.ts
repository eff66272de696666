import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { loadServerConfig, type Env, type ServiceName } from "../runtime/config.js";
import { checkHealth, ServingStatus } from "../runtime/health-client.js";

const bin = fileURLToPath(new URL("../../bin/mlmesh.js", import.meta.url));

/**
 * The services of the mesh, in start-up order, with the gRPC service each serves (echo is a
 * diagnostic, not part of it; the console serves a web page, no gRPC service of its own).
 */
const grpcServiceNames: Record<MeshService, string> = {
  registry: "mlmesh.registry.v1.ModelRegistryService",
  predictor: "mlmesh.predictor.v1.PredictorService",
  batch: "mlmesh.batch.v1.BatchJobService",
  proxy: "mlmesh.proxy.v1.ProxyService",
  console: "",
};
const startTimeoutMs = 60_000;

type MeshService = Exclude<ServiceName, "echo" | "batch-worker">;

interface Member {
  readonly name: MeshService;
  readonly address: string;
  readonly child: ChildProcess;
  readonly exited: Promise<number>;
}

/**
 * `mlmesh up`: runs every service as its own process (as in production), prefixes their log
 * lines with the service name, prints the endpoints once all are up, and on Ctrl-C or SIGTERM
 * — at any moment, start-up included — stops them all gracefully: each gets SIGTERM and the
 * grace period (SHUTDOWN_GRACE), then SIGKILL; a second Ctrl-C kills them at once. Resolves to
 * the exit code: 0 after a requested stop, 1 when a service failed to start or died.
 */
export async function up(env: Env): Promise<number> {
  // Signals first: a Ctrl-C that comes while the services start must still stop them.
  const stopRequest = new AbortController();
  let members: Member[] = [];
  const onSignal = () => {
    if (stopRequest.signal.aborted) {
      process.stderr.write("mlmesh: second signal: killing every service now\n");
      for (const m of members) signalMember(m, "SIGKILL");
      return;
    }
    process.stderr.write("\nmlmesh: stopping every service...\n");
    stopRequest.abort();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  const names = Object.keys(grpcServiceNames) as MeshService[];
  const width = Math.max(...names.map((n) => n.length));
  const meshEnv = { ...env, CORS_ORIGINS: env.CORS_ORIGINS ?? consoleOrigins(env) };
  const graceMs = loadServerConfig(meshEnv, "registry").shutdownGraceMs;
  members = names.map((name) => startMember(name, meshEnv, width));

  const requested = new Promise<void>((resolve) => {
    if (stopRequest.signal.aborted) resolve();
    else stopRequest.signal.addEventListener("abort", () => resolve(), { once: true });
  });
  const firstExit = Promise.race(members.map((m) => m.exited.then((code) => ({ member: m, code }))));

  const ready = await Promise.race([
    waitUntilServing(members, stopRequest.signal).then(
      () => "ready" as const,
      (err: Error) => {
        if (!stopRequest.signal.aborted) process.stderr.write(`mlmesh: ${err.message}\n`);
        return "timeout" as const;
      },
    ),
    firstExit.then(() => "died" as const),
    requested.then(() => "stopped" as const),
  ]);
  if (ready === "ready" && !stopRequest.signal.aborted) await printEndpoints(members);

  const outcome = ready === "timeout" || ready === "stopped" ? undefined : await Promise.race([requested.then(() => undefined), firstExit]);
  if (outcome !== undefined && !stopRequest.signal.aborted) {
    process.stderr.write(`mlmesh: ${outcome.member.name} exited with code ${outcome.code}; stopping the others\n`);
  }
  await stopAll(members, graceMs);
  process.off("SIGINT", onSignal);
  process.off("SIGTERM", onSignal);
  return stopRequest.signal.aborted && outcome === undefined && ready !== "timeout" ? 0 : 1;
}

/**
 * SIGTERM to every service still running; SIGKILL to any still there a second after the
 * grace period (each drains within it, or exits 1 when its own start-up outlasts it).
 */
async function stopAll(members: readonly Member[], graceMs: number): Promise<void> {
  for (const m of members) signalMember(m, "SIGTERM");
  const kill = setTimeout(() => {
    for (const m of members) signalMember(m, "SIGKILL");
  }, graceMs + 1000);
  await Promise.all(members.map((m) => m.exited));
  clearTimeout(kill);
}

/** Signals a service's whole process group (it was started detached, as a group leader). */
function signalMember(m: Member, signal: NodeJS.Signals): void {
  if (m.child.exitCode !== null || m.child.signalCode !== null || m.child.pid === undefined) return;
  try {
    process.kill(-m.child.pid, signal);
  } catch {
    // it exited between the check and the signal
  }
}

function startMember(name: MeshService, env: Env, width: number): Member {
  const config = loadServerConfig(env, name);
  // An IPC channel lets each service notice when `mlmesh up` itself dies (see run-service.ts).
  const child = spawn(process.execPath, [bin, "serve", name], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe", "ipc"],
    detached: true, // its own process group: Ctrl-C reaches `up`, which stops each child once
  });
  const prefix = `${name.padEnd(width)} | `;
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream! }).on("line", (line) => process.stdout.write(prefix + line + "\n"));
  }
  const exited = new Promise<number>((resolve) => child.once("exit", (code, signal) => resolve(code ?? (signal ? 1 : 0))));
  const dialHost = config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : config.host;
  return { name, address: `${dialHost}:${config.port}`, child, exited };
}

/** The console page's origins, which the services let call them unless CORS_ORIGINS says otherwise. */
function consoleOrigins(env: Env): string {
  const { port } = loadServerConfig(env, "console");
  return `http://127.0.0.1:${port},http://localhost:${port}`;
}

/** Resolves once every member answers SERVING; rejects after startTimeoutMs or when `stop` aborts. */
async function waitUntilServing(members: readonly Member[], stop: AbortSignal): Promise<void> {
  const deadline = Date.now() + startTimeoutMs;
  await Promise.all(
    members.map(async (m) => {
      while ((await checkHealth(m.address, "", 1000)) !== ServingStatus.SERVING) {
        if (stop.aborted) throw new Error("stopped before every service was ready");
        if (Date.now() > deadline) throw new Error(`${m.name} did not become ready within ${startTimeoutMs / 1000}s`);
        await sleep(200, undefined, { signal: stop }).catch(() => undefined);
      }
    }),
  );
}

async function printEndpoints(members: readonly Member[]): Promise<void> {
  const rows = await Promise.all(
    members.map(async (m) => {
      const status = await checkHealth(m.address, grpcServiceNames[m.name], 1000);
      const state = status === ServingStatus.SERVING ? "serving" : "not serving (see its log)";
      const what = m.name === "console" ? `web page: http://${m.address}/` : grpcServiceNames[m.name];
      return [m.name, m.address, what, state];
    }),
  );
  const header = ["service", "address (gRPC h2c; gRPC-web/Connect HTTP/1.1)", "serves", "state"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join("  ");
  const table = [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
  process.stdout.write(`\nmlmesh is up (Ctrl-C stops it):\n${table}\n\n`);
}

