// Host user and group ids for tenants. A tenant's processes never run as a host account or as
// another tenant: each tenant gets a block of ids_per_tenant ids of its own, starting at id_base
// ([tenancy] in the config), and the uid/gid a tenant names is an offset in that block. Distinct
// ids are what make the kernel keep tenants apart: another uid cannot read a process's
// /proc/PID/environ, signal it, or open files only its owner may.
//
// Blocks are allocated on first use and remembered in <state_dir>/tenants.json (durably, before any
// process runs with them), so a tenant keeps its ids across restarts and files it wrote stay its
// own. A block that holds an id of a host account or group (/etc/passwd, /etc/group) is skipped.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { DomainError, writeFileAtomic } from "@aether/server";

/** The largest valid id: (uid_t)-1 means "unchanged" to setuid and chown. */
const MAX_ID = 4_294_967_294;

const BlocksSchema = z.record(z.string(), z.number().int().nonnegative());

export interface HostIds {
  uid: number;
  gid: number;
}

export class TenantIds {
  private blocks: Record<string, number> = {};
  /** Allocations are serialized: two tenants' first starts at once must not take one block. */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly file: string;

  constructor(
    stateDir: string,
    private readonly base: number,
    private readonly size: number,
  ) {
    this.file = join(stateDir, "tenants.json");
  }

  load(): void {
    let text: string;
    try {
      text = readFileSync(this.file, "utf8");
    } catch {
      return; // no tenant has run anything yet
    }
    this.blocks = BlocksSchema.parse(JSON.parse(text));
  }

  /** The first host id of a tenant's block, if it has one. */
  blockStart(tenant: string): number | undefined {
    const index = this.blocks[tenant];
    return index === undefined ? undefined : this.base + index * this.size;
  }

  /**
   * The host uid/gid for a tenant's requested offsets (unset: 0), allocating its block on first
   * use. Throws INVALID_ARGUMENT for an offset outside the block, RESOURCE_EXHAUSTED when no block
   * is left.
   */
  async hostIds(tenant: string, uid: number | undefined, gid: number | undefined): Promise<HostIds> {
    for (const [field, value] of [
      ["uid", uid],
      ["gid", gid],
    ] as const) {
      if (value !== undefined && value >= this.size) {
        throw new DomainError(
          "invalid_argument",
          `${field} ${value} is outside tenant ${tenant}'s id block: a tenant names ids from 0 to ${this.size - 1}, which aetherd maps to host ids of the tenant's own.`,
        );
      }
    }
    const start = this.blockStart(tenant) ?? (await this.allocate(tenant));
    return { uid: start + (uid ?? 0), gid: start + (gid ?? 0) };
  }

  private allocate(tenant: string): Promise<number> {
    const run = this.queue.then(async () => {
      const known = this.blockStart(tenant);
      if (known !== undefined) return known;
      const taken = new Set(Object.values(this.blocks));
      const hostIds = hostAccountIds();
      for (let index = 0; this.base + (index + 1) * this.size - 1 <= MAX_ID; index++) {
        if (taken.has(index)) continue;
        const start = this.base + index * this.size;
        if (hostIds.some((id) => id >= start && id < start + this.size)) continue;
        const next = { ...this.blocks, [tenant]: index };
        await writeFileAtomic(this.file, `${JSON.stringify(next, null, 2)}\n`);
        this.blocks = next;
        return start;
      }
      throw new DomainError(
        "resource_exhausted",
        `no id block is left for tenant ${tenant}: ${Object.keys(this.blocks).length} tenants hold blocks of ${this.size} ids from ${this.base}; lower [tenancy] ids_per_tenant or id_base.`,
      );
    });
    this.queue = run.catch(() => undefined);
    return run;
  }
}

/** Numeric ids of the host's accounts and groups. */
function hostAccountIds(): number[] {
  const ids: number[] = [];
  for (const file of ["/etc/passwd", "/etc/group"]) {
    let text = "";
    try {
      text = readFileSync(file, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n")) {
      const id = Number(line.split(":")[2]);
      if (line !== "" && Number.isInteger(id)) ids.push(id);
    }
  }
  return ids;
}
