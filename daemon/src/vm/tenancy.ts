// What a caller limited to one tenant may name in a VM ([tenancy] in the config): a kernel or initrd
// only below a folder an operator published (kernel_roots), and bridges only of its tenant's networks.
// QEMU runs as root and would load any host file into the tenant's guest, and join any bridge.
import { realpathSync } from "node:fs";
import { resolve, sep } from "node:path";
import type { TenancyConfig } from "../config.js";
import { clip, permissionDenied } from "@aether/server";

function realOrUndefined(path: string): string | undefined {
  try {
    return realpathSync(path);
  } catch {
    return undefined;
  }
}

function below(path: string, root: string): boolean {
  return path === root || path.startsWith(root.endsWith(sep) ? root : root + sep);
}

/**
 * The kernel or initrd path a tenant's VM may boot, links resolved (QEMU is given that path, so a
 * link changed later points it nowhere new). Every refusal is the same sentence, whether the file is
 * outside the roots, missing, or unreadable: a tenant learns nothing about which host files exist.
 */
export function tenantKernelPath(field: string, path: string, tenancy: TenancyConfig, tenant: string): string {
  const refuse = () =>
    permissionDenied(
      `${field} ${JSON.stringify(clip(path))} is not a kernel published to tenants: tenant ${tenant} may boot kernels and initrds that exist below ${
        tenancy.kernel_roots.length > 0 ? tenancy.kernel_roots.join(", ") : "(none here)"
      } ([tenancy] kernel_roots, links resolved), or boot an image or volume of its own.`,
    );
  const roots = tenancy.kernel_roots.map(realOrUndefined).filter((r): r is string => r !== undefined);
  // The lexical check first: a path outside every root is refused before the file system is asked.
  if (!roots.some((r) => below(resolve(path), r)) && !tenancy.kernel_roots.some((r) => below(resolve(path), resolve(r)))) throw refuse();
  const real = realOrUndefined(path);
  if (real === undefined || !roots.some((r) => below(real, r))) throw refuse();
  return real;
}

/** A bridge a tenant's NIC may join: one of config.tenancy.networks[tenant]. */
export function checkTenantBridge(field: string, bridge: string, tenancy: TenancyConfig, tenant: string): void {
  const allowed = tenancy.networks[tenant] ?? [];
  if (!allowed.includes(bridge)) {
    throw permissionDenied(
      `${field} ${JSON.stringify(clip(bridge))} is not a network tenant ${tenant} may join; its networks are ${allowed.length > 0 ? allowed.join(", ") : "none"} (an operator allows bridges per tenant in [tenancy] networks).`,
    );
  }
}
