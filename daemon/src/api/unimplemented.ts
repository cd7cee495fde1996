// A service in the contract that this aetherd does not serve (the aggregator's) answers every method with
// UNIMPLEMENTED and a sentence that says so and what brings it; it never fakes a success.
import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";

export function unimplementedService<S extends DescService>(service: S, why: string): Partial<ServiceImpl<S>> {
  const impl: Record<string, unknown> = {};
  for (const method of service.methods) {
    const error = () => new ConnectError(`${service.typeName}/${method.name} is not served by this aetherd: ${why}`, Code.Unimplemented);
    impl[method.localName] =
      method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming"
        ? // eslint-disable-next-line require-yield
          async function* () {
            throw error();
          }
        : async () => {
            throw error();
          };
  }
  // Each entry above has the shape its method kind requires; TypeScript cannot follow that mapping.
  return impl as Partial<ServiceImpl<S>>;
}
