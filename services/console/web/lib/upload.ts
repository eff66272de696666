import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import {
  ModelRegistryService,
  UploadModelVersionRequestSchema,
  UploadModelVersionResponseSchema,
  type ModelVersion,
} from "../../../../gen/mlmesh/registry/v1/registry_pb.js";
import { ShownErrorThrown } from "./errors";
import { authorization } from "./settings";

/** The chunk size of the upload's FileChunk messages (the contract allows 1 MiB). */
const chunkBytes = 1024 * 1024;

export interface VersionFiles {
  readonly model: File;
  /** Absent for a plain tensor model. */
  readonly metadata: File | undefined;
}

/**
 * Pushes a model version from the browser through the registry's own UploadModelVersion RPC.
 * A browser cannot stream a request body as a call goes (fetch has no request streams over
 * HTTP/1.1, and connect-web refuses client streaming), but the Connect protocol carries a
 * client stream as one request body of enveloped messages: the header, then 1 MiB chunks of
 * each file. So the page builds that body (the files' SHA-256 computed here, as the CLI does),
 * posts it once, and the registry checks and stores it exactly as it does the CLI's stream —
 * same validation, same roles, same limits; a refused upload leaves no version behind. The
 * body is the size of the files: large artifacts belong to `mlmesh models push`.
 */
export async function uploadVersion(
  registryUrl: string,
  token: string,
  header: { modelId: string; description: string; experimentId: string; alias: string },
  files: VersionFiles,
  progress: (text: string) => void,
): Promise<ModelVersion> {
  const named = [
    { name: "model.onnx", file: files.model },
    ...(files.metadata === undefined ? [] : [{ name: "metadata.json", file: files.metadata }]),
  ];
  const contents: Uint8Array[] = [];
  for (const { name, file } of named) {
    progress(`reading ${name} (${file.size} bytes)`);
    contents.push(new Uint8Array(await file.arrayBuffer()));
  }
  progress("computing SHA-256");
  const messages = [
    create(UploadModelVersionRequestSchema, {
      content: {
        case: "header",
        value: { ...header, files: named.map(({ name }, i) => ({ name, sizeBytes: BigInt(contents[i].length), sha256: bytesToHex(sha256(contents[i])) })) },
      },
    }),
  ];
  named.forEach(({ name }, i) => {
    for (let offset = 0; offset < contents[i].length; offset += chunkBytes) {
      messages.push(create(UploadModelVersionRequestSchema, { content: { case: "chunk", value: { file: name, data: contents[i].subarray(offset, offset + chunkBytes) } } }));
    }
  });
  const body = new Blob(messages.map((m) => envelope(0, toBinary(UploadModelVersionRequestSchema, m))) as BlobPart[]);
  progress(`uploading ${body.size} bytes`);
  let response: Response;
  try {
    response = await fetch(`${registryUrl}/${ModelRegistryService.typeName}/UploadModelVersion`, {
      method: "POST",
      headers: { "content-type": "application/connect+proto", "connect-protocol-version": "1", "x-mlmesh-actor": "console", ...authorization(token) },
      body,
    });
  } catch {
    throw new ShownErrorThrown({ code: "UNREACHABLE", message: `the registry at ${registryUrl} did not answer this page` });
  }
  const answer = new Uint8Array(await response.arrayBuffer());
  let version: ModelVersion | undefined;
  for (const { flags, data } of envelopes(answer)) {
    if ((flags & 0b10) !== 0) {
      // The end of the stream: JSON, with the error when the call failed.
      const end = JSON.parse(new TextDecoder().decode(data)) as { error?: { code: string; message?: string } };
      if (end.error) throw new ShownErrorThrown({ code: end.error.code.toUpperCase(), message: end.error.message ?? "" });
    } else {
      version = fromBinary(UploadModelVersionResponseSchema, data).modelVersion;
    }
  }
  if (!response.ok || version === undefined) {
    throw new ShownErrorThrown({ code: "UNKNOWN", message: `the registry answered HTTP ${response.status} without a version` });
  }
  return version;
}

/** One message of a Connect stream: flags, a 4-byte big-endian length, the bytes. */
function envelope(flags: number, data: Uint8Array): Uint8Array {
  const framed = new Uint8Array(5 + data.length);
  framed[0] = flags;
  new DataView(framed.buffer).setUint32(1, data.length);
  framed.set(data, 5);
  return framed;
}

function* envelopes(bytes: Uint8Array): Generator<{ flags: number; data: Uint8Array }> {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let offset = 0; offset + 5 <= bytes.length; ) {
    const length = view.getUint32(offset + 1);
    yield { flags: bytes[offset], data: bytes.subarray(offset + 5, offset + 5 + length) };
    offset += 5 + length;
  }
}
