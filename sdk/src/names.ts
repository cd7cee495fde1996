// The name rule of Aether, in one place: names of tenants, nodes, pools, volumes, images, VMs,
// executables and each part of a cell's path are DNS labels (RFC 1123): 1 to 63 lowercase letters,
// digits and '-', starting and ending with a letter or digit. Clients (manifests, the CLI) and the
// servers check names with this rule; each says in its own sentence what is wrong.

const LABEL = "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?";

/** A DNS label: 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit. */
export const DNS_LABEL = new RegExp(`^${LABEL}$`);

/** A path of DNS labels separated by '/' (a cell's name, "team-a/build"). */
export const DNS_LABEL_PATH = new RegExp(`^${LABEL}(\\/${LABEL})*$`);

/** A label key: letters, digits, '-', '_' and '.' (at most 63), optionally prefixed by a domain and '/'. */
export const LABEL_KEY = /^([a-z0-9.-]{1,253}\/)?[a-z0-9A-Z]([a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?$/;

/** Whether value is a DNS label. */
export function isDnsLabel(value: string): boolean {
  return DNS_LABEL.test(value);
}
