import { createHash } from "node:crypto";
import * as ort from "onnxruntime-node";
import { isClassifierMetadata, ModelArtifactError, type ClassifierMetadata, type ModelMetadataFile, type TensorSpecFile } from "./metadata.js";
import { checkedPreprocessor, type Preprocessor } from "./preprocessing.js";
import { allocate, isDtype, numberToHalf, type Dtype, type HostTensor, type Signature, type TensorSpec } from "./tensors.js";
import { WorkerSession } from "./worker-session.js";

/*
 * A model version as mlmesh serves it, shared by the registry (which checks an upload), the
 * Predictor (which serves it) and the CLI (which pushes a folder): any ONNX graph, its
 * signature read from the graph, with optional metadata (metadata.ts). A model whose metadata
 * describes a classifier also answers rows of features with probabilities (the native
 * Predict API and the Proxy); every model answers tensors (the Open Inference Protocol).
 */

/** The hex SHA-256 of some bytes. */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** The classifier side of a model: rows of float32 features in, [rows, labels] probabilities out. */
export interface Classifier {
  readonly metadata: ModelMetadataFile & ClassifierMetadata;
  readonly featureCount: number;
  readonly classCount: number;
  /** One onnxruntime run: `rowCount` rows packed row-major in; probabilities [rowCount, classes] out. */
  run(features: Float32Array, rowCount: number): Promise<Float32Array>;
}

/** A loaded ONNX model, checked against its metadata, ready to run. */
export interface OnnxModel {
  /** SHA-256 of model.onnx: what identifies the version's artifact. */
  readonly sha256: string;
  /** The graph's inputs and outputs. */
  readonly signature: Signature;
  readonly metadata: ModelMetadataFile | undefined;
  /** Set when the metadata describes a classifier. */
  readonly classifier: Classifier | undefined;
  /** Set for an image model (its metadata declares preprocessing and labels). */
  readonly image: ImageModel | undefined;
  /** One onnxruntime run: every input by name in, the `fetches` outputs by name out. */
  run(feeds: Readonly<Record<string, HostTensor>>, fetches: readonly string[]): Promise<Record<string, HostTensor>>;
  /** Frees the session's native memory; the model must not run afterwards. */
  release(): Promise<void>;
}

/** An image model: encoded images become its input (preprocessing), and an output scores its labels. */
export interface ImageModel {
  readonly preprocessor: Preprocessor;
  readonly labels: readonly string[];
  /** The float32 output with one score per label, [N, labels]. */
  readonly scoresOutput: string;
}

/** onnxruntime's session options for one model. */
export interface SessionOptions {
  /** Threads of one run (intra-op); inter-op stays 1: runs of one model queue, not interleave. */
  readonly intraOpThreads: number;
  /**
   * A model.onnx at least this large runs in a worker thread of its own (worker-session.ts),
   * unless its metadata says (serving.worker); classifiers run on the calling thread.
   */
  readonly workerThresholdBytes?: number;
}

/**
 * Opens model.onnx (its bytes) with onnxruntime, reads its signature from the graph and checks
 * the metadata, when given, against it: the ONNX file's SHA-256; for a classifier, its input
 * and declared outputs present with the declared element types and fixed dimensions, a float32
 * [N, features] input and an [N, labels] probability output. Then runs the sample input once,
 * when there is one (the graph must answer, and the first request does not pay onnxruntime's
 * first-run cost). Throws ModelArtifactError naming the first problem.
 */
export async function openOnnxModel(onnx: Uint8Array, metadata: ModelMetadataFile | undefined, options: SessionOptions): Promise<OnnxModel> {
  const sha256 = sha256Hex(onnx);
  if (metadata?.sha256 !== undefined && sha256 !== metadata.sha256) throw new ModelArtifactError(`model.onnx has sha256 ${sha256}, metadata.json says ${metadata.sha256}`);
  const intraOpThreads = metadata?.serving?.intra_op_threads ?? options.intraOpThreads;
  const inWorker = !isClassifierMetadata(metadata) && (metadata?.serving?.worker ?? onnx.length >= (options.workerThresholdBytes ?? Number.POSITIVE_INFINITY));
  if (inWorker) return checkedModel(sha256, metadata, await WorkerSession.open(onnx, intraOpThreads));
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(onnx, {
      executionProviders: ["cpu"],
      intraOpNumThreads: intraOpThreads,
      interOpNumThreads: 1,
      graphOptimizationLevel: "all",
    });
  } catch (err) {
    throw new ModelArtifactError(`model.onnx does not load in onnxruntime: ${(err as Error).message}`);
  }
  const run = async (feeds: Readonly<Record<string, HostTensor>>, fetches: readonly string[]) => {
    const inputs: Record<string, ort.Tensor> = {};
    for (const [name, tensor] of Object.entries(feeds)) inputs[name] = new ort.Tensor(tensor.dtype, tensor.data as ort.Tensor.DataType, tensor.dims);
    const results = await session.run(inputs, fetches);
    const outputs: Record<string, HostTensor> = {};
    for (const name of fetches) {
      const t = results[name];
      outputs[name] = { dtype: t.type as Dtype, dims: [...t.dims], data: t.data as HostTensor["data"] };
    }
    return outputs;
  };
  const classifier = isClassifierMetadata(metadata) ? () => checkedClassifier(session, metadata) : undefined;
  return checkedModel(sha256, metadata, { metadata: { inputs: session.inputMetadata, outputs: session.outputMetadata }, run, release: () => session.release() }, classifier);
}

/** A session, on this thread or a worker's: what checkedModel needs of it. */
interface SessionLike {
  readonly metadata: { readonly inputs: readonly ort.InferenceSession.ValueMetadata[]; readonly outputs: readonly ort.InferenceSession.ValueMetadata[] };
  run(feeds: Readonly<Record<string, HostTensor>>, fetches: readonly string[]): Promise<Record<string, HostTensor>>;
  release(): Promise<void>;
}

/** The signature, the classifier and image sides, and the sample run; the session is released on any failure. */
async function checkedModel(sha256: string, metadata: ModelMetadataFile | undefined, session: SessionLike, classifierOf?: () => Promise<Classifier>): Promise<OnnxModel> {
  try {
    const signature = signatureOf(session.metadata);
    const run = (feeds: Readonly<Record<string, HostTensor>>, fetches: readonly string[]) => session.run(feeds, fetches);
    const classifier = classifierOf === undefined ? undefined : await classifierOf();
    const image = metadata?.preprocessing === undefined ? undefined : imageModelOf(metadata, signature);
    if (classifier === undefined && metadata?.sample_inputs !== undefined) {
      await run(sampleFeeds(signature, metadata.sample_inputs), signature.outputs.map((o) => o.name));
    }
    return { sha256, signature, metadata, classifier, image, run, release: () => session.release() };
  } catch (err) {
    await session.release();
    if (err instanceof ModelArtifactError) throw err;
    throw new ModelArtifactError(`model.onnx failed its sample run: ${(err as Error).message}`);
  }
}

/** An image model's preprocessing checked against its graph, and the output scoring its labels. */
function imageModelOf(metadata: ModelMetadataFile, signature: Signature): ImageModel {
  const preprocessor = checkedPreprocessor(metadata.preprocessing!, signature);
  const labels = metadata.labels;
  if (labels === undefined) throw new ModelArtifactError("an image model's metadata needs labels (its top-k answers name them)");
  const scores = signature.outputs.filter((o) => o.dtype === "float32" && o.shape.length === 2 && o.shape[1] === labels.length);
  if (scores.length === 0) throw new ModelArtifactError(`an image model needs a float32 [N, ${labels.length}] output scoring its ${labels.length} labels; the graph has ${signature.outputs.map((o) => o.name).join(", ")}`);
  // Several candidates: the one named "probabilities", else the graph's first.
  return { preprocessor, labels, scoresOutput: (scores.find((o) => o.name === "probabilities") ?? scores[0]).name };
}

/** The graph's inputs and outputs; a graph with a non-tensor value (a sequence, a map) is refused. */
function signatureOf(session: SessionLike["metadata"]): Signature {
  const spec = (role: string, m: ort.InferenceSession.ValueMetadata): TensorSpec => {
    if (!m.isTensor) throw new ModelArtifactError(`${role} "${m.name}" is not a tensor (a sequence or a map): mlmesh serves tensors`);
    if (!isDtype(m.type)) throw new ModelArtifactError(`${role} "${m.name}" has element type ${m.type}, which mlmesh does not serve`);
    return { name: m.name, dtype: m.type, shape: m.shape.map((d) => (typeof d === "number" && d >= 0 ? d : -1)) };
  };
  return { inputs: session.inputs.map((m) => spec("input", m)), outputs: session.outputs.map((m) => spec("output", m)) };
}

/** A tensor model's sample input (metadata.json's sample_inputs), as the graph's inputs want it. */
function sampleFeeds(signature: Signature, samples: NonNullable<ModelMetadataFile["sample_inputs"]>): Record<string, HostTensor> {
  const feeds: Record<string, HostTensor> = {};
  for (const input of signature.inputs) {
    const sample = samples[input.name];
    if (sample === undefined) throw new ModelArtifactError(`sample_inputs has no "${input.name}": the sample must give every input (${signature.inputs.map((i) => i.name).join(", ")})`);
    const data = allocate(input.dtype, sample.data.length);
    sample.data.forEach((v, i) => {
      if (Array.isArray(data)) data[i] = String(v);
      else if (data instanceof BigInt64Array || data instanceof BigUint64Array) data[i] = BigInt(Number(v));
      else data[i] = input.dtype === "float16" ? numberToHalf(Number(v)) : Number(v);
    });
    feeds[input.name] = { dtype: input.dtype, dims: [...sample.shape], data };
  }
  return feeds;
}

async function checkedClassifier(session: ort.InferenceSession, metadata: ModelMetadataFile & ClassifierMetadata): Promise<Classifier> {
  const featureCount = metadata.feature_names.length;
  const classCount = metadata.labels.length;
  if (session.inputNames.length !== 1) {
    throw new ModelArtifactError(`a classifier takes one input of features; the ONNX graph has ${session.inputNames.length} (${session.inputNames.join(", ")})`);
  }
  const graphInput = session.inputMetadata.find((m) => m.name === metadata.input.name);
  if (graphInput === undefined) {
    throw new ModelArtifactError(`the ONNX graph has no input "${metadata.input.name}" (it has ${session.inputNames.join(", ")})`);
  }
  checkTensor("input", metadata.input, graphInput);
  if (metadata.input.dtype !== "float32") throw new ModelArtifactError(`input "${metadata.input.name}" is ${metadata.input.dtype}; a classifier takes float32 features`);
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
      throw new ModelArtifactError(`${metadata.name ?? "the model"} returned ${output.type} [${output.dims.join(", ")}], expected float32 [${rowCount}, ${classCount}]`);
    }
    return output.data as Float32Array;
  };
  const warmUpRows = metadata.sample_input.length > 0 ? metadata.sample_input : [new Array<number>(featureCount).fill(0)];
  await run(Float32Array.from(warmUpRows.flat()), warmUpRows.length);
  return { metadata, featureCount, classCount, run };
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
