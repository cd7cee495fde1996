// Files in a running guest, read and written through its guest agent (guest-file-open, -seek,
// -read, -write, -close), a piece at a time: each call opens the file, does its part and closes it,
// so nothing stays open in the guest between calls and a client may stop at any point.
import { DomainError } from "@aether/server";
import type { GuestAgent } from "./qga.js";

/** How long one agent call may take: a TCG guest on a loaded host answers slowly. */
const CALL_MS = 30_000;
export const MAX_CHUNK_BYTES = 2 * 1024 * 1024;

function agentError(err: unknown, what: string, path: string, vmName: string): DomainError {
  const message = (err as Error).message.replace(/^guest agent guest-file-\w+ failed: /, "");
  return new DomainError("failed_precondition", `${what} ${path} in VM ${vmName} failed: ${message}`);
}

async function withFile<T>(
  agent: GuestAgent,
  path: string,
  mode: string,
  vmName: string,
  work: (handle: number) => Promise<T>,
): Promise<T> {
  let handle: number;
  try {
    handle = await agent.command<number>("guest-file-open", { path, mode }, CALL_MS);
  } catch (err) {
    throw agentError(err, "opening", path, vmName);
  }
  try {
    return await work(handle);
  } finally {
    await agent.command("guest-file-close", { handle }, CALL_MS).catch(() => undefined);
  }
}

/** Up to maxBytes of the file from offset; eof once its end was reached. */
export async function readGuestFile(
  agent: GuestAgent,
  vmName: string,
  path: string,
  offset: number,
  maxBytes: number,
): Promise<{ data: Buffer; eof: boolean }> {
  return withFile(agent, path, "r", vmName, async (handle) => {
    try {
      if (offset > 0) await agent.command("guest-file-seek", { handle, offset, whence: "set" }, CALL_MS);
      const chunks: Buffer[] = [];
      let size = 0;
      let eof = false;
      // The agent may return less than asked for before the end (a pipe, a slow device): read on.
      while (size < maxBytes && !eof) {
        const r = await agent.command<{ count: number; "buf-b64": string; eof: boolean }>(
          "guest-file-read",
          { handle, count: maxBytes - size },
          CALL_MS,
        );
        const data = Buffer.from(r["buf-b64"], "base64");
        chunks.push(data);
        size += data.length;
        eof = r.eof || data.length === 0;
      }
      return { data: Buffer.concat(chunks), eof };
    } catch (err) {
      throw agentError(err, "reading", path, vmName);
    }
  });
}

/** Writes data to the file: appended, or the file created (or cut to nothing) first. */
export async function writeGuestFile(agent: GuestAgent, vmName: string, path: string, data: Uint8Array, append: boolean): Promise<number> {
  return withFile(agent, path, append ? "a" : "w", vmName, async (handle) => {
    try {
      let written = 0;
      while (written < data.length) {
        const r = await agent.command<{ count: number }>(
          "guest-file-write",
          { handle, "buf-b64": Buffer.from(data.subarray(written)).toString("base64") },
          CALL_MS,
        );
        if (r.count <= 0) throw new Error("the agent wrote nothing");
        written += r.count;
      }
      await agent.command("guest-file-flush", { handle }, CALL_MS);
      return written;
    } catch (err) {
      throw agentError(err, "writing", path, vmName);
    }
  });
}
