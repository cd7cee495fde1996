// The auction bench's fake nodes in a process of their own, each a BidService on its own loopback
// port (plain HTTP/2) answering in the Connect protocol: lean ones (lean-bidder.ts, the default) or,
// with BENCH_BIDDERS=connect, the test helper's Connect servers (test/helpers/fake-bidder.ts). Apart
// from the deploying client, because a real cluster's nodes do not share a JavaScript thread with
// the client, and so that the CPU time of the bidders is measured on its own (/proc/<pid>/stat)
// instead of mixed with the client's.
//
// Run as a child of the bench (fork): it answers { start: [...] } with the addresses, and { close }
// by closing every bidder; it exits when the bench goes away.
import { fork, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { startFakeBidder } from "../test/helpers/fake-bidder.js";
import { startLeanBidder, type LeanBehaviour } from "./lean-bidder.js";

/** Which fake nodes: lean Connect responders (default) or the test helper's Connect servers. */
export const BIDDER_KIND: "lean" | "connect" = process.env.BENCH_BIDDERS === "connect" ? "connect" : "lean";

type Request = { start: Array<{ nodeId: string; behaviour: LeanBehaviour }> } | { close: true };
type Reply = { addresses: string[] } | { closed: true } | { error: string };

/** CPU time (user + system) of a process so far, in ms, from /proc/<pid>/stat (clock ticks of 10 ms). */
export function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** The bench's handle on the bidders' process. */
export class BidderProcess {
  private readonly child: ChildProcess;
  private readonly ready: Promise<void>;

  private constructor() {
    this.child = fork(fileURLToPath(import.meta.url), ["--serve-bidders"], {
      execArgv: [
        "--conditions=source",
        "--import",
        "tsx",
        ...(process.env.BENCH_PROFILE_DIR ? ["--cpu-prof", "--cpu-prof-dir", process.env.BENCH_PROFILE_DIR] : []),
      ],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    this.ready = new Promise((resolve, reject) => {
      this.child.once("message", () => resolve());
      this.child.once("exit", (code) => reject(new Error(`the bidders' process exited with ${code} before it was ready`)));
    });
  }

  static async start(): Promise<BidderProcess> {
    const p = new BidderProcess();
    await p.ready;
    return p;
  }

  get pid(): number {
    return this.child.pid ?? 0;
  }

  private ask(request: Request): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`the bidders' process exited with ${code}`));
      this.child.once("exit", onExit);
      this.child.once("message", (reply: Reply) => {
        this.child.off("exit", onExit);
        if ("error" in reply) reject(new Error(reply.error));
        else resolve(reply);
      });
      this.child.send(request);
    });
  }

  /** Starts these fake nodes; resolves with their addresses (http://127.0.0.1:<port>), in order. */
  async startBidders(nodes: Array<{ nodeId: string; behaviour: LeanBehaviour }>): Promise<string[]> {
    const reply = await this.ask({ start: nodes });
    if (!("addresses" in reply)) throw new Error("the bidders' process did not answer with addresses");
    return reply.addresses;
  }

  /** Closes every fake node started so far. */
  async closeBidders(): Promise<void> {
    await this.ask({ close: true });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    // Leaving the channel lets it exit on its own (and write its CPU profile when asked to); a kill if it does not.
    this.child.disconnect();
    const kill = setTimeout(() => this.child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(kill);
  }
}

/** The child's side. */
async function serve(): Promise<void> {
  const bidders: Array<{ address: string; close(): Promise<void> }> = [];
  process.on("disconnect", () => process.exit(0));
  process.on("message", (request: Request) => {
    const answer = async (): Promise<Reply> => {
      if ("close" in request) {
        for (const b of bidders.splice(0)) await b.close();
        return { closed: true };
      }
      const started: string[] = [];
      for (const n of request.start) {
        const b = BIDDER_KIND === "lean" ? await startLeanBidder(n.nodeId, n.behaviour) : await startFakeBidder(n.nodeId, n.behaviour);
        bidders.push(b);
        started.push(b.address);
      }
      return { addresses: started };
    };
    answer().then(
      (reply) => process.send?.(reply),
      (err: unknown) => process.send?.({ error: (err as Error).message }),
    );
  });
  process.send?.({ ready: true });
}

if (process.argv.includes("--serve-bidders")) await serve();
