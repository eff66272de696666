/*
 * metadata.json, beside model.onnx: optional. A model's signature comes from its ONNX graph;
 * metadata adds what the graph cannot say. A classifier's (labels, feature names, its
 * probability output, sample rows) serves the native Predict API and the Proxy, as
 * models/train.py writes it. Any model may add a name and version (checked where known), a
 * description, labels, metrics, the ONNX file's SHA-256, and a sample input to run at load.
 */

/**
 * The files of a model artifact: model.onnx is required, metadata.json optional; the companions
 * outlier.onnx (outlier-model.ts) and reference_profile.json (reference-profile.ts) go with a
 * classifier's version when it has them.
 */
export const artifactFileNames = ["model.onnx", "metadata.json", "outlier.onnx", "reference_profile.json"] as const;
export type ArtifactFileName = (typeof artifactFileNames)[number];

/** Largest metadata.json read (it holds names, labels, sample rows and metrics). */
export const maxMetadataBytes = 1024 * 1024;

/** One tensor as a classifier's metadata.json declares it; -1 marks a dynamic dimension. */
export interface TensorSpecFile {
  readonly name: string;
  readonly dtype: string;
  readonly shape: readonly number[];
}

/** The classifier part of metadata.json: all of it, or none. */
export interface ClassifierMetadata {
  readonly input: TensorSpecFile;
  readonly outputs: readonly TensorSpecFile[];
  /** The output holding the float32 [N, classes] probabilities. */
  readonly probability_output: string;
  readonly feature_names: readonly string[];
  readonly labels: readonly string[];
  readonly sample_input: readonly (readonly number[])[];
}

/** A sample of one input: its shape and its elements, flat (numbers, booleans or strings). */
export interface SampleTensor {
  readonly shape: readonly number[];
  readonly data: readonly (number | boolean | string)[];
}

/** An image model's steps from an encoded image to its input tensor (preprocessing.ts runs them). */
export interface PreprocessingFile {
  /** The graph input the images fill. */
  readonly input: string;
  readonly color: "rgb" | "grayscale";
  /** To exactly width x height ("fill" stretches, "cover" crops the overflow), or the shorter side to a length. */
  readonly resize: { readonly width: number; readonly height: number; readonly fit?: "fill" | "cover" } | { readonly shorter_side: number };
  readonly center_crop?: { readonly width: number; readonly height: number };
  /** Each 0..255 channel value is multiplied by this, then (v - mean[c]) / std[c]. */
  readonly scale: number;
  readonly mean: readonly number[];
  readonly std: readonly number[];
  readonly layout: "NCHW" | "NHWC";
}

/** metadata.json as parsed: every field optional but the classifier's, which come together. */
export interface ModelMetadataFile extends Partial<ClassifierMetadata> {
  readonly name?: string;
  readonly version?: number;
  readonly description?: string;
  readonly metrics?: Readonly<Record<string, number>>;
  /** SHA-256 of model.onnx, hex; checked when present. */
  readonly sha256?: string;
  /** A tensor model's sample input, by input name: run once when the model loads. */
  readonly sample_inputs?: Readonly<Record<string, SampleTensor>>;
  /** An image model's preprocessing: encoded images become its input tensor. */
  readonly preprocessing?: PreprocessingFile;
  /** How the Predictor runs the model: batching across requests, onnxruntime's threads. */
  readonly serving?: ServingFile;
}

/** metadata.json's "serving": per-model run settings. */
export interface ServingFile {
  /** Most entries (along the batch dimension) one run takes from concurrent requests. */
  readonly max_batch?: number;
  /** How long an idle model waits for more requests before running (0: never waits). */
  readonly batch_delay_ms?: number;
  /** onnxruntime's threads for one run of this model (ORT_INTRA_OP_THREADS otherwise). */
  readonly intra_op_threads?: number;
  /** Run the model in a worker thread of its own (by default: when model.onnx is at least PREDICTOR_WORKER_MODEL_BYTES). */
  readonly worker?: boolean;
}

/** A model whose metadata or graph is wrong; the message says what is wrong. */
export class ModelArtifactError extends Error {
  override readonly name = "ModelArtifactError";
}

const classifierFields = ["input", "outputs", "probability_output", "feature_names", "sample_input"] as const;

/** Whether the metadata describes a classifier (feature names given), which the native Predict API serves. */
export function isClassifierMetadata(metadata: ModelMetadataFile | undefined): metadata is ModelMetadataFile & ClassifierMetadata {
  return metadata?.feature_names !== undefined;
}

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
  if (expect.name !== undefined && metadata.name !== undefined && metadata.name !== expect.name) problems.push(`name is "${metadata.name}", expected "${expect.name}"`);
  if (expect.version !== undefined && metadata.version !== undefined && metadata.version !== expect.version) {
    problems.push(`version is ${metadata.version}, expected ${expect.version}`);
  }
  if (metadata.description !== undefined && typeof metadata.description !== "string") problems.push("description must be text");
  if (metadata.labels !== undefined && (!Array.isArray(metadata.labels) || metadata.labels.length < 2 || metadata.labels.some((l) => typeof l !== "string"))) {
    problems.push("labels must list at least 2 classes");
  }
  if (metadata.sha256 !== undefined && !/^[0-9a-f]{64}$/.test(String(metadata.sha256))) problems.push("sha256 is not a hex SHA-256");
  if (metadata.metrics !== undefined && (typeof metadata.metrics !== "object" || Object.values(metadata.metrics).some((v) => typeof v !== "number"))) {
    problems.push("metrics must map names to numbers");
  }
  if (metadata.sample_inputs !== undefined) {
    for (const [name, sample] of Object.entries(metadata.sample_inputs ?? {})) {
      if (!Array.isArray(sample?.shape) || !sample.shape.every((d) => Number.isInteger(d) && d >= 0) || !Array.isArray(sample.data)) {
        problems.push(`sample_inputs.${name} must be {shape: [dims], data: [elements]}`);
      } else if (sample.shape.reduce((a, b) => a * b, 1) !== sample.data.length) {
        problems.push(`sample_inputs.${name} has ${sample.data.length} elements for shape [${sample.shape.join(", ")}]`);
      }
    }
  }
  if (metadata.serving !== undefined) {
    const { max_batch, batch_delay_ms, intra_op_threads } = metadata.serving ?? {};
    const whole = (v: unknown, min: number, max: number) => v === undefined || (Number.isInteger(v) && (v as number) >= min && (v as number) <= max);
    if (!whole(max_batch, 1, 100_000)) problems.push("serving.max_batch must be a whole number from 1 to 100000");
    if (!whole(batch_delay_ms, 0, 1000)) problems.push("serving.batch_delay_ms must be a whole number from 0 to 1000");
    if (!whole(intra_op_threads, 1, 64)) problems.push("serving.intra_op_threads must be a whole number from 1 to 64");
    if (metadata.serving?.worker !== undefined && typeof metadata.serving.worker !== "boolean") problems.push("serving.worker must be true or false");
  }
  const given = classifierFields.filter((f) => metadata[f] !== undefined);
  if (given.length > 0) problems.push(...classifierProblems(metadata, given));
  if (problems.length > 0) throw new ModelArtifactError(`metadata.json: ${problems.join("; ")}`);
  return metadata;
}

/** A classifier's fields come together and agree with each other. */
function classifierProblems(metadata: ModelMetadataFile, given: readonly string[]): string[] {
  const problems: string[] = [];
  const missing = classifierFields.filter((f) => !given.includes(f));
  if (missing.length > 0) problems.push(`a classifier's metadata needs ${classifierFields.join(", ")} and labels together; missing ${missing.join(", ")}`);
  if (metadata.labels === undefined) problems.push("a classifier needs labels");
  if (!Array.isArray(metadata.feature_names) || metadata.feature_names.length < 1) problems.push("feature_names is empty");
  if (metadata.input !== undefined && !isTensorSpec(metadata.input)) problems.push("input must be {name, dtype, shape}");
  if (metadata.outputs !== undefined && (!Array.isArray(metadata.outputs) || !metadata.outputs.every(isTensorSpec))) problems.push("outputs must be a list of {name, dtype, shape}");
  if (metadata.probability_output !== undefined) {
    if (typeof metadata.probability_output !== "string") problems.push("probability_output must be an output's name");
    else if (Array.isArray(metadata.outputs) && !metadata.outputs.some((o) => o?.name === metadata.probability_output)) {
      problems.push(`probability_output "${metadata.probability_output}" is not one of the outputs`);
    }
  }
  const featureCount = metadata.feature_names?.length;
  if (metadata.sample_input !== undefined && (!Array.isArray(metadata.sample_input) || metadata.sample_input.some((row) => !Array.isArray(row) || row.length !== featureCount))) {
    problems.push(`sample_input rows must have ${featureCount} values`);
  }
  return problems;
}

function isTensorSpec(spec: unknown): spec is TensorSpecFile {
  const s = spec as TensorSpecFile;
  return typeof s === "object" && s !== null && typeof s.name === "string" && typeof s.dtype === "string" && Array.isArray(s.shape);
}
