// Interactive console: what the guest prints comes from the console log (so any number of readers
// can follow it), what the client types goes to QEMU's console socket.
import { connect, type Socket } from "node:net";
import { statSync } from "node:fs";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AttachConsoleRequest, AttachConsoleResponseSchema } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import { failedPrecondition, invalidArgument } from "@aether/server";
import { merge, tailFile } from "../observe/log-tail.js";
import type { VmManager } from "./manager.js";
import type { VmRecord } from "./record.js";

type Out = MessageInitShape<typeof AttachConsoleResponseSchema>;

export async function* attachConsole(
  manager: VmManager,
  requests: AsyncIterable<AttachConsoleRequest>,
  signal: AbortSignal,
  resolve: (ref: string, tenant: string) => VmRecord,
): AsyncGenerator<Out> {
  const iterator = requests[Symbol.asyncIterator]();
  const first = await iterator.next();
  if (first.done) return;
  if (first.value.vm === "") throw invalidArgument("the first AttachConsole message must name the VM.");
  const vm = resolve(first.value.vm, first.value.tenant);
  if (vm.runtime.state !== "running" && vm.runtime.state !== "starting" && vm.runtime.state !== "paused") {
    throw failedPrecondition(`VM ${vm.spec.name} is ${vm.runtime.state}; its console is not live.`);
  }
  const files = manager.filesOf(vm);
  const socket = await new Promise<Socket>((ok, fail) => {
    const s = connect(files.console);
    s.once("connect", () => ok(s));
    s.once("error", (err) => fail(failedPrecondition(`cannot reach the console of VM ${vm.spec.name}: ${err.message}`)));
  });
  socket.on("data", () => {}); // output is read from the log; drain the socket so QEMU never blocks
  socket.on("error", () => {});
  if (first.value.input.length > 0) socket.write(first.value.input);
  let size = 0;
  try {
    size = statSync(files.consoleLog).size;
  } catch {
    // no output yet
  }
  const stop = new AbortController();
  signal.addEventListener("abort", () => stop.abort(), { once: true });
  const pump = (async () => {
    try {
      for (let r = await iterator.next(); !r.done; r = await iterator.next()) if (r.value.input.length > 0) socket.write(r.value.input);
    } catch {
      // the client went away
    }
    stop.abort();
  })();
  const ended = Promise.race([
    manager.ended(vm),
    new Promise<void>((r) => stop.signal.addEventListener("abort", () => r(), { once: true })),
  ]);
  try {
    for await (const chunk of merge([
      tailFile(files.consoleLog, { offset: Math.max(0, size - Number(first.value.tailBytes)), follow: true, ended, signal: stop.signal }),
    ])) {
      yield { output: chunk.data, offset: BigInt(chunk.offset) } satisfies Out;
    }
  } finally {
    socket.destroy();
    stop.abort();
    await pump.catch(() => undefined);
  }
}
