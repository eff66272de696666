import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
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
 * stops them all gracefully. Resolves to the exit code: 0 after a requested stop, 1 when a
 * service failed to start or died.
 */
export async function up(env: Env): Promise<number> {
  const names = Object.keys(grpcServiceNames) as MeshService[];
  const width = Math.max(...names.map((n) => n.length));
  const meshEnv = { ...env, CORS_ORIGINS: env.CORS_ORIGINS ?? consoleOrigins(env) };
  const members = names.map((name) => startMember(name, meshEnv, width));

  let stopRequested = false;
  const stopAll = async () => {
    for (const m of members) if (m.child.exitCode === null) m.child.kill("SIGTERM");
    await Promise.all(members.map((m) => m.exited));
  };
  const requested = new Promise<void>((resolve) => {
    const onSignal = () => {
      if (stopRequested) return;
      stopRequested = true;
      process.stderr.write("\nmlmesh: stopping every service...\n");
      resolve();
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
  });
  const firstExit = Promise.race(members.map((m) => m.exited.then((code) => ({ member: m, code }))));

  const ready = await Promise.race([
    waitUntilServing(members).then(
      () => "ready" as const,
      (err: Error) => {
        process.stderr.write(`mlmesh: ${err.message}\n`);
        return "timeout" as const;
      },
    ),
    firstExit.then(() => "died" as const),
    requested.then(() => "stopped" as const),
  ]);
  if (ready === "ready") await printEndpoints(members);

  const outcome = ready === "timeout" ? undefined : await Promise.race([requested.then(() => undefined), firstExit]);
  if (outcome !== undefined && !stopRequested) {
    process.stderr.write(`mlmesh: ${outcome.member.name} exited with code ${outcome.code}; stopping the others\n`);
  }
  await stopAll();
  return stopRequested && outcome === undefined && ready !== "timeout" ? 0 : 1;
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

async function waitUntilServing(members: readonly Member[]): Promise<void> {
  const deadline = Date.now() + startTimeoutMs;
  await Promise.all(
    members.map(async (m) => {
      while ((await checkHealth(m.address, "", 1000)) !== ServingStatus.SERVING) {
        if (Date.now() > deadline) throw new Error(`${m.name} did not become ready within ${startTimeoutMs / 1000}s`);
        await new Promise((resolve) => setTimeout(resolve, 200));
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

