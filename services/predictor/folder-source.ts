import { readdir, readFile, stat } from "node:fs/promises";
import type { Dirent } from "node:fs";
import { join } from "node:path";
import { parseModelMetadata } from "../model/metadata.js";
import { sha256Hex } from "../model/onnx-model.js";
import type { SourceFailure, WantedModel, WantedVersion } from "./model-loader.js";

const namePattern = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const aliasPattern = /^[a-z][a-z0-9_-]*$/;

/**
 * What a model repository folder (MODEL_DIR, no registry) serves: every
 * <name>/<version>/model.onnx with its metadata.json and outlier.onnx when there are, and the aliases of <name>/aliases.json
 * ({"production": 1}). A version whose files are missing or malformed, or an alias file
 * that is wrong, is a failure with the reason; the rest is served. Throws only when the
 * folder itself cannot be read.
 */
export async function readModelFolder(dir: string): Promise<{ models: WantedModel[]; failures: SourceFailure[] }> {
  const models: WantedModel[] = [];
  const failures: SourceFailure[] = [];
  const entries = await readdir(dir, { withFileTypes: true });
  const folders = await Promise.all(entries.filter((e) => namePattern.test(e.name)).map(async (e) => ((await isFolder(dir, e)) ? e.name : undefined)));
  for (const name of folders.filter((n): n is string => n !== undefined).sort()) {
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
        const metadataText = await readFile(join(versionFolder, "metadata.json"), "utf8").catch((err: NodeJS.ErrnoException) => {
          if (err.code === "ENOENT") return undefined; // a plain tensor model: its signature is in its graph
          throw err;
        });
        const metadata = metadataText === undefined ? undefined : parseModelMetadata(metadataText, { name, version });
        // The digest identifies the artifact; the bytes are read again only when it must load.
        const onnxPath = join(versionFolder, "model.onnx");
        const outlierPath = join(versionFolder, "outlier.onnx");
        const fetch = async (withOutlier: boolean) => ({
          onnx: await readFile(onnxPath),
          metadata,
          outlier: withOutlier ? await readFile(outlierPath).catch((err: NodeJS.ErrnoException) => (err.code === "ENOENT" ? undefined : Promise.reject(err))) : undefined,
        });
        versions.push({ version, sha256: sha256Hex(await readFile(onnxPath)), fetch });
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

/** A folder, or a symbolic link to one (a repository may link models kept elsewhere). */
async function isFolder(dir: string, entry: Dirent): Promise<boolean> {
  if (entry.isDirectory()) return true;
  if (!entry.isSymbolicLink()) return false;
  return (await stat(join(dir, entry.name)).catch(() => undefined))?.isDirectory() ?? false;
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
