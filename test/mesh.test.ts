// `mlmesh up`: the whole mesh as separate processes, as a newcomer starts it.
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { describe, expect, it } from "vitest";
import { repoRoot, run, tools } from "./support/service-process.js";

// Ports away from the defaults, so a mesh a developer is running does not collide.
const ports = { REGISTRY_PORT: "51051", PREDICTOR_PORT: "51052", BATCH_PORT: "51053", PROXY_PORT: "51054", CONSOLE_PORT: "51050" };

describe("mlmesh up", () => {
  it("starts every service as its own process, prints the endpoints, and stops cleanly on Ctrl-C", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "mlmesh-up-"));
    const up = spawn(process.execPath, ["bin/mlmesh.js", "up"], {
      cwd: repoRoot,
      env: {
        ...process.env,
        ...ports,
        HOST: "127.0.0.1",
        DATABASE_URL: `file:${join(dataDir, "registry.db")}`,
        BATCH_DATABASE_URL: `file:${join(dataDir, "batch.db")}`,
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
        "-d",
        '{"rows":[{"values":[5.1,3.5,1.4,0.2]}]}',
        `127.0.0.1:${ports.PROXY_PORT}`,
        "mlmesh.proxy.v1.ProxyService/PredictLabel",
      ]);
      expect(label.code, label.stderr).toBe(0);
      expect((JSON.parse(label.stdout) as { predictions: { label: string }[] }).predictions[0].label).toBe("setosa");

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
    for (const name of ["registry", "predictor", "batch", "proxy"]) {
      expect(output.some((l) => l.startsWith(name) && l.includes('"msg":"stopped"')), `${name} stopped`).toBe(true);
    }
  });
});
