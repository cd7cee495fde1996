// Host-side fixtures and checks for the fuzz suite: files an import may reach, a local HTTP server for
// URL imports (so no generated request ever leaves this machine), and evidence that nothing outside
// the daemon's state directory changed.
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { dirname, join } from "node:path";
import { detectCellsBackend } from "../../daemon/src/cells/detect.js";

/** A 1 MiB raw disk with an MBR signature: an import of it succeeds when its sha256 is right. */
export function rawDiskImage(): Buffer {
  const disk = Buffer.alloc(1024 * 1024);
  disk[510] = 0x55;
  disk[511] = 0xaa;
  return disk;
}

export const sha256 = (data: Buffer | string) => createHash("sha256").update(data).digest("hex");

/**
 * The folder ImportImage may read from (the daemon's only import root), with a disk image, a text
 * file, links that point outside it and a FIFO (which an importer must never open: it would block).
 * Returns candidate local paths, some inside and some escaping the root.
 */
export function prepareImportRoot(dir: string): { paths: string[]; digests: string[] } {
  mkdirSync(join(dir, "sub"), { recursive: true });
  const disk = rawDiskImage();
  writeFileSync(join(dir, "disk.raw"), disk);
  writeFileSync(join(dir, "notes.txt"), "not a disk\n");
  symlinkSync("/etc/hostname", join(dir, "link-out"));
  symlinkSync("/etc", join(dir, "link-dir"));
  symlinkSync("disk.raw", join(dir, "link-in"));
  execFileSync("mkfifo", [join(dir, "fifo")]);
  const paths = [
    join(dir, "disk.raw"),
    join(dir, "notes.txt"),
    join(dir, "link-out"),
    join(dir, "link-dir", "hostname"),
    join(dir, "link-in"),
    join(dir, "fifo"),
    join(dir, "sub"),
    `${dir}/./disk.raw`,
    `${dir}//disk.raw`,
    `${dir}/sub/../disk.raw`,
    `${dir}/../state/node-id`,
    `${dir}/../../../etc/passwd`,
    `${dir}/nope`,
    dir,
    `${dir}/disk.raw\u0000.txt`,
  ];
  return { paths, digests: [sha256(disk), sha256("not a disk\n")] };
}

export interface ImportServer {
  base: string;
  /** A port nothing listens on. */
  closedPort: number;
  digests: string[];
  close(): Promise<void>;
}

/** A tiny HTTP server on 127.0.0.1 for URL imports: an image, a 404, a slow trickle, a redirect, text. */
export async function startImportServer(): Promise<ImportServer> {
  const closedPort = await new Promise<number>((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
  const disk = rawDiskImage();
  const server: Server = createServer((req, res) => {
    switch (req.url) {
      case "/image.raw":
        res.writeHead(200, { "content-length": disk.length }).end(disk);
        return;
      case "/text":
        res.writeHead(200, { "content-type": "text/plain" }).end("hello\n");
        return;
      case "/redirect":
        res.writeHead(302, { location: `http://127.0.0.1:${closedPort}/gone` }).end();
        return;
      case "/slow": {
        // A client that trickles: one byte every 50 ms for at most 2 s.
        res.writeHead(200, { "content-length": 1024 });
        let sent = 0;
        const timer = setInterval(() => {
          if (sent >= 40 || res.destroyed) {
            clearInterval(timer);
            res.destroy();
            return;
          }
          res.write("x");
          sent++;
        }, 50);
        res.on("close", () => clearInterval(timer));
        return;
      }
      default:
        res.writeHead(404).end("not found");
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    base: `http://127.0.0.1:${port}`,
    closedPort,
    digests: [sha256(disk), sha256("hello\n")],
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * Content (sha256), size, mode and owner of files nobody may change. Not mtimes, and not folders: on
 * a shared machine other people's tools touch /root, /etc and / all the time.
 */
export function fingerprint(paths: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const p of paths) {
    try {
      const st = lstatSync(p);
      out.set(p, `${st.size}:${st.mode.toString(8)}:${st.uid}:${st.gid}:${st.isFile() ? sha256(readFileSync(p)) : ""}`);
    } catch {
      out.set(p, "absent");
    }
  }
  return out;
}

/**
 * A tree of files, folders, links and a FIFO outside the state directory that generated requests
 * name on purpose (as cwd, import paths, disk and kernel paths, path tricks): it must come out of the
 * run exactly as it went in. Returns the paths to offer to the generators.
 */
export function prepareSentinel(dir: string): string[] {
  mkdirSync(join(dir, "sub", "deeper"), { recursive: true });
  writeFileSync(join(dir, "file.txt"), "sentinel: nothing may change this file\n");
  writeFileSync(join(dir, "sub", "inner.txt"), "inner\n");
  writeFileSync(join(dir, "sub", "deeper", "disk.qcow2"), Buffer.alloc(4096, 0x51));
  writeFileSync(join(dir, "run.sh"), '#!/bin/sh\ntouch "$0.ran"\n');
  chmodSync(join(dir, "run.sh"), 0o755);
  mkdirSync(join(dir, "empty"));
  chmodSync(join(dir, "empty"), 0o500);
  symlinkSync("file.txt", join(dir, "link-file"));
  symlinkSync("/etc/hostname", join(dir, "link-out"));
  symlinkSync("sub", join(dir, "link-dir"));
  symlinkSync("nowhere", join(dir, "link-dangling"));
  execFileSync("mkfifo", [join(dir, "fifo")]);
  return [
    dir,
    `${dir}/`,
    join(dir, "file.txt"),
    join(dir, "sub"),
    join(dir, "sub", "inner.txt"),
    join(dir, "sub", "deeper", "disk.qcow2"),
    join(dir, "run.sh"),
    join(dir, "empty"),
    join(dir, "empty", "new"),
    join(dir, "link-file"),
    join(dir, "link-out"),
    join(dir, "link-dir", "inner.txt"),
    join(dir, "link-dangling"),
    join(dir, "fifo"),
    join(dir, "new-file"),
    `${dir}/sub/../file.txt`,
  ];
}

/** Everything below `dir` (links not followed): type, mode, size, and the content of files and links. */
export function treeDigest(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string) => {
    const path = rel === "" ? dir : join(dir, rel);
    const st = lstatSync(path);
    const mode = st.mode.toString(8);
    if (st.isSymbolicLink()) out.set(rel, `link ${mode} -> ${readlinkSync(path)}`);
    else if (st.isFile()) out.set(rel, `file ${mode} ${st.size} ${sha256(readFileSync(path))}`);
    else if (st.isDirectory()) {
      out.set(rel, `dir ${mode}`);
      for (const name of readdirSync(path).sort()) walk(rel === "" ? name : join(rel, name));
    } else out.set(rel, `other ${mode}`);
  };
  walk("");
  return out;
}

/** The names directly inside each folder (absent folders: none). */
export function topLevel(dirs: readonly string[]): Map<string, Set<string>> {
  return new Map(
    dirs.map((d) => {
      try {
        return [d, new Set(readdirSync(d))];
      } catch {
        return [d, new Set<string>()];
      }
    }),
  );
}

/** Names that appeared in each folder between two topLevel() snapshots. */
export function appeared(before: Map<string, Set<string>>, after: Map<string, Set<string>>): Array<{ dir: string; name: string }> {
  const out: Array<{ dir: string; name: string }> = [];
  for (const [dir, names] of after) for (const name of names) if (!before.get(dir)?.has(name)) out.push({ dir, name });
  return out;
}

/**
 * The cgroup folders that hold this daemon's cgroup root (one per hierarchy), with the sub-folders
 * they hold down to `depth`, leaving out every test daemon's root (aether-test-*: this one's, where
 * its cells belong, and those of tests running at the same time). A cell whose cgroup escaped its
 * root shows up here.
 */
export function cgroupsAroundRoot(rootName: string, depth = 3): string[] {
  const { backend } = detectCellsBackend(rootName);
  if (!backend) return [];
  const parents = [...new Set(Object.values(backend.paths([])).map((p) => dirname(p)))].sort();
  const out: string[] = [];
  const walk = (dir: string, left: number) => {
    let entries: string[];
    try {
      entries = readdirSync(dir);
    } catch {
      return;
    }
    for (const name of entries.sort()) {
      if (name.startsWith("aether-test-")) continue;
      const path = join(dir, name);
      try {
        if (!lstatSync(path).isDirectory()) continue;
      } catch {
        continue;
      }
      out.push(path);
      if (left > 1) walk(path, left - 1);
    }
  };
  for (const p of parents) walk(p, depth);
  return out;
}

/** Names (relative paths) of everything below `dir`, not following links, skipping `skip` entries. */
export function listTree(dir: string, skip: ReadonlySet<string> = new Set()): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    let entries: string[];
    try {
      entries = readdirSync(join(dir, rel));
    } catch {
      return;
    }
    for (const name of entries) {
      const r = rel === "" ? name : `${rel}/${name}`;
      if (skip.has(r)) continue;
      out.push(r);
      try {
        if (lstatSync(join(dir, r)).isDirectory()) walk(r);
      } catch {
        // vanished while listing
      }
    }
  };
  walk("");
  return out.sort();
}

/** Paths whose name contains `marker`, below each root to the given depth (links are not followed). */
export function findMarked(marker: string, roots: ReadonlyArray<{ dir: string; depth: number; skip?: readonly string[] }>): string[] {
  const found: string[] = [];
  const walk = (dir: string, depth: number, skip: readonly string[]) => {
    let entries: string[];
    try {
      entries = readdirSync(dir);
    } catch {
      return;
    }
    for (const name of entries) {
      const path = join(dir, name);
      if (skip.includes(path)) continue;
      if (name.includes(marker)) found.push(path);
      if (depth <= 1) continue;
      try {
        if (lstatSync(path).isDirectory()) walk(path, depth - 1, skip);
      } catch {
        // vanished while listing
      }
    }
  };
  for (const root of roots) if (existsSync(root.dir) && statSync(root.dir).isDirectory()) walk(root.dir, root.depth, root.skip ?? []);
  return found;
}
