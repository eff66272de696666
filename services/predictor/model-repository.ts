import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { InferenceBatcher } from "./inference-batcher.js";

/** The metadata.json written next to each model.onnx by models/train.py. */
export interface ModelMetadataFile {
  readonly name: string;
  readonly version: number;
  readonly description: string;
  readonly input: TensorSpecFile;
  readonly outputs: readonly TensorSpecFile[];
  /** The output holding the float32 [N, classes] probabilities. */
  readonly probability_output: string;
  readonly feature_names: readonly string[];
  readonly labels: readonly string[];
  readonly sample_input: readonly (readonly number[])[];
  readonly metrics: Readonly<Record<string, number>>;
  readonly sha256: string;
}

interface TensorSpecFile {
  readonly name: string;
  readonly dtype: string;
  readonly shape: readonly number[];
}

/** One loaded model version, ready to classify batches of rows. */
export interface LoadedModel {
  readonly metadata: ModelMetadataFile;
  /** Number of feature values per row. */
  readonly featureCount: number;
  /**
   * Classifies `rowCount` rows packed row-major in `features` and returns the probabilities
   * packed the same way ([rowCount, labels.length]). Concurrent calls share one onnxruntime
   * run (InferenceBatcher).
   */
  classify(features: Float32Array, rowCount: number): Promise<Float32Array>;
  close(): Promise<void>;
}

/** A model version that was found but could not be loaded, and why. */
export interface LoadFailure {
  readonly name: string;
  readonly version: number;
  readonly reason: string;
}

/** Every loaded version, by model name then version number, plus the failures. */
export interface ModelRepository {
  readonly models: ReadonlyMap<string, ReadonlyMap<number, LoadedModel>>;
  readonly failures: readonly LoadFailure[];
  close(): Promise<void>;
}

const namePattern = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Rows per onnxruntime run when concurrent requests are coalesced (one request may be 10,000). */
const maxBatchRows = 10_000;

/**
 * Loads every <name>/<version>/ folder of the repository. A version whose files are missing,
 * malformed, tampered with (sha256) or inconsistent with the ONNX graph becomes a LoadFailure
 * with the reason; the others load. Throws only when the directory itself cannot be read.
 */
export async function loadModelRepository(dir: string, options: { intraOpThreads: number }): Promise<ModelRepository> {
  const models = new Map<string, Map<number, LoadedModel>>();
  const failures: LoadFailure[] = [];
  const entries = await readdir(dir, { withFileTypes: true });
  const folders = entries.filter((e) => e.isDirectory() && namePattern.test(e.name)).map((e) => e.name).sort();
  await Promise.all(
    folders.map(async (name) => {
      const versionDirs = (await readdir(join(dir, name), { withFileTypes: true }))
        .filter((e) => e.isDirectory() && /^[1-9]\d*$/.test(e.name))
        .map((e) => Number(e.name));
      if (versionDirs.length === 0) {
        failures.push({ name, version: 0, reason: "no numbered version folder (1, 2, ...)" });
        return;
      }
      for (const version of versionDirs) {
        try {
          const model = await loadModelVersion(join(dir, name, String(version)), name, version, options);
          if (!models.has(name)) models.set(name, new Map());
          models.get(name)!.set(version, model);
        } catch (err) {
          failures.push({ name, version, reason: (err as Error).message });
        }
      }
    }),
  );
  failures.sort((a, b) => a.name.localeCompare(b.name) || a.version - b.version);
  return {
    models,
    failures,
    async close() {
      await Promise.all([...models.values()].flatMap((versions) => [...versions.values()].map((m) => m.close())));
    },
  };
}

async function loadModelVersion(
  folder: string,
  name: string,
  version: number,
  options: { intraOpThreads: number },
): Promise<LoadedModel> {
  const metadata = parseMetadata(await readFile(join(folder, "metadata.json"), "utf8"), name, version);
  const onnxBytes = await readFile(join(folder, "model.onnx"));
  const sha256 = createHash("sha256").update(onnxBytes).digest("hex");
  if (sha256 !== metadata.sha256) {
    throw new Error(`model.onnx has sha256 ${sha256}, metadata.json says ${metadata.sha256}`);
  }
  const session = await ort.InferenceSession.create(onnxBytes, {
    executionProviders: ["cpu"],
    intraOpNumThreads: options.intraOpThreads,
    interOpNumThreads: 1,
    graphOptimizationLevel: "all",
  });
  const inputName = metadata.input.name;
  const outputName = metadata.probability_output;
  if (!session.inputNames.includes(inputName)) {
    throw new Error(`the ONNX graph has no input "${inputName}" (it has ${session.inputNames.join(", ")})`);
  }
  if (!session.outputNames.includes(outputName)) {
    throw new Error(`the ONNX graph has no output "${outputName}" (it has ${session.outputNames.join(", ")})`);
  }
  const featureCount = metadata.feature_names.length;
  const classCount = metadata.labels.length;
  const fetches = [outputName];
  const runInference = async (features: Float32Array, rowCount: number) => {
    const input = new ort.Tensor("float32", features, [rowCount, featureCount]);
    const output = (await session.run({ [inputName]: input }, fetches))[outputName];
    if (output.type !== "float32" || output.dims.length !== 2 || output.dims[1] !== classCount) {
      throw new Error(`${name} v${version} returned ${output.type} [${output.dims.join(", ")}], expected float32 [N, ${classCount}]`);
    }
    return output.data as Float32Array;
  };
  // One run before serving: proves the graph answers with the declared shape, and the first
  // request does not pay onnxruntime's first-run allocations.
  const warmUpRows = metadata.sample_input.length > 0 ? metadata.sample_input : [new Array<number>(featureCount).fill(0)];
  await runInference(Float32Array.from(warmUpRows.flat()), warmUpRows.length);
  const batcher = new InferenceBatcher(runInference, featureCount, classCount, maxBatchRows);
  return {
    metadata,
    featureCount,
    classify: (features, rowCount) => batcher.classify(features, rowCount),
    close: () => session.release(),
  };
}

function parseMetadata(text: string, name: string, version: number): ModelMetadataFile {
  let metadata: ModelMetadataFile;
  try {
    metadata = JSON.parse(text) as ModelMetadataFile;
  } catch (err) {
    throw new Error(`metadata.json is not JSON: ${(err as Error).message}`);
  }
  const problems: string[] = [];
  if (metadata.name !== name) problems.push(`name is "${metadata.name}", the folder says "${name}"`);
  if (metadata.version !== version) problems.push(`version is ${metadata.version}, the folder says ${version}`);
  if (!Array.isArray(metadata.labels) || metadata.labels.length < 2) problems.push("labels must list at least 2 classes");
  if (!Array.isArray(metadata.feature_names) || metadata.feature_names.length < 1) problems.push("feature_names is empty");
  if (typeof metadata.input?.name !== "string") problems.push("input.name is missing");
  if (typeof metadata.probability_output !== "string") problems.push("probability_output is missing");
  if (!/^[0-9a-f]{64}$/.test(String(metadata.sha256))) problems.push("sha256 is not a hex SHA-256");
  const featureCount = metadata.feature_names?.length;
  if (!Array.isArray(metadata.sample_input) || metadata.sample_input.some((row) => row.length !== featureCount)) {
    problems.push(`sample_input rows must have ${featureCount} values`);
  }
  if (problems.length > 0) throw new Error(`metadata.json: ${problems.join("; ")}`);
  return metadata;
}
