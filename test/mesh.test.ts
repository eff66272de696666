// `mlmesh up`: the whole mesh as separate processes, as a newcomer starts it.
import { execFileSync, spawn } from "node:child_process";
import { connect, createServer } from "node:net";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { describe, expect, it } from "vitest";
import { repoRoot, run, tools } from "./support/service-process.js";

// Ports away from the defaults, so a mesh a developer is running does not collide, and below
// Linux's ephemeral range (32768-60999), where any client socket of a parallel test may hold one.
const ports = { REGISTRY_PORT: "31051", PREDICTOR_PORT: "31052", BATCH_PORT: "31053", PROXY_PORT: "31054", MONITOR_PORT: "31055", CONSOLE_PORT: "31050" };

// The whole mesh's start-up, a proxied call and a scheduled batch run: 8-9 s alone in a full
// suite run, more while another test file starts servers beside it on 2 cores (it once took
// over 30 s so): 90 s is a hang, not a busy machine. What it checks is unchanged.
const meshTestTimeoutMs = 90_000;

describe("mlmesh up", () => {
  it("starts every service as its own process, prints the endpoints, and stops cleanly on Ctrl-C", { timeout: meshTestTimeoutMs }, async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "mlmesh-up-"));
    const up = spawn(process.execPath, ["bin/mlmesh.js", "up"], {
      cwd: repoRoot,
      env: {
        ...process.env,
        ...ports,
        HOST: "127.0.0.1",
        DATABASE_URL: `file:${join(dataDir, "registry.db")}`,
        BATCH_DATABASE_URL: `file:${join(dataDir, "batch.db")}`,
        MONITOR_DATABASE_URL: `file:${join(dataDir, "monitor.db")}`,
        ARTIFACT_DIR: join(dataDir, "artifacts"),
        BATCH_INTERVAL: "1s",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const output: string[] = [];
    const exited = new Promise<number | null>((resolve) => up.once("exit", (code) => resolve(code)));
    const ready = new Promise<void>((resolve) => {
      for (const stream of [up.stdout, up.stderr]) {
        createInterface({ input: stream }).on("line", (line) => {
          output.push(line);
          if (line.startsWith("mlmesh is up")) resolve();
        });
      }
    });
    try {
      await Promise.race([ready, exited.then((code) => Promise.reject(new Error(`up exited ${code}: ${output.join("\n")}`)))]);
      await expect.poll(() => output.some((l) => l.startsWith("proxy "))).toBe(true);
      for (const [name, port] of [
        ["registry", ports.REGISTRY_PORT],
        ["predictor", ports.PREDICTOR_PORT],
        ["batch", ports.BATCH_PORT],
        ["proxy", ports.PROXY_PORT],
        ["monitor", ports.MONITOR_PORT],
        ["console", ports.CONSOLE_PORT],
      ]) {
        expect(output.some((l) => l.startsWith(name) && l.includes(`127.0.0.1:${port}`)), name).toBe(true);
      }
      // Log lines are prefixed with the service that wrote them.
      expect(output.some((l) => l.startsWith("predictor | {"))).toBe(true);

      const predictor = `127.0.0.1:${ports.PREDICTOR_PORT}`;
      const list = await run(tools.grpcurl, ["-plaintext", predictor, "list"]);
      expect(list.stdout).toContain("mlmesh.predictor.v1.PredictorService");
      expect(list.stdout).toContain("grpc.health.v1.Health");
      expect(list.stdout).toContain("grpc.reflection.v1.ServerReflection");

      // The console's page is served, and the services let it call them from the browser.
      const page = await fetch(`http://127.0.0.1:${ports.CONSOLE_PORT}/`);
      expect(page.status).toBe(200);
      expect(await page.text()).toContain("mlmesh console");
      const preflight = await fetch(`http://${predictor}/mlmesh.predictor.v1.PredictorService/Predict`, {
        method: "OPTIONS",
        headers: { origin: `http://localhost:${ports.CONSOLE_PORT}`, "access-control-request-method": "POST" },
      });
      expect(preflight.status).toBe(204);
      expect(preflight.headers.get("access-control-allow-origin")).toBe(`http://localhost:${ports.CONSOLE_PORT}`);

      // The proxy reaches the mesh's Predictor with no configuration.
      const label = await run(tools.grpcurl, [
        "-plaintext",
        "-H",
        "x-request-id: mesh-test-label",
        "-d",
        '{"rows":[{"values":[5.1,3.5,1.4,0.2]}]}',
        `127.0.0.1:${ports.PROXY_PORT}`,
        "mlmesh.proxy.v1.ProxyService/PredictLabel",
      ]);
      expect(label.code, label.stderr).toBe(0);
      expect((JSON.parse(label.stdout) as { predictions: { label: string }[] }).predictions[0].label).toBe("setosa");
      // ... and the mesh's monitor keeps its record, linked to the three backend calls.
      await expect
        .poll(
          async () => {
            const got = await run(tools.grpcurl, ["-plaintext", "-d", '{"request_id":"mesh-test-label"}', `127.0.0.1:${ports.MONITOR_PORT}`, "mlmesh.monitor.v1.MonitorService/GetPrediction"]);
            return got.code === 0 ? (JSON.parse(got.stdout) as { linked?: unknown[] }).linked?.length : undefined;
          },
          { timeout: 10_000, interval: 300 },
        )
        .toBe(3);

      // The batch job predicts a registered item on its schedule (BATCH_INTERVAL=1s here).
      const registered = await run(tools.grpcurl, [
        "-plaintext",
        "-d",
        '{"item":{"values":[6.3,3.3,6.0,2.5]}}',
        `127.0.0.1:${ports.BATCH_PORT}`,
        "mlmesh.batch.v1.BatchJobService/RegisterItem",
      ]);
      const itemId = (JSON.parse(registered.stdout) as { item: { id: string } }).item.id;
      await expect
        .poll(
          async () => {
            const got = await run(tools.grpcurl, [
              "-plaintext",
              "-d",
              JSON.stringify({ item_id: itemId }),
              `127.0.0.1:${ports.BATCH_PORT}`,
              "mlmesh.batch.v1.BatchJobService/GetItem",
            ]);
            return (JSON.parse(got.stdout) as { item: { label?: string } }).item.label;
          },
          { timeout: 15_000, interval: 500 },
        )
        .toBe("virginica");
    } finally {
      up.kill("SIGINT");
    }
    expect(await exited).toBe(0);
    await rm(dataDir, { recursive: true, force: true });
    for (const name of ["registry", "predictor", "batch", "proxy", "monitor"]) {
      expect(output.some((l) => l.startsWith(name) && l.includes('"msg":"stopped"')), `${name} stopped`).toBe(true);
    }
  });

  it("stops the others and exits 1 at once when a service cannot start (its port is taken)", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "mlmesh-up-"));
    const meshPorts = { REGISTRY_PORT: "31061", PREDICTOR_PORT: "31062", BATCH_PORT: "31063", PROXY_PORT: "31064", MONITOR_PORT: "31065", CONSOLE_PORT: "31060" };
    const squatter = createServer();
    await new Promise<void>((resolve) => squatter.listen(Number(meshPorts.PREDICTOR_PORT), "127.0.0.1", resolve));
    const started = Date.now();
    try {
      const result = await run(process.execPath, ["bin/mlmesh.js", "up"], {
        env: { ...meshPorts, HOST: "127.0.0.1", DATABASE_URL: `file:${join(dataDir, "registry.db")}`, BATCH_DATABASE_URL: `file:${join(dataDir, "batch.db")}`, MONITOR_DATABASE_URL: `file:${join(dataDir, "monitor.db")}`, ARTIFACT_DIR: join(dataDir, "artifacts") },
        timeoutMs: 30_000,
      });
      expect(result.code, result.stdout + result.stderr).toBe(1);
      expect(result.stdout + result.stderr).toContain("predictor exited with code 1; stopping the others");
      expect(Date.now() - started).toBeLessThan(20_000); // not the 60 s start-up timeout
      for (const [name, port] of Object.entries(meshPorts)) {
        if (name !== "PREDICTOR_PORT") expect(await listening(Number(port)), `${name} still listens on ${port}`).toBe(false);
      }
    } finally {
      squatter.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  // A terminal's Ctrl-C reaches `npm start`'s whole process group (npm, sh, `mlmesh up`); the
  // services run in groups of their own, so `up` must stop them at whatever moment it comes.
  it.each([
    { delaySeconds: 0.3, stop: "Ctrl-C to `npm start`" },
    { delaySeconds: 0.8, stop: "Ctrl-C to `npm start`" },
    { delaySeconds: 1.5, stop: "Ctrl-C to `npm start`" },
    { delaySeconds: 2.5, stop: "Ctrl-C to `npm start`" },
    { delaySeconds: 1.2, stop: "SIGTERM to `mlmesh up`" },
  ])("stops every service within 5 s on $stop $delaySeconds s into start-up", async ({ delaySeconds, stop }) => {
    const viaNpm = stop.startsWith("Ctrl-C");
    const dataDir = await mkdtemp(join(tmpdir(), "mlmesh-up-"));
    const base = 29000 + Math.round(delaySeconds * 10) * 10 + (viaNpm ? 0 : 500); // below the ephemeral range, as above
    const meshPorts = { REGISTRY_PORT: base + 1, PREDICTOR_PORT: base + 2, BATCH_PORT: base + 3, PROXY_PORT: base + 4, CONSOLE_PORT: base + 5, MONITOR_PORT: base + 6 };
    const npm = spawn(viaNpm ? "npm" : process.execPath, viaNpm ? ["start"] : ["bin/mlmesh.js", "up"], {
      cwd: repoRoot,
      env: {
        ...process.env,
        ...Object.fromEntries(Object.entries(meshPorts).map(([k, v]) => [k, String(v)])),
        HOST: "127.0.0.1",
        DATABASE_URL: `file:${join(dataDir, "registry.db")}`,
        BATCH_DATABASE_URL: `file:${join(dataDir, "batch.db")}`,
        MONITOR_DATABASE_URL: `file:${join(dataDir, "monitor.db")}`,
        ARTIFACT_DIR: join(dataDir, "artifacts"),
      },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true, // a process group of its own, as a terminal's foreground job
    });
    const output: string[] = [];
    for (const stream of [npm.stdout, npm.stderr]) createInterface({ input: stream }).on("line", (line) => output.push(line));
    const exited = new Promise<void>((resolve) => npm.once("exit", () => resolve()));
    // Every process of the tree, seen while it starts: none may outlive the stop.
    const seen = new Set<number>();
    const watch = setInterval(() => descendants(npm.pid!).forEach((pid) => seen.add(pid)), 50);
    try {
      await new Promise((resolve) => setTimeout(resolve, delaySeconds * 1000));
      descendants(npm.pid!).forEach((pid) => seen.add(pid));
      clearInterval(watch);
      const signalled = Date.now();
      if (viaNpm) process.kill(-npm.pid!, "SIGINT");
      else process.kill(npm.pid!, "SIGTERM");
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5000))]);
      expect(npm.exitCode !== null || npm.signalCode !== null, `still running 5 s after the stop:\n${output.join("\n")}`).toBe(true);
      expect(Date.now() - signalled).toBeLessThan(5000);
      // Give the last exit a moment to be reaped, then nothing of the tree may be left.
      await expect.poll(() => [...seen].filter(alive).map(describeProcess), { timeout: 1000 }).toEqual([]);
      for (const [name, port] of Object.entries(meshPorts)) expect(await listening(port), `${name} still listens on ${port}`).toBe(false);
    } finally {
      clearInterval(watch);
      for (const pid of seen) if (alive(pid)) process.kill(pid, "SIGKILL");
      if (npm.exitCode === null && npm.signalCode === null) process.kill(-npm.pid!, "SIGKILL");
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

/** Every process below `pid` (children, grandchildren, ...). */
function descendants(pid: number): number[] {
  const rows = execFileSync("ps", ["-eo", "pid=,ppid="], { encoding: "utf8" })
    .trim()
    .split("\n")
    .map((line) => line.trim().split(/\s+/).map(Number));
  const found: number[] = [];
  const walk = (parent: number) => {
    for (const [child, ppid] of rows) {
      if (ppid === parent) {
        found.push(child);
        walk(child);
      }
    }
  };
  walk(pid);
  return found;
}

/** Whether a process still runs (a zombie, exited but not yet reaped, does not). */
function alive(pid: number): boolean {
  try {
    return !execFileSync("ps", ["-o", "stat=", "-p", String(pid)], { encoding: "utf8" }).trim().startsWith("Z");
  } catch {
    return false; // ps exits 1 when there is no such process
  }
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

function describeProcess(pid: number): string {
  try {
    return `${pid} ${execFileSync("ps", ["-o", "args=", "-p", String(pid)], { encoding: "utf8" }).trim()}`;
  } catch {
    return `${pid} (gone)`;
  }
}
