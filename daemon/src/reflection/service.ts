// gRPC server reflection (grpc.reflection.v1), so `buf curl --list-methods` and grpcurl can discover
// aetherd's services from the descriptors compiled into the SDK.
import { create, toBinary, type DescFile, type DescService } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { clip } from "@aether/server";
import {
  ServerReflection,
  type ServerReflectionRequest,
  type ServerReflectionResponse,
  ServerReflectionResponseSchema,
} from "@aether/sdk/gen/grpc/reflection/v1/reflection_pb";

export function reflectionService(services: DescService[]): ServiceImpl<typeof ServerReflection> {
  const files = new Map<string, DescFile>();
  const addFile = (file: DescFile) => {
    if (files.has(file.proto.name)) return;
    files.set(file.proto.name, file);
    file.dependencies.forEach(addFile);
  };
  const all = [...services, ServerReflection];
  all.forEach((s) => addFile(s.file));

  // Symbols (services, methods, messages, enums) to the file that declares them.
  const symbols = new Map<string, DescFile>();
  for (const file of files.values()) {
    for (const s of file.services) {
      symbols.set(s.typeName, file);
      s.methods.forEach((m) => symbols.set(`${s.typeName}.${m.name}`, file));
    }
    const addMessages = (messages: DescFile["messages"]) => {
      for (const m of messages) {
        symbols.set(m.typeName, file);
        m.nestedEnums.forEach((e) => symbols.set(e.typeName, file));
        addMessages(m.nestedMessages);
      }
    };
    addMessages(file.messages);
    file.enums.forEach((e) => symbols.set(e.typeName, file));
  }

  /** The file and everything it depends on, dependencies included, as serialized descriptors. */
  const withDependencies = (file: DescFile): Uint8Array[] => {
    const seen = new Set<string>();
    const out: Uint8Array[] = [];
    const visit = (f: DescFile) => {
      if (seen.has(f.proto.name)) return;
      seen.add(f.proto.name);
      out.push(toBinary(FileDescriptorProtoSchema, f.proto));
      f.dependencies.forEach(visit);
    };
    visit(file);
    return out;
  };

  const answer = (req: ServerReflectionRequest): ServerReflectionResponse => {
    const base = { validHost: req.host, originalRequest: req };
    const notFound = (what: string) =>
      create(ServerReflectionResponseSchema, {
        ...base,
        // Clipped: the request is echoed in original_request already, and a name near the message
        // limit would otherwise make the answer too large to send.
        messageResponse: {
          case: "errorResponse",
          value: { errorCode: 5, errorMessage: `${clip(what, 300)} is not known to this server.` },
        },
      });
    const describe = (file: DescFile | undefined, what: string) =>
      file
        ? create(ServerReflectionResponseSchema, {
            ...base,
            messageResponse: { case: "fileDescriptorResponse", value: { fileDescriptorProto: withDependencies(file) } },
          })
        : notFound(what);
    switch (req.messageRequest.case) {
      case "listServices":
        return create(ServerReflectionResponseSchema, {
          ...base,
          messageResponse: { case: "listServicesResponse", value: { service: all.map((s) => ({ name: s.typeName })) } },
        });
      case "fileByFilename":
        return describe(files.get(req.messageRequest.value), `file ${req.messageRequest.value}`);
      case "fileContainingSymbol":
        return describe(symbols.get(req.messageRequest.value), `symbol ${req.messageRequest.value}`);
      case "allExtensionNumbersOfType":
        return create(ServerReflectionResponseSchema, {
          ...base,
          messageResponse: {
            case: "allExtensionNumbersResponse",
            value: { baseTypeName: req.messageRequest.value, extensionNumber: [] },
          },
        });
      default:
        return create(ServerReflectionResponseSchema, {
          ...base,
          messageResponse: { case: "errorResponse", value: { errorCode: 12, errorMessage: "this reflection request is not supported." } },
        });
    }
  };

  return {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) yield answer(req);
    },
  };
}
