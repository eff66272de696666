import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { ConfigError, type Env } from "../runtime/env/variables.js";
import { catalog, type ServiceEntry } from "../catalog.js";
import { loadMeshClientSettings, loadServerConfig, loadSharedSettings } from "../runtime/env/settings.js";
import { loadMeshCredentials, type MeshCredentials } from "../runtime/client/mesh-credentials.js";
import { checkHealth, ServingStatus } from "../runtime/client/health-client.js";
import { bootstrapRegistry } from "./bootstrap.js";
import { registryClient } from "./model-push.js";

const bin = fileURLToPath(new URL("../../bin/mlmesh.js", import.meta.url));
const bundledModels = fileURLToPath(new URL("../../models", import.meta.url));

/** The services `mlmesh up` runs, in the catalog's order (the registry first). */
const meshServices = catalog.filter((e) => e.inMesh);
/** What the first Predict needs: started at full priority, the others niced by backgroundNice. */
const firstAnswer = new Set(["registry", "predictor"]);
const backgroundNice = 10;
const startTimeoutMs = 60_000;

interface Member {
  readonly entry: ServiceEntry;
  readonly address: string;
  readonly child: ChildProcess;
  readonly exited: Promise<number>;
}

/**
 * `mlmesh up`: runs every service as its own process (as in production), prefixes their log
 * lines with the service name, prints the endpoints once all are up, and on Ctrl-C or SIGTERM
 * — at any moment, start-up included — stops them all gracefully: each gets SIGTERM and the
 * grace period (SHUTDOWN_GRACE), then SIGKILL; a second Ctrl-C kills them at once. All start
 * together; once the registry answers, on a first start it is given the bundled models
 * (bootstrap.ts), and the Predictor serves what the registry says (REGISTRY_ADDRESS). Resolves to the exit code:
 * 0 after a requested stop, 1 when a service failed to start or died.
 */
export async function up(env: Env): Promise<number> {
  // Signals first: a Ctrl-C that comes while the services start must still stop them.
  const stopRequest = new AbortController();
  const members: Member[] = [];
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

  const width = Math.max(...meshServices.map((e) => e.name.length));
  const meshEnv = { ...env, CORS_ORIGINS: env.CORS_ORIGINS ?? consoleOrigins(env) };
  const graceMs = loadServerConfig(meshEnv, "registry").shutdownGraceMs;
  // How `up` itself reaches the services (health, bootstrap) when they have TLS or tokens on.
  let credentials: MeshCredentials;
  try {
    credentials = loadMeshCredentials(loadMeshClientSettings(env));
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`mlmesh up: configuration error: ${err.message}\n`);
    return 2;
  }
  const requested = new Promise<"stopped">((resolve) => {
    if (stopRequest.signal.aborted) resolve("stopped");
    else stopRequest.signal.addEventListener("abort", () => resolve("stopped"), { once: true });
  });
  /** The first service that exited on its own (not stopped by us). */
  let died: { member: Member; code: number } | undefined;
  let stopping = false;
  const start = (member: Member) => {
    members.push(member);
    void member.exited.then((code) => {
      if (!stopping) died ??= { member, code };
    });
  };
  // Start-up's waits (health polls, bootstrap) end on a stop request, and once start-up has
  // failed: a member that died must not leave them polling (and the process alive).
  const waiting = new AbortController();
  stopRequest.signal.addEventListener("abort", () => waiting.abort(), { once: true });
  /** Waits for `ready` unless a stop was asked for, a member died, or start-up timed out. */
  const until = async (ready: Promise<unknown>): Promise<"ready" | "stopped" | "died" | "timeout"> => {
    const anyExit = Promise.race(members.map((m) => m.exited)).then(() => "died" as const);
    const outcome = await Promise.race([
      ready.then(
        () => "ready" as const,
        (err: Error) => {
          if (!waiting.signal.aborted) process.stderr.write(`mlmesh: ${err.message}\n`);
          return "timeout" as const;
        },
      ),
      anyExit,
      requested,
    ]);
    if (outcome !== "ready") waiting.abort();
    return outcome;
  };

  // Every service starts at once (each needs about a second of CPU to boot); the ones the first
  // Predict needs (the registry, the Predictor) at full priority, the others niced so that on a
  // 2-core machine they take the CPU that is left. The Predictor follows the registry as soon as
  // it answers, and the bundled models as bootstrap registers them on a first start.
  const registryEntry = meshServices[0];
  const registryAddress = startAddress(registryEntry, meshEnv);
  // The Predictor, the Proxy and the batch service record predictions in the mesh's monitor; the
  // registry reads canary rollouts' figures from it.
  const monitorEntry = meshServices.find((e) => e.name === "monitor");
  const monitorAddress = env.MONITOR_ADDRESS ?? (monitorEntry === undefined ? undefined : startAddress(monitorEntry, meshEnv));
  const servicesEnv = { ...meshEnv, REGISTRY_ADDRESS: env.REGISTRY_ADDRESS ?? registryAddress, ...(monitorAddress === undefined ? {} : { MONITOR_ADDRESS: monitorAddress }) };
  for (const entry of meshServices) {
    const registryEnv = monitorAddress === undefined ? meshEnv : { ...meshEnv, MONITOR_ADDRESS: monitorAddress };
    start(startMember(entry, entry === registryEntry ? registryEnv : servicesEnv, width, firstAnswer.has(entry.name) ? 0 : backgroundNice));
  }
  const registry = members[0];
  let ready = await until(waitUntilServing([registry], waiting.signal, credentials));
  if (ready === "ready") ready = await until(bootstrap(registry.address, waiting.signal, credentials));
  if (ready === "ready") ready = await until(waitUntilServing(members.slice(1), waiting.signal, credentials));
  if (ready === "ready") await printEndpoints(members, env, credentials);

  if (ready === "ready") await Promise.race([requested, Promise.race(members.map((m) => m.exited))]);
  stopping = true;
  if (died !== undefined && !stopRequest.signal.aborted) {
    process.stderr.write(`mlmesh: ${died.member.entry.name} exited with code ${died.code}; stopping the others\n`);
  }
  await stopAll(members, graceMs);
  process.off("SIGINT", onSignal);
  process.off("SIGTERM", onSignal);
  return stopRequest.signal.aborted && died === undefined && ready !== "timeout" ? 0 : 1;
}

/** Registers the bundled models in the mesh's registry on its first start (bootstrap.ts). */
async function bootstrap(registryAddress: string, signal: AbortSignal, credentials: MeshCredentials): Promise<void> {
  const client = registryClient(registryAddress, "mlmesh up", credentials);
  for (const line of await bootstrapRegistry(client, bundledModels, undefined, signal)) process.stdout.write(`mlmesh: ${line}\n`);
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

/** "host:port" where `up` dials a service it starts. */
function startAddress(entry: ServiceEntry, env: Env): string {
  const config = loadServerConfig(env, entry.name);
  const dialHost = config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : config.host;
  return `${dialHost}:${config.port}`;
}

function startMember(entry: ServiceEntry, env: Env, width: number, nice: number): Member {
  const { name } = entry;
  // An IPC channel lets each service notice when `mlmesh up` itself dies (see run-service.ts).
  // `nice` as the command, so every thread and helper process of the service inherits it.
  const command = nice === 0 ? [process.execPath, bin, "serve", name] : ["nice", "-n", String(nice), process.execPath, bin, "serve", name];
  const child = spawn(command[0], command.slice(1), {
    env: { ...env },
    stdio: ["ignore", "pipe", "pipe", "ipc"],
    detached: true, // its own process group: Ctrl-C reaches `up`, which stops each child once
  });
  const prefix = `${name.padEnd(width)} | `;
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream! }).on("line", (line) => process.stdout.write(prefix + line + "\n"));
  }
  const exited = new Promise<number>((resolve) => child.once("exit", (code, signal) => resolve(code ?? (signal ? 1 : 0))));
  return { entry, address: startAddress(entry, env), child, exited };
}

/** The console page's origins, which the services let call them unless CORS_ORIGINS says otherwise. */
function consoleOrigins(env: Env): string {
  const { port } = loadServerConfig(env, "console");
  return `http://127.0.0.1:${port},http://localhost:${port}`;
}

/** Resolves once every member answers SERVING; rejects after startTimeoutMs or when `stop` aborts. */
async function waitUntilServing(members: readonly Member[], stop: AbortSignal, credentials: MeshCredentials): Promise<void> {
  const deadline = Date.now() + startTimeoutMs;
  await Promise.all(
    members.map(async (m) => {
      while ((await checkHealth(m.address, "", 1000, credentials)) !== ServingStatus.SERVING) {
        if (stop.aborted) throw new Error("stopped before every service was ready");
        if (Date.now() > deadline) throw new Error(`${m.entry.name} did not become ready within ${startTimeoutMs / 1000}s`);
        await sleep(200, undefined, { signal: stop }).catch(() => undefined);
      }
    }),
  );
}

async function printEndpoints(members: readonly Member[], env: Env, credentials: MeshCredentials): Promise<void> {
  const rows = await Promise.all(
    members.map(async (m) => {
      const { name, grpcService } = m.entry;
      const status = await checkHealth(m.address, grpcService, 1000, credentials);
      const state = status === ServingStatus.SERVING ? "serving" : "not serving (see its log)";
      const what = grpcService === "" ? `web page: http://${m.address}/` : grpcService;
      return [name, m.address, what, state];
    }),
  );
  const header = ["service", "address (gRPC h2c; gRPC-web/Connect HTTP/1.1)", "serves", "state"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join("  ");
  const table = [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
  process.stdout.write(`\nmlmesh is up (Ctrl-C stops it):\n${table}\n${securityLine(env)}\n\n`);
}

/** What the start-up table says of TLS and authentication (off by default: loopback only). */
function securityLine(env: Env): string {
  const { server, auth } = loadSharedSettings(env, "registry");
  const authFile = auth.tokensFile || auth.jwks;
  const tls = server.tls ? `TLS on (${server.tls.cert.path})` : "TLS off";
  const authentication = authFile ? `authentication on (${authFile})` : "authentication off";
  const where = server.tls || authFile ? "" : " — fine on 127.0.0.1; README \"Security\" turns them on";
  return `security: ${tls}, ${authentication}${where}`;
}

