import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ModelRegistryService, type ModelVersion, type UploadModelVersionRequestSchema } from "../../gen/mlmesh/registry/v1/registry_pb.js";
import { meshTransport } from "../runtime/client/mesh-transport.js";
import type { MeshCredentials } from "../runtime/client/mesh-credentials.js";
import { artifactFileNames, isClassifierMetadata, ModelArtifactError, parseModelMetadata, type ArtifactFileName } from "../model/metadata.js";
import { computeReferenceProfile, parseTrainingCsv } from "../model/reference-profile.js";
import { sha256Hex } from "../model/onnx-model.js";

export type RegistryClient = Client<typeof ModelRegistryService>;

/** Bytes per upload chunk (the contract allows up to 1 MiB). */
const uploadChunkBytes = 512 * 1024;

/**
 * A ModelRegistry client over native gRPC that names its user in x-mlmesh-actor (the alias
 * history's "who"): $MLMESH_ACTOR, else user@host; with mesh credentials (TLS_CA_FILE,
 * MESH_TOKEN_FILE) when the registry needs them.
 */
export function registryClient(address: string, actor: string, credentials?: MeshCredentials): RegistryClient {
  const nameActor: Interceptor = (next) => (request) => {
    request.header.set("x-mlmesh-actor", actor);
    return next(request);
  };
  return createClient(ModelRegistryService, meshTransport(address, { interceptors: [nameActor], credentials }));
}

/** A model named "project/model". */
export interface ModelRef {
  readonly project: string;
  readonly name: string;
}

export function parseModelRef(text: string): ModelRef {
  const match = /^([A-Za-z0-9][A-Za-z0-9._-]*)\/([A-Za-z0-9][A-Za-z0-9._-]*)$/.exec(text);
  if (!match) throw new UsageError(`"${text}" is not project/model (for example iris/iris_svc)`);
  return { project: match[1], name: match[2] };
}

/** A mistake in how a command was called (exit code 2, with the usage), as opposed to a failure (1). */
export class UsageError extends Error {}

/** A model folder that cannot be pushed as it is (missing file, malformed metadata); exit code 1. */
export class ModelFolderError extends Error {}

/** The model's id, creating its project and the model when `create` allows it. */
export async function resolveModel(client: RegistryClient, ref: ModelRef, create: boolean): Promise<{ id: string; created: boolean }> {
  try {
    return { id: (await client.getModelByName({ projectName: ref.project, name: ref.name })).model!.id, created: false };
  } catch (err) {
    if (!create || ConnectError.from(err).code !== Code.NotFound) throw err;
  }
  let projectId: string;
  try {
    projectId = (await client.getProjectByName({ name: ref.project })).project!.id;
  } catch (err) {
    if (ConnectError.from(err).code !== Code.NotFound) throw err;
    projectId = (await client.createProject({ name: ref.project })).project!.id;
  }
  return { id: (await client.createModel({ projectId, name: ref.name })).model!.id, created: true };
}

/**
 * Uploads a model version folder (model.onnx, and metadata.json when the model has one) as the
 * model's next version, optionally pointing an alias at it, with its companions: outlier.onnx
 * when the folder has one, and the reference profile computed now from training_data.csv (or
 * a reference_profile.json already computed). The folder is checked here first (model.onnx
 * present; metadata.json, when there, well-formed, naming this model and giving model.onnx's
 * SHA-256 if it gives one; training_data.csv naming the model's features) so that mistakes
 * are named before any byte is sent; the registry checks everything again.
 */
export async function pushModelFolder(
  client: RegistryClient,
  folder: string,
  target: { modelId: string; modelName: string; alias?: string; description?: string },
): Promise<ModelVersion> {
  const files = await readArtifact(folder);
  const metadata = files.get("metadata.json");
  let description = target.description ?? "";
  try {
    const parsed = metadata === undefined ? undefined : parseModelMetadata(metadata.toString("utf8"), { name: target.modelName });
    if (parsed?.sha256 !== undefined && parsed.sha256 !== sha256Hex(files.get("model.onnx")!)) {
      throw new ModelArtifactError(`${folder}/model.onnx does not have the SHA-256 its metadata.json gives (${parsed.sha256})`);
    }
    description ||= parsed?.description ?? "";
    const trainingData = await readOptional(join(folder, trainingDataFile));
    if (trainingData !== undefined) {
      if (!isClassifierMetadata(parsed)) throw new ModelArtifactError(`${trainingDataFile} profiles a classifier's features: metadata.json declares none`);
      const { rows, labels } = parseTrainingCsv(trainingData.toString("utf8"), parsed.feature_names);
      const profile = computeReferenceProfile(parsed.feature_names, rows, labels, labels === undefined ? undefined : parsed.labels.filter((l) => labels.includes(l)));
      files.set("reference_profile.json", Buffer.from(JSON.stringify(profile)));
    }
  } catch (err) {
    if (err instanceof ModelArtifactError) throw new ModelFolderError(`${folder}: ${err.message}`);
    throw err;
  }
  const response = await client.uploadModelVersion(uploadMessages(files, { ...target, description }));
  return response.modelVersion!;
}

/** The training inputs a folder may hold, from which the reference profile is computed at push. */
const trainingDataFile = "training_data.csv";

async function readOptional(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === "ENOENT") return undefined;
    throw new ModelFolderError(`cannot read ${path}: ${e.message}`);
  }
}

/** model.onnx (required), and whichever of metadata.json, outlier.onnx and reference_profile.json the folder has. */
async function readArtifact(folder: string): Promise<Map<ArtifactFileName, Buffer>> {
  const files = new Map<ArtifactFileName, Buffer>();
  for (const name of artifactFileNames) {
    const bytes = await readOptional(join(folder, name));
    if (bytes !== undefined) files.set(name, bytes);
    else if (name === "model.onnx") throw new ModelFolderError(`${folder} has no ${name}`);
  }
  return files;
}

async function* uploadMessages(
  files: Map<ArtifactFileName, Buffer>,
  target: { modelId: string; alias?: string; description: string },
): AsyncIterable<MessageInitShape<typeof UploadModelVersionRequestSchema>> {
  yield {
    content: {
      case: "header",
      value: {
        modelId: target.modelId,
        description: target.description,
        alias: target.alias ?? "",
        files: [...files].map(([name, bytes]) => ({ name, sizeBytes: BigInt(bytes.length), sha256: sha256Hex(bytes) })),
      },
    },
  };
  for (const [name, bytes] of files) {
    for (let offset = 0; offset < bytes.length; offset += uploadChunkBytes) {
      yield { content: { case: "chunk", value: { file: name, data: bytes.subarray(offset, offset + uploadChunkBytes) } } };
    }
  }
}
