import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { pushModelFolder, resolveModel, type RegistryClient } from "./model-push.js";

/**
 * `mlmesh up`'s first start: registers the bundled model repository (models/) in the registry
 * — each model in `project`, or by default in the project its name starts with (iris_svc in
 * "iris", digits_image in "digits"), with its version folders and each alias of its
 * aliases.json — so that the default mesh serves through the registry. Idempotent: a model
 * that already has versions is left as it is. Returns what it did, one line each.
 */
export async function bootstrapRegistry(client: RegistryClient, modelsDir: string, project: string | undefined, signal: AbortSignal): Promise<string[]> {
  const done: string[] = [];
  const names = (await readdir(modelsDir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name).sort();
  for (const name of names) {
    if (signal.aborted) break;
    const versions = (await readdir(join(modelsDir, name), { withFileTypes: true }))
      .filter((e) => e.isDirectory() && /^[1-9]\d*$/.test(e.name))
      .map((e) => Number(e.name))
      .sort((a, b) => a - b);
    if (versions.length === 0) continue;
    const model = await resolveModel(client, { project: project ?? name.split("_")[0], name }, true);
    const existing = await client.listModelVersions({ modelId: model.id, pageSize: 1 });
    if (existing.modelVersions.length > 0) continue;
    const aliases = await aliasesOf(join(modelsDir, name));
    for (const version of versions) {
      const alias = [...aliases].find(([, v]) => v === version)?.[0];
      const pushed = await pushModelFolder(client, join(modelsDir, name, String(version)), { modelId: model.id, modelName: name, alias });
      done.push(`registered ${project ?? name.split("_")[0]}/${name} version ${pushed.version}${alias ? ` (${alias})` : ""} from models/${name}/${version}`);
    }
  }
  return done;
}

async function aliasesOf(folder: string): Promise<Map<string, number>> {
  try {
    return new Map(Object.entries(JSON.parse(await readFile(join(folder, "aliases.json"), "utf8")) as Record<string, number>));
  } catch {
    return new Map();
  }
}
