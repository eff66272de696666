import { Code, ConnectError } from "@connectrpc/connect";
import type { UploadHeader, UploadModelVersionRequest } from "../../gen/mlmesh/registry/v1/registry_pb.js";
import {
  artifactFileNames,
  maxMetadataBytes,
  ModelArtifactError,
  openOnnxClassifier,
  parseModelMetadata,
  type ArtifactFileName,
  type ModelMetadataFile,
} from "../model/onnx-model.js";
import type { ArtifactStore, BlobWriter } from "./artifact-store.js";
import type { StoredFile } from "./store.js";

/** An upload whose bytes all arrived, matched their digests, and hold a consistent model. */
export interface CheckedUpload {
  readonly header: UploadHeader;
  readonly metadata: ModelMetadataFile;
  /** The signature recorded on the version, from metadata.json. */
  readonly signature: {
    input: ModelMetadataFile["input"];
    outputs: ModelMetadataFile["outputs"];
    probabilityOutput: string;
    featureNames: string[];
    labels: string[];
  };
  readonly files: readonly StoredFile[];
  /** Stores the files under their digests (before the version is written). */
  commit(): Promise<void>;
  /** Drops the files (after any failure). */
  abort(): Promise<void>;
}

/**
 * Reads an UploadModelVersion stream: the header, then chunks of its two files in any order.
 * Sizes are held to the header and the total to `maxBytes` as the bytes arrive (no more than
 * the limit is ever written); at the end each file's SHA-256 must match the header, and the
 * model must load in onnxruntime and agree with its metadata (openOnnxClassifier). Any
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
        for (const name of artifactFileNames) writers.set(name, await deps.artifacts.begin());
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
    const metadata = await checkModel(writers, modelName);
    return {
      header,
      metadata,
      signature: {
        input: metadata.input,
        outputs: metadata.outputs,
        probabilityOutput: metadata.probability_output,
        featureNames: [...metadata.feature_names],
        labels: [...metadata.labels],
      },
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

function checkHeader(header: UploadHeader, maxBytes: number): void {
  const names = header.files.map((f) => f.name).sort();
  if (names.join() !== [...artifactFileNames].sort().join()) {
    throw invalid(`the header must list model.onnx and metadata.json once each, not ${names.join(", ")}`);
  }
  const total = header.files.reduce((sum, f) => sum + Number(f.sizeBytes), 0);
  if (total > maxBytes) {
    throw new ConnectError(`the upload is ${total} bytes; ARTIFACT_MAX_BYTES allows ${maxBytes}`, Code.ResourceExhausted);
  }
  const metadataBytes = Number(header.files.find((f) => f.name === "metadata.json")!.sizeBytes);
  if (metadataBytes > maxMetadataBytes) throw invalid(`metadata.json is ${metadataBytes} bytes; at most ${maxMetadataBytes} are read`);
}

/** The metadata, parsed and checked against the ONNX graph (which must load and answer). */
async function checkModel(writers: Map<ArtifactFileName, BlobWriter>, modelName: string): Promise<ModelMetadataFile> {
  try {
    const metadata = parseModelMetadata((await writers.get("metadata.json")!.contents()).toString("utf8"), { name: modelName });
    const classifier = await openOnnxClassifier(await writers.get("model.onnx")!.contents(), metadata, { intraOpThreads: 1 });
    await classifier.release();
    return metadata;
  } catch (err) {
    if (err instanceof ModelArtifactError) throw invalid(err.message);
    throw err;
  }
}

function invalid(message: string): ConnectError {
  return new ConnectError(message, Code.InvalidArgument);
}
