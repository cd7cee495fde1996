// A VM's serial console in xterm.js. Browsers cannot stream a request body over HTTP/1.1, so
// `aether ui` holds the bidirectional AttachConsole stream: the output arrives as one streamed
// response of /console/attach, keystrokes go as small POSTs to /console/input.
import { Terminal } from "@xterm/xterm";

/** Attaches `term` to a VM's console until `signal` aborts; resolves when the console ends. */
export async function attachConsole(
  term: Terminal,
  where: { vm: string; tenant: string; node: string | undefined },
  signal: AbortSignal,
): Promise<void> {
  const { vm, tenant, node } = where;
  const at = node === undefined ? "" : `&node=${encodeURIComponent(node)}`;
  const r = await fetch(`/console/attach?vm=${encodeURIComponent(vm)}&tenant=${encodeURIComponent(tenant)}&tail=4096${at}`, {
    method: "POST",
    signal,
  });
  if (!r.ok || r.body === null) throw new Error((await r.text()).replace(/^aether ui: /, ""));
  const session = r.headers.get("x-console-session") ?? "";
  // Keystrokes in order: each POST waits for the one before.
  let sending = Promise.resolve();
  const typed = term.onData((data) => {
    sending = sending.then(() =>
      fetch(`/console/input?session=${session}`, { method: "POST", body: new TextEncoder().encode(data), signal }).then(
        () => undefined,
        () => undefined,
      ),
    );
  });
  try {
    const reader = r.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      term.write(value);
    }
  } finally {
    typed.dispose();
  }
}
