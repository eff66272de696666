import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { parseModelMetadata } from "../model/onnx-model.js";
import type { SourceFailure, WantedModel, WantedVersion } from "./model-loader.js";

const namePattern = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const aliasPattern = /^[a-z][a-z0-9_-]*$/;

/**
 * What a model repository folder (MODEL_DIR, no registry) serves: every
 * <name>/<version>/{model.onnx,metadata.json}, and the aliases of <name>/aliases.json
 * ({"production": 1}). A version whose files are missing or malformed, or an alias file
 * that is wrong, is a failure with the reason; the rest is served. Throws only when the
 * folder itself cannot be read.
 */
export async function readModelFolder(dir: string): Promise<{ models: WantedModel[]; failures: SourceFailure[] }> {
  const models: WantedModel[] = [];
  const failures: SourceFailure[] = [];
  const entries = await readdir(dir, { withFileTypes: true });
  for (const name of entries.filter((e) => e.isDirectory() && namePattern.test(e.name)).map((e) => e.name).sort()) {
    const folder = join(dir, name);
    const numbers = (await readdir(folder, { withFileTypes: true }))
      .filter((e) => e.isDirectory() && /^[1-9]\d*$/.test(e.name))
      .map((e) => Number(e.name))
      .sort((a, b) => a - b);
    if (numbers.length === 0) {
      failures.push({ name, version: 0, reason: "no numbered version folder (1, 2, ...)" });
      continue;
    }
    const versions: WantedVersion[] = [];
    for (const version of numbers) {
      const versionFolder = join(folder, String(version));
      try {
        const metadataText = await readFile(join(versionFolder, "metadata.json"), "utf8");
        const metadata = parseModelMetadata(metadataText, { name, version });
        versions.push({
          version,
          sha256: metadata.sha256,
          fetch: async () => ({ onnx: await readFile(join(versionFolder, "model.onnx")), metadata }),
        });
      } catch (err) {
        failures.push({ name, version, reason: (err as Error).message });
      }
    }
    const aliases = await readAliases(folder, numbers).catch((err: Error) => {
      failures.push({ name, version: 0, reason: `aliases.json: ${err.message}` });
      return new Map<string, number>();
    });
    models.push({ name, modelId: "", versions, aliases });
  }
  return { models, failures };
}

/** <model>/aliases.json, when there is one: alias -> an existing version folder. */
async function readAliases(folder: string, versions: readonly number[]): Promise<Map<string, number>> {
  let text: string;
  try {
    text = await readFile(join(folder, "aliases.json"), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return new Map();
    throw err;
  }
  const parsed = JSON.parse(text) as unknown;
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error('must be an object such as {"production": 1}');
  const aliases = new Map<string, number>();
  for (const [alias, version] of Object.entries(parsed)) {
    if (!aliasPattern.test(alias) || alias === "latest") throw new Error(`"${alias}" is not an alias name (lowercase, not "latest")`);
    if (typeof version !== "number" || !versions.includes(version)) throw new Error(`"${alias}" points at ${JSON.stringify(version)}, which is no version folder`);
    aliases.set(alias, version);
  }
  return aliases;
}
