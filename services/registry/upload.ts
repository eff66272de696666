import { Code, ConnectError } from "@connectrpc/connect";
import type { UploadHeader, UploadModelVersionRequest } from "../../gen/mlmesh/registry/v1/registry_pb.js";
import { artifactFileNames, maxMetadataBytes, ModelArtifactError, parseModelMetadata, type ArtifactFileName, type ModelMetadataFile } from "../model/metadata.js";
import { openOnnxModel } from "../model/onnx-model.js";
import { openOutlierModel } from "../model/outlier-model.js";
import { parseReferenceProfile } from "../model/reference-profile.js";
import type { TensorSpec } from "../model/tensors.js";
import type { ArtifactStore, BlobWriter } from "./artifact-store.js";
import type { StoredFile } from "./store.js";

/** An upload whose bytes all arrived, matched their digests, and hold a consistent model. */
export interface CheckedUpload {
  readonly header: UploadHeader;
  /** metadata.json, when the upload has one. */
  readonly metadata: ModelMetadataFile | undefined;
  /** The signature recorded on the version: the graph's tensors, a classifier's fields, labels. */
  readonly signature: StoredSignature;
  readonly files: readonly StoredFile[];
  /** Stores the files under their digests (before the version is written). */
  commit(): Promise<void>;
  /** Drops the files (after any failure). */
  abort(): Promise<void>;
}

/** The signature stored with a version (the registry's ModelSignature, as JSON). */
export interface StoredSignature {
  readonly kind: "classifier" | "tensor" | "image";
  readonly inputs: readonly TensorSpec[];
  readonly outputs: readonly TensorSpec[];
  /** A classifier's input (its one input); unset for a tensor model. */
  readonly input?: TensorSpec;
  readonly probabilityOutput: string;
  readonly featureNames: readonly string[];
  readonly labels: readonly string[];
}

/**
 * Reads an UploadModelVersion stream: the header, then chunks of its files in any order
 * (model.onnx, and metadata.json when the model has one).
 * Sizes are held to the header and the total to `maxBytes` as the bytes arrive (no more than
 * the limit is ever written); at the end each file's SHA-256 must match the header, and the
 * model must load in onnxruntime, agree with its metadata and run its sample input (openOnnxModel). Any
 * failure drops every staged byte and throws INVALID_ARGUMENT (RESOURCE_EXHAUSTED for sizes)
 * naming the problem. `modelName` resolves the header's model (NOT_FOUND) before any byte is
 * stored.
 */
export async function receiveUpload(
  requests: AsyncIterable<UploadModelVersionRequest>,
  deps: { artifacts: ArtifactStore; maxBytes: number; modelName: (modelId: string) => Promise<string> },
): Promise<CheckedUpload> {
  const writers = new Map<ArtifactFileName, BlobWriter>();
  const abort = () => Promise.all([...writers.values()].map((w) => w.abort())).then(() => undefined);
  try {
    let header: UploadHeader | undefined;
    let modelName = "";
    let received = 0;
    for await (const request of requests) {
      const { content } = request;
      if (content.case === "header") {
        if (header !== undefined) throw invalid("an upload has one header, as its first message; a second one arrived");
        header = content.value;
        checkHeader(header, deps.maxBytes);
        modelName = await deps.modelName(header.modelId);
        for (const file of header.files) writers.set(file.name as ArtifactFileName, await deps.artifacts.begin());
        continue;
      }
      if (header === undefined) throw invalid("the first message of an upload must be its header");
      if (content.case !== "chunk") throw invalid("a message of an upload carries neither a header nor a chunk");
      const name = content.value.file as ArtifactFileName;
      const writer = writers.get(name)!;
      const declared = Number(header.files.find((f) => f.name === name)!.sizeBytes);
      received += content.value.data.length;
      if (received > deps.maxBytes) {
        throw new ConnectError(`the upload exceeds ARTIFACT_MAX_BYTES (${deps.maxBytes} bytes)`, Code.ResourceExhausted);
      }
      if (writer.size + content.value.data.length > declared) throw invalid(`${name}: more bytes arrived than the header's ${declared}`);
      await writer.write(content.value.data);
    }
    if (header === undefined) throw invalid("the upload ended before its header");
    const files: StoredFile[] = [];
    for (const declared of header.files) {
      const writer = writers.get(declared.name as ArtifactFileName)!;
      if (writer.size !== Number(declared.sizeBytes)) {
        throw invalid(`${declared.name}: ${writer.size} of ${declared.sizeBytes} bytes arrived; the upload is incomplete`);
      }
      if (writer.digest() !== declared.sha256) {
        throw invalid(`${declared.name}: the received bytes have SHA-256 ${writer.digest()}, the header says ${declared.sha256}`);
      }
      files.push({ name: declared.name, sha256: declared.sha256, sizeBytes: writer.size });
    }
    const { metadata, signature } = await checkModel(writers, modelName);
    return {
      header,
      metadata,
      signature,
      files,
      async commit() {
        for (const writer of writers.values()) await writer.commit();
      },
      abort,
    };
  } catch (err) {
    await abort();
    throw err;
  }
}

/** Largest reference_profile.json read (about 1,000 values per feature). */
const maxProfileBytes = 16 * 1024 * 1024;

function checkHeader(header: UploadHeader, maxBytes: number): void {
  const names = header.files.map((f) => f.name);
  if (!names.includes("model.onnx") || new Set(names).size !== names.length || !names.every((n) => (artifactFileNames as readonly string[]).includes(n))) {
    throw invalid(`the header must list model.onnx, and metadata.json when the model has one, and the companions outlier.onnx and reference_profile.json when given, once each; not ${names.join(", ")}`);
  }
  const total = header.files.reduce((sum, f) => sum + Number(f.sizeBytes), 0);
  if (total > maxBytes) {
    throw new ConnectError(`the upload is ${total} bytes; ARTIFACT_MAX_BYTES allows ${maxBytes}`, Code.ResourceExhausted);
  }
  const metadataBytes = Number(header.files.find((f) => f.name === "metadata.json")?.sizeBytes ?? 0);
  if (metadataBytes > maxMetadataBytes) throw invalid(`metadata.json is ${metadataBytes} bytes; at most ${maxMetadataBytes} are read`);
  const profileBytes = Number(header.files.find((f) => f.name === "reference_profile.json")?.sizeBytes ?? 0);
  if (profileBytes > maxProfileBytes) throw invalid(`reference_profile.json is ${profileBytes} bytes; at most ${maxProfileBytes} are read`);
}

/** The metadata, when given, parsed and checked against the ONNX graph (which must load and run its sample). */
async function checkModel(writers: Map<ArtifactFileName, BlobWriter>, modelName: string): Promise<{ metadata: ModelMetadataFile | undefined; signature: StoredSignature }> {
  try {
    const metadataWriter = writers.get("metadata.json");
    const metadata = metadataWriter === undefined ? undefined : parseModelMetadata((await metadataWriter.contents()).toString("utf8"), { name: modelName });
    const model = await openOnnxModel(await writers.get("model.onnx")!.contents(), metadata, { intraOpThreads: 1 });
    await model.release();
    const classifier = model.classifier?.metadata;
    await checkCompanions(writers, classifier);
    const signature: StoredSignature = {
      kind: classifier ? "classifier" : model.image ? "image" : "tensor",
      inputs: model.signature.inputs,
      outputs: model.signature.outputs,
      input: classifier ? model.signature.inputs[0] : undefined,
      probabilityOutput: classifier?.probability_output ?? "",
      featureNames: [...(classifier?.feature_names ?? [])],
      labels: [...(metadata?.labels ?? [])],
    };
    return { metadata, signature };
  } catch (err) {
    if (err instanceof ModelArtifactError) throw invalid(err.message);
    throw err;
  }
}

/**
 * The companions, when uploaded: they describe a classifier's rows, so only a classifier may
 * have them; outlier.onnx must take its rows and answer one score per row, and
 * reference_profile.json must profile its features, in order, and only its labels.
 */
async function checkCompanions(writers: Map<ArtifactFileName, BlobWriter>, classifier: { feature_names: readonly string[]; labels: readonly string[] } | undefined): Promise<void> {
  const outlier = writers.get("outlier.onnx");
  const profile = writers.get("reference_profile.json");
  if (outlier === undefined && profile === undefined) return;
  if (classifier === undefined) throw new ModelArtifactError("outlier.onnx and reference_profile.json describe a classifier's rows: this model is not a classifier (its metadata.json declares no features)");
  if (outlier !== undefined) await (await openOutlierModel(await outlier.contents(), classifier.feature_names.length)).release();
  if (profile !== undefined) {
    const parsed = parseReferenceProfile((await profile.contents()).toString("utf8"));
    const names = parsed.features.map((f) => f.name);
    if (names.join("\u0000") !== classifier.feature_names.join("\u0000")) {
      throw new ModelArtifactError(`reference_profile.json profiles ${names.join(", ")}; the model's features are ${classifier.feature_names.join(", ")}`);
    }
    const unknown = parsed.labels.filter((l) => !classifier.labels.includes(l.label)).map((l) => l.label);
    if (unknown.length > 0) throw new ModelArtifactError(`reference_profile.json has labels the model does not: ${unknown.join(", ")}`);
  }
}

function invalid(message: string): ConnectError {
  return new ConnectError(message, Code.InvalidArgument);
}
