// TLS for the two data streams of a live migration between hosts (issues 14 and 21): the disks (the
// target's NBD export, the source's NBD client) and the memory (QEMU's migration stream). Each QEMU
// is given a tls-creds-x509 object made from its node's identity (the CA, the node certificate and
// its key; a node certificate serves as server and as client certificate) with verify-peer, so both
// ends prove they hold a certificate of the cluster's CA and nothing on the network reads or writes
// the disks or the memory. QEMU reads the files once, when the object is added: the private folder
// they are written to (0700, under the node's state folder) is removed right after.
//
// A certificate of the cluster's CA is not enough on the target: its NBD server and its incoming
// migration take only the source node's (tls-authz, an authz-list object matching the client
// certificate's distinguished name), so another node of the cluster cannot read or write the disks
// of a VM that is not moving to it, nor push a guest's state into it.
import { copyFile, mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { OutgoingTls } from "@aether/server";
import type { QmpClient } from "../vm/qmp.js";

/** The id of the credentials object in a QEMU of a migration. */
export const TLS_CREDS_ID = "mig-tls";
/** The id of the authorization object on the target: the one client certificate it takes. */
export const TLS_AUTHZ_ID = "mig-authz";
const QMP_STEP_MS = 30_000;

/**
 * Adds the credentials object to the QEMU (an earlier attempt's is replaced), from files written to
 * dir (created 0700, removed before this returns, whatever happened).
 */
export async function addTlsCreds(qmp: QmpClient, identity: OutgoingTls, dir: string, endpoint: "server" | "client"): Promise<string> {
  const { ca, cert, key } = identity.tls;
  if (ca === undefined || cert === undefined || key === undefined)
    throw new Error(
      `this node has no complete TLS identity for the migration's streams (set ${identity.settings.ca} and ${identity.settings.certAndKey})`,
    );
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true, mode: 0o700 });
  try {
    await copyFile(ca, join(dir, "ca-cert.pem"));
    await copyFile(cert, join(dir, `${endpoint}-cert.pem`));
    await copyFile(key, join(dir, `${endpoint}-key.pem`));
    await qmp.execute("object-del", { id: TLS_CREDS_ID }, QMP_STEP_MS).catch(() => undefined);
    await qmp.execute("object-add", { "qom-type": "tls-creds-x509", id: TLS_CREDS_ID, dir, endpoint, "verify-peer": true }, QMP_STEP_MS);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return TLS_CREDS_ID;
}

/**
 * Adds the authorization object that lets in only node `peer`'s certificate: its distinguished name
 * as QEMU (GnuTLS) writes it, "CN=<name>,OU=node,O=<cluster>" for a certificate of `aether pki issue
 * node`, or "CN=<name>" alone (a bare certificate); every other name is denied.
 */
export async function addTlsAuthz(qmp: QmpClient, peer: string): Promise<string> {
  // Node names are DNS names: nothing in them is special to the glob or the DN.
  if (!/^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/.test(peer))
    throw new Error(`the source node's name ${JSON.stringify(peer.slice(0, 64))} cannot be matched in a certificate`);
  await qmp.execute("object-del", { id: TLS_AUTHZ_ID }, QMP_STEP_MS).catch(() => undefined);
  await qmp.execute(
    "object-add",
    {
      "qom-type": "authz-list",
      id: TLS_AUTHZ_ID,
      policy: "deny",
      rules: [
        { match: `CN=${peer}`, policy: "allow", format: "exact" },
        { match: `CN=${peer},OU=node,*`, policy: "allow", format: "glob" },
      ],
    },
    QMP_STEP_MS,
  );
  return TLS_AUTHZ_ID;
}

/** Takes the credentials out of the QEMU again (plain migration parameters, the objects deleted); best effort. */
export async function dropTlsCreds(qmp: QmpClient): Promise<void> {
  await qmp.execute("migrate-set-parameters", { "tls-creds": "", "tls-hostname": "", "tls-authz": "" }, QMP_STEP_MS).catch(() => undefined);
  await qmp.execute("object-del", { id: TLS_CREDS_ID }, QMP_STEP_MS).catch(() => undefined);
  await qmp.execute("object-del", { id: TLS_AUTHZ_ID }, QMP_STEP_MS).catch(() => undefined);
}
