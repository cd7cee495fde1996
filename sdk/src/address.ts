// Where aetherd listens and how a client finds it; shared by the daemon's defaults and connect().
import { homedir } from "node:os";
import { join } from "node:path";

/** The default unix socket: /run/aether for root, $XDG_RUNTIME_DIR (or /tmp) for other users. */
export function defaultSocketPath(): string {
  if (process.getuid?.() === 0) return "/run/aether/aetherd.sock";
  const runtimeDir = process.env.XDG_RUNTIME_DIR ?? join("/tmp", `aether-${process.getuid?.() ?? "user"}`);
  return join(runtimeDir, "aether", "aetherd.sock");
}

/** The default state directory: /var/lib/aether for root, $XDG_STATE_HOME/aether for other users. */
export function defaultStateDir(): string {
  if (process.getuid?.() === 0) return "/var/lib/aether";
  return join(process.env.XDG_STATE_HOME ?? join(homedir(), ".local", "state"), "aether");
}

/** The client config file connect() reads when no address is given. */
export function defaultClientConfigPath(): string {
  return join(process.env.XDG_CONFIG_HOME ?? join(homedir(), ".config"), "aether", "config.toml");
}
