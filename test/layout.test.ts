// The layout's rules, checked on the code as it is: no import circles and no shared module
// importing a service (dependency-cruiser, .dependency-cruiser.json), and the environment read
// only by services/runtime/env/. A circle planted in a scratch folder proves the check bites.
import { spawn } from "node:child_process";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, describe, expect, it } from "vitest";
import { repoRoot, run } from "./support/service-process.js";

const depcruise = join(repoRoot, "node_modules/.bin/depcruise");
const config = join(repoRoot, ".dependency-cruiser.json");

async function sourceFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries
    .filter((e) => e.isFile() && /\.(ts|mjs|js)$/.test(e.name))
    .map((e) => join(e.parentPath, e.name))
    .filter((path) => !path.includes("/prisma/generated/"));
}

describe("the layout", () => {
  const scratch: string[] = [];
  afterAll(async () => {
    for (const dir of scratch) await rm(dir, { recursive: true, force: true });
  });

  it("has no import circle and keeps the shared runtime and model format free of services", async () => {
    const result = await run(depcruise, ["services", "bench", "test", "bin", "--config", config]);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toMatch(/no dependency violations found/);
  });

  it("fails on a new import circle, naming its files", async () => {
    const dir = await mkdtemp(join(tmpdir(), "mlmesh-circle-"));
    scratch.push(dir);
    await writeFile(join(dir, "tsconfig.json"), JSON.stringify({ compilerOptions: { module: "nodenext", moduleResolution: "nodenext" } }));
    await writeFile(join(dir, "a.ts"), 'import { b } from "./b.js";\nexport const a = () => b;\n');
    await writeFile(join(dir, "b.ts"), 'import { a } from "./a.js";\nexport const b = () => a;\n');
    const result = await run(depcruise, [".", "--config", config], { cwd: dir });
    expect(result.code).not.toBe(0);
    expect(result.stdout.replace(/\s+/g, " ")).toMatch(/error no-circular: (a\.ts → b\.ts → a\.ts|b\.ts → a\.ts → b\.ts)/);
  });

  it("serves from the TypeScript sources through tsx, as bin/mlmesh.js does when dist/ is stale", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", "services/cli/mlmesh.ts", "serve", "echo"], {
      cwd: repoRoot,
      env: { ...process.env, ECHO_PORT: "0", HOST: "127.0.0.1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const exited = new Promise((resolve) => child.once("exit", resolve));
    const listening = await new Promise<boolean>((resolve) => {
      createInterface({ input: child.stdout! }).on("line", (line) => line.includes('"listening') && resolve(true));
      void exited.then(() => resolve(false));
    });
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect(listening).toBe(true);
  });

  it("reads process.env only in services/runtime/env/ (services, benchmarks, the command)", async () => {
    const readers: string[] = [];
    for (const top of ["services", "bench", "bin"]) {
      for (const file of await sourceFiles(join(repoRoot, top))) {
        const path = relative(repoRoot, file);
        if (path.startsWith("services/runtime/env/")) continue;
        if ((await readFile(file, "utf8")).includes("process.env")) readers.push(path);
      }
    }
    expect(readers).toEqual([]);
  });
});
