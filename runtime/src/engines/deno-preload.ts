// Loaded with --preload before a script under the Deno engine: reports a failure the way
// aetherscript does (see report-error.ts).
import { describeFailure } from "../report-error.js";

interface DenoGlobal {
  exit(code: number): never;
}
interface FailureEvent extends Event {
  error?: unknown;
  reason?: unknown;
}
const deno = (globalThis as unknown as { Deno: DenoGlobal }).Deno;

const fail = (event: Event, err: unknown) => {
  event.preventDefault();
  console.error(describeFailure(err));
  deno.exit(1);
};
// Deno's global scope is an EventTarget that dispatches uncaught errors and unhandled rejections.
const scope = globalThis as unknown as EventTarget;
scope.addEventListener("error", (event) => fail(event, (event as FailureEvent).error));
scope.addEventListener("unhandledrejection", (event) => fail(event, (event as FailureEvent).reason));
