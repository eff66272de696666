import { createRegistry, toBinary, type DescFile, type Registry } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import * as v1 from "../../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { serve, type ServiceRegistration } from "./registration.js";

/** The request fields both reflection versions share (v1alpha is v1 under another package). */
type ReflectionRequest = v1.ServerReflectionRequest | v1alpha.ServerReflectionRequest;

/**
 * grpc.reflection.v1 and v1alpha over the descriptors compiled into gen/, so grpcurl, ghz and
 * `buf curl` can call every service without .proto files. Files are sent with all their
 * transitive imports, so one answer is enough to build a client.
 */
export function reflectionRegistrations(serviceNames: readonly string[], files: readonly DescFile[]): ServiceRegistration[] {
  const registry = new FileIndex(files);
  const answer = (request: ReflectionRequest) => ({
    validHost: request.host,
    originalRequest: request,
    messageResponse: respond(registry, serviceNames, request),
  });
  return [
    serve(v1.ServerReflection, {
      async *serverReflectionInfo(requests) {
        for await (const request of requests) yield answer(request) as never;
      },
    }),
    // v1alpha's messages have v1's shape; older clients (grpcurl before 1.9) still ask it.
    serve(v1alpha.ServerReflection, {
      async *serverReflectionInfo(requests) {
        for await (const request of requests) yield answer(request) as never;
      },
    }),
  ];
}

function respond(registry: FileIndex, serviceNames: readonly string[], request: ReflectionRequest) {
  const { case: kind, value } = request.messageRequest;
  try {
    switch (kind) {
      case "listServices":
        return { case: "listServicesResponse", value: { service: serviceNames.map((name) => ({ name })) } } as const;
      case "fileByFilename":
        return filesResponse(registry.getFile(value), `file "${value}"`);
      case "fileContainingSymbol":
        return filesResponse(fileOfSymbol(registry, value), `symbol "${value}"`);
      case "fileContainingExtension": {
        const extension = registry.getExtensionFor(messageOf(registry, value.containingType), value.extensionNumber);
        return filesResponse(extension?.file, `extension ${value.extensionNumber} of "${value.containingType}"`);
      }
      case "allExtensionNumbersOfType": {
        const extendee = messageOf(registry, value);
        const numbers = [...registry].flatMap((desc) =>
          desc.kind === "extension" && desc.extendee.typeName === extendee.typeName ? [desc.number] : [],
        );
        return { case: "allExtensionNumbersResponse", value: { baseTypeName: value, extensionNumber: numbers } } as const;
      }
      default:
        throw new ConnectError("empty reflection request", Code.InvalidArgument);
    }
  } catch (err) {
    const error = ConnectError.from(err);
    return { case: "errorResponse", value: { errorCode: error.code, errorMessage: error.rawMessage } } as const;
  }
}

/** The served files and all their imports, by file name and by symbol. */
class FileIndex {
  readonly files = new Map<string, DescFile>();
  private readonly symbols: Registry;

  constructor(roots: readonly DescFile[]) {
    const visit = (file: DescFile) => {
      if (this.files.has(file.name)) return;
      this.files.set(file.name, file);
      file.dependencies.forEach(visit);
    };
    roots.forEach(visit);
    this.symbols = createRegistry(...this.files.values());
  }

  getFile(name: string) {
    return this.files.get(name) ?? this.files.get(name.replace(/\.proto$/, ""));
  }
  get(typeName: string) {
    return this.symbols.get(typeName);
  }
  getMessage(typeName: string) {
    return this.symbols.getMessage(typeName);
  }
  getExtensionFor(...args: Parameters<Registry["getExtensionFor"]>) {
    return this.symbols.getExtensionFor(...args);
  }
  [Symbol.iterator]() {
    return this.symbols[Symbol.iterator]();
  }
}

function messageOf(registry: FileIndex, typeName: string) {
  const message = registry.getMessage(typeName);
  if (!message) throw new ConnectError(`unknown message type "${typeName}"`, Code.NotFound);
  return message;
}

/** Finds the file declaring a message, enum, service, method, field or extension. */
function fileOfSymbol(registry: FileIndex, symbol: string): DescFile | undefined {
  const desc = registry.get(symbol);
  if (desc) return desc.file;
  const dot = symbol.lastIndexOf(".");
  const parent = dot > 0 ? registry.get(symbol.slice(0, dot)) : undefined;
  return parent?.file;
}

function filesResponse(file: DescFile | undefined, what: string) {
  if (!file) throw new ConnectError(`${what} not found`, Code.NotFound);
  const seen = new Set<DescFile>();
  const visit = (f: DescFile) => {
    if (seen.has(f)) return;
    seen.add(f);
    f.dependencies.forEach(visit);
  };
  visit(file);
  const fileDescriptorProto = [...seen].map((f) => toBinary(FileDescriptorProtoSchema, f.proto));
  return { case: "fileDescriptorResponse", value: { fileDescriptorProto } } as const;
}
