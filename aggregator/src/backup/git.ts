// The backup repository through the real git binary (the one users have; Debian's `git`): every call
// goes through run() (a timeout, the command's stderr in the error). A commit is written by one
// `git fast-import` (the whole tree, blobs inline), which writes its pack first and moves the branch
// last, so a kill -9 at any point leaves the branch at the previous commit or the new one, never at
// half of one. Every write is fsynced (core.fsync=all), objects and the ref alike.
import { spawn } from "node:child_process";
import { mkdir, readdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";

/** git failed or is missing; the sentence names the command and carries its stderr. */
export class GitError extends Error {}

export const BRANCH = "main";
const BRANCH_REF = `refs/heads/${BRANCH}`;
/** Where the remote's branch is remembered (updated after a push or fetch that succeeded). */
export const REMOTE_REF = "refs/remotes/backup/main";
const TIMEOUT_MS = 60_000;

export interface CommitInfo {
  commit: string;
  timeMs: number;
  summary: string;
  records: number;
}

export interface NewCommit {
  /** Path → content, the whole tree. */
  files: Map<string, string>;
  parents: string[];
  message: string;
  timeMs: number;
}

export class GitRepo {
  constructor(readonly dir: string) {}

  /** Runs git on the repository; resolves with its stdout. */
  async run(args: string[], input?: string | Buffer, options: { allowFail?: boolean } = {}): Promise<{ stdout: string; code: number }> {
    const full = ["-c", "core.fsync=all", "-c", "core.fsyncMethod=fsync", "--git-dir", this.dir, ...args];
    return new Promise((resolve, reject) => {
      const child = spawn("git", full, {
        stdio: ["pipe", "pipe", "pipe"],
        env: { ...process.env, GIT_TERMINAL_PROMPT: "0", LC_ALL: "C", GIT_CONFIG_NOSYSTEM: "1" },
      });
      const out: Buffer[] = [];
      let err = "";
      const timer = setTimeout(() => child.kill("SIGKILL"), TIMEOUT_MS);
      child.stdout.on("data", (d: Buffer) => out.push(d));
      child.stderr.on("data", (d: Buffer) => (err += d.toString()));
      child.on("error", (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(
          new GitError(
            e.code === "ENOENT"
              ? "the git binary is not installed (apt-get install git): the cluster's state cannot be backed up"
              : `git ${args[0]} could not run: ${e.message}`,
          ),
        );
      });
      child.on("close", (code, signal) => {
        clearTimeout(timer);
        const stdout = Buffer.concat(out).toString("utf8");
        if (code === 0 || (options.allowFail && code !== null)) return resolve({ stdout, code: code ?? 0 });
        const why = signal !== null ? `was killed (${signal}, after ${TIMEOUT_MS / 1000} s at most)` : `exited with ${code}`;
        reject(new GitError(`git ${args[0]} on ${this.dir} ${why}: ${err.trim().split("\n").slice(-3).join(" ") || "no message"}`));
      });
      child.stdin.on("error", () => undefined);
      child.stdin.end(input ?? "");
    });
  }

  /**
   * Creates the bare repository when it does not exist. A lock or temporary pack is waited for while
   * a git may still hold it (one started by an aggregator killed with -9 finishes or fails on its
   * own), and removed once it is older than any git run by this file may take.
   */
  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const exists = await stat(join(this.dir, "HEAD")).then(
      () => true,
      () => false,
    );
    if (!exists) await this.run(["init", "--quiet", "--bare", `--initial-branch=${BRANCH}`]);
    const packDir = join(this.dir, "objects", "pack");
    const leftovers = async () => [
      join(this.dir, `${BRANCH_REF}.lock`),
      join(this.dir, "packed-refs.lock"),
      ...(await readdir(packDir).catch(() => [] as string[])).filter((n) => n.startsWith("tmp_")).map((n) => join(packDir, n)),
    ];
    const deadline = Date.now() + TIMEOUT_MS;
    for (;;) {
      let waiting = false;
      for (const path of await leftovers()) {
        const st = await stat(path).catch(() => undefined);
        if (st === undefined) continue;
        if (Date.now() - st.mtimeMs > TIMEOUT_MS || Date.now() > deadline) await rm(path, { force: true });
        else waiting = true;
      }
      if (!waiting) return;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** The commit a ref (or a commit-ish) names, or undefined. */
  async resolve(rev: string): Promise<string | undefined> {
    const { stdout, code } = await this.run(["rev-parse", "--verify", "--quiet", `${rev}^{commit}`], undefined, { allowFail: true });
    return code === 0 ? stdout.trim() : undefined;
  }

  head(): Promise<string | undefined> {
    return this.resolve(BRANCH_REF);
  }

  /** True when a is an ancestor of b (or the same commit). */
  async isAncestor(a: string, b: string): Promise<boolean> {
    const { code } = await this.run(["merge-base", "--is-ancestor", a, b], undefined, { allowFail: true });
    return code === 0;
  }

  /** Every file of a commit's tree: path → content. */
  async readTree(commit: string): Promise<Map<string, string>> {
    const { stdout } = await this.run(["ls-tree", "-r", "-z", "--full-tree", commit]);
    const entries = stdout
      .split("\0")
      .filter((l) => l !== "")
      .map((line) => {
        const tab = line.indexOf("\t");
        const [, type, sha] = line.slice(0, tab).split(" ");
        return { type, sha: sha as string, path: line.slice(tab + 1) };
      })
      .filter((e) => e.type === "blob");
    const files = new Map<string, string>();
    if (entries.length === 0) return files;
    const batch = await this.runBinary(["cat-file", "--batch"], entries.map((e) => e.sha).join("\n") + "\n");
    let at = 0;
    for (const e of entries) {
      const nl = batch.indexOf(0x0a, at);
      const header = batch.subarray(at, nl).toString("utf8").split(" ");
      const size = Number(header[2]);
      files.set(e.path, batch.subarray(nl + 1, nl + 1 + size).toString("utf8"));
      at = nl + 1 + size + 1;
    }
    return files;
  }

  private async runBinary(args: string[], input: string): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const child = spawn("git", ["--git-dir", this.dir, ...args], { stdio: ["pipe", "pipe", "pipe"] });
      const out: Buffer[] = [];
      let err = "";
      child.stdout.on("data", (d: Buffer) => out.push(d));
      child.stderr.on("data", (d: Buffer) => (err += d.toString()));
      child.on("error", (e) => reject(new GitError(`git ${args[0]} could not run: ${e.message}`)));
      child.on("close", (code) =>
        code === 0 ? resolve(Buffer.concat(out)) : reject(new GitError(`git ${args[0]} on ${this.dir} exited with ${code}: ${err.trim()}`)),
      );
      child.stdin.end(input);
    });
  }

  /** Writes a commit of the whole tree on the branch (one fast-import); returns its hash. */
  async commit(c: NewCommit): Promise<string> {
    const parts: Buffer[] = [];
    const text = (s: string) => parts.push(Buffer.from(s, "utf8"));
    const seconds = Math.floor(c.timeMs / 1000);
    const message = Buffer.from(c.message, "utf8");
    text(`commit ${BRANCH_REF}\nmark :1\n`);
    text(`committer aether-aggregator <aether-aggregator@localhost> ${seconds} +0000\n`);
    text(`data ${message.length}\n`);
    parts.push(message);
    text("\n");
    const [first, ...more] = c.parents;
    if (first !== undefined) text(`from ${first}\n`);
    for (const p of more) text(`merge ${p}\n`);
    text("deleteall\n");
    for (const path of [...c.files.keys()].sort()) {
      const content = Buffer.from(c.files.get(path) as string, "utf8");
      text(`M 100644 inline ${quotePath(path)}\ndata ${content.length}\n`);
      parts.push(content);
      text("\n");
    }
    text("\nget-mark :1\ndone\n");
    const { stdout } = await this.run(["fast-import", "--quiet", "--done"], Buffer.concat(parts));
    const sha = stdout.trim().split("\n").pop() ?? "";
    if (!/^[0-9a-f]{40}$/.test(sha))
      throw new GitError(`git fast-import on ${this.dir} did not say which commit it wrote (${sha.slice(0, 80)})`);
    return sha;
  }

  /** Commits from `from` back, newest first (first-parent history). */
  async log(from: string, count: number): Promise<CommitInfo[]> {
    const { stdout } = await this.run(["log", "--first-parent", `-n${count}`, "--format=%H%x1f%ct%x1f%s%x1f%b%x1e", from, "--"]);
    return stdout
      .split("\x1e")
      .map((r) => r.trim())
      .filter((r) => r !== "")
      .map((r) => {
        const [commit = "", ct = "0", summary = "", body = ""] = r.split("\x1f");
        const records = /^Records: (\d+)$/m.exec(body)?.[1];
        return { commit, timeMs: Number(ct) * 1000, summary, records: records === undefined ? 0 : Number(records) };
      });
  }

  /** Commits of the branch the remote does not hold yet. */
  async unpushed(): Promise<Set<string>> {
    const remote = await this.resolve(REMOTE_REF);
    const { stdout } = await this.run(["rev-list", BRANCH_REF, ...(remote ? [`^${remote}`] : [])]);
    return new Set(stdout.split("\n").filter((s) => s !== ""));
  }

  async setBranch(commit: string): Promise<void> {
    await this.run(["update-ref", BRANCH_REF, commit]);
  }

  /** Fetches the remote's branch into REMOTE_REF; resolves with its commit (undefined: the remote has none). */
  async fetch(remote: string): Promise<string | undefined> {
    const { stdout } = await this.run(["ls-remote", "--", remote, BRANCH_REF]);
    if (stdout.trim() === "") return undefined;
    await this.run(["fetch", "--quiet", "--no-tags", "--", remote, `+${BRANCH_REF}:${REMOTE_REF}`]);
    return this.resolve(REMOTE_REF);
  }

  /** Pushes the branch (fast-forward only) and remembers what the remote holds. */
  async push(remote: string, commit: string): Promise<void> {
    await this.run(["push", "--quiet", "--", remote, `${commit}:${BRANCH_REF}`]);
    await this.run(["update-ref", REMOTE_REF, commit]);
  }
}

/** A path for fast-import: quoted C-style when it has characters that need it. */
function quotePath(path: string): string {
  if (!/["\\\n\s]/.test(path)) return path;
  return `"${path.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`;
}
