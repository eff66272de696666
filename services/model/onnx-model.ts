import { createHash } from "node:crypto";
import * as ort from "onnxruntime-node";

/*
 * The model format mlmesh serves, shared by the registry (which checks an upload), the
 * Predictor (which serves it) and the CLI (which pushes a folder): an ONNX classifier
 * (model.onnx) and its metadata.json, as models/train.py writes them.
 */

/** The two files of a model artifact. */
export const artifactFileNames = ["model.onnx", "metadata.json"] as const;
export type ArtifactFileName = (typeof artifactFileNames)[number];

/** metadata.json, next to each model.onnx. */
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
  /** SHA-256 of model.onnx, hex. */
  readonly sha256: string;
}

/** One tensor as metadata.json declares it; -1 marks a dynamic dimension. */
export interface TensorSpecFile {
  readonly name: string;
  readonly dtype: string;
  readonly shape: readonly number[];
}

/** A model whose metadata or graph is wrong; the message says what is wrong. */
export class ModelArtifactError extends Error {
  override readonly name = "ModelArtifactError";
}

/** Largest metadata.json read (it holds names, labels, sample rows and metrics). */
export const maxMetadataBytes = 1024 * 1024;

/**
 * Parses metadata.json and checks its fields; throws ModelArtifactError listing every
 * problem. `expect` adds the name (and version) the file must carry where they are known.
 */
export function parseModelMetadata(text: string, expect: { name?: string; version?: number } = {}): ModelMetadataFile {
  let metadata: ModelMetadataFile;
  try {
    metadata = JSON.parse(text) as ModelMetadataFile;
  } catch (err) {
    throw new ModelArtifactError(`metadata.json is not JSON: ${(err as Error).message}`);
  }
  if (typeof metadata !== "object" || metadata === null || Array.isArray(metadata)) throw new ModelArtifactError("metadata.json is not a JSON object");
  const problems: string[] = [];
  if (expect.name !== undefined && metadata.name !== expect.name) problems.push(`name is "${metadata.name}", expected "${expect.name}"`);
  if (expect.version !== undefined && metadata.version !== expect.version) problems.push(`version is ${metadata.version}, expected ${expect.version}`);
  if (!Array.isArray(metadata.labels) || metadata.labels.length < 2 || metadata.labels.some((l) => typeof l !== "string")) {
    problems.push("labels must list at least 2 classes");
  }
  if (!Array.isArray(metadata.feature_names) || metadata.feature_names.length < 1) problems.push("feature_names is empty");
  if (!isTensorSpec(metadata.input)) problems.push("input must be {name, dtype, shape}");
  if (!Array.isArray(metadata.outputs) || !metadata.outputs.every(isTensorSpec)) problems.push("outputs must be a list of {name, dtype, shape}");
  if (typeof metadata.probability_output !== "string") problems.push("probability_output is missing");
  else if (Array.isArray(metadata.outputs) && !metadata.outputs.some((o) => o?.name === metadata.probability_output)) {
    problems.push(`probability_output "${metadata.probability_output}" is not one of the outputs`);
  }
  if (!/^[0-9a-f]{64}$/.test(String(metadata.sha256))) problems.push("sha256 is not a hex SHA-256");
  const featureCount = metadata.feature_names?.length;
  if (!Array.isArray(metadata.sample_input) || metadata.sample_input.some((row) => !Array.isArray(row) || row.length !== featureCount)) {
    problems.push(`sample_input rows must have ${featureCount} values`);
  }
  if (problems.length > 0) throw new ModelArtifactError(`metadata.json: ${problems.join("; ")}`);
  return metadata;
}

function isTensorSpec(spec: unknown): spec is TensorSpecFile {
  const s = spec as TensorSpecFile;
  return typeof s === "object" && s !== null && typeof s.name === "string" && typeof s.dtype === "string" && Array.isArray(s.shape);
}

/** The hex SHA-256 of some bytes. */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** An ONNX classifier checked against its metadata, ready to run. */
export interface OnnxClassifier {
  readonly metadata: ModelMetadataFile;
  readonly featureCount: number;
  readonly classCount: number;
  /** One onnxruntime run: `rowCount` rows packed row-major in; probabilities [rowCount, classes] out. */
  run(features: Float32Array, rowCount: number): Promise<Float32Array>;
  /** Frees the session's native memory; the classifier must not run afterwards. */
  release(): Promise<void>;
}

/**
 * Opens model.onnx (its bytes, or a file path) with onnxruntime and checks it against its
 * metadata: the ONNX file's SHA-256, the input and every declared output present with the
 * declared element type and fixed dimensions, a float32 [N, features] input and an
 * [N, labels] probability output; then runs the sample input once (the graph must answer with
 * the declared shape, and the first request does not pay onnxruntime's first-run cost).
 * Throws ModelArtifactError naming the first mismatch.
 */
export async function openOnnxClassifier(
  onnx: Uint8Array,
  metadata: ModelMetadataFile,
  options: { intraOpThreads: number },
): Promise<OnnxClassifier> {
  const sha256 = sha256Hex(onnx);
  if (sha256 !== metadata.sha256) throw new ModelArtifactError(`model.onnx has sha256 ${sha256}, metadata.json says ${metadata.sha256}`);
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(onnx, {
      executionProviders: ["cpu"],
      intraOpNumThreads: options.intraOpThreads,
      interOpNumThreads: 1,
      graphOptimizationLevel: "all",
    });
  } catch (err) {
    throw new ModelArtifactError(`model.onnx does not load in onnxruntime: ${(err as Error).message}`);
  }
  try {
    return await checkedClassifier(session, metadata);
  } catch (err) {
    await session.release();
    throw err;
  }
}

async function checkedClassifier(session: ort.InferenceSession, metadata: ModelMetadataFile): Promise<OnnxClassifier> {
  const featureCount = metadata.feature_names.length;
  const classCount = metadata.labels.length;
  const graphInput = session.inputMetadata.find((m) => m.name === metadata.input.name);
  if (graphInput === undefined) {
    throw new ModelArtifactError(`the ONNX graph has no input "${metadata.input.name}" (it has ${session.inputNames.join(", ")})`);
  }
  checkTensor("input", metadata.input, graphInput);
  if (metadata.input.dtype !== "float32") throw new ModelArtifactError(`input "${metadata.input.name}" is ${metadata.input.dtype}; mlmesh serves float32 features`);
  if (metadata.input.shape.length !== 2 || metadata.input.shape[1] !== featureCount) {
    throw new ModelArtifactError(`input "${metadata.input.name}" has shape [${metadata.input.shape.join(", ")}], metadata lists ${featureCount} features: expected [-1, ${featureCount}]`);
  }
  for (const output of metadata.outputs) {
    const graphOutput = session.outputMetadata.find((m) => m.name === output.name);
    if (graphOutput === undefined) {
      throw new ModelArtifactError(`the ONNX graph has no output "${output.name}" (it has ${session.outputNames.join(", ")})`);
    }
    checkTensor("output", output, graphOutput);
  }
  const probabilities = metadata.outputs.find((o) => o.name === metadata.probability_output)!;
  if (probabilities.dtype !== "float32" || probabilities.shape.length !== 2 || probabilities.shape[1] !== classCount) {
    throw new ModelArtifactError(
      `output "${probabilities.name}" is ${probabilities.dtype} [${probabilities.shape.join(", ")}]; with ${classCount} labels it must be float32 [-1, ${classCount}]`,
    );
  }

  const fetches = [probabilities.name];
  const run = async (features: Float32Array, rowCount: number) => {
    const input = new ort.Tensor("float32", features, [rowCount, featureCount]);
    const output = (await session.run({ [metadata.input.name]: input }, fetches))[probabilities.name];
    if (output.type !== "float32" || output.dims.length !== 2 || output.dims[0] !== rowCount || output.dims[1] !== classCount) {
      throw new ModelArtifactError(`${metadata.name} returned ${output.type} [${output.dims.join(", ")}], expected float32 [${rowCount}, ${classCount}]`);
    }
    return output.data as Float32Array;
  };
  const warmUpRows = metadata.sample_input.length > 0 ? metadata.sample_input : [new Array<number>(featureCount).fill(0)];
  await run(Float32Array.from(warmUpRows.flat()), warmUpRows.length);
  return { metadata, featureCount, classCount, run, release: () => session.release() };
}

/** Element type and every fixed dimension must agree (a symbolic graph dimension matches -1). */
function checkTensor(role: string, declared: TensorSpecFile, graph: ort.InferenceSession.ValueMetadata): void {
  if (!graph.isTensor) throw new ModelArtifactError(`${role} "${declared.name}" is not a tensor in the ONNX graph`);
  if (graph.type !== declared.dtype) {
    throw new ModelArtifactError(`${role} "${declared.name}" is ${graph.type} in the ONNX graph, metadata.json says ${declared.dtype}`);
  }
  const dims = graph.shape.map((d) => (typeof d === "number" ? d : -1));
  const agree = dims.length === declared.shape.length && dims.every((d, i) => d === -1 || declared.shape[i] === -1 || d === declared.shape[i]);
  if (!agree) {
    throw new ModelArtifactError(`${role} "${declared.name}" has shape [${dims.join(", ")}] in the ONNX graph, metadata.json says [${declared.shape.join(", ")}]`);
  }
}
