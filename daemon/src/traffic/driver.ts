// The proxy behind endpoints, as the manager needs it. One implementation today (haproxy-driver.ts:
// Debian's HAProxy); another proxy with a runtime API could take its place without the manager or
// the API layer changing.
import type { EndpointSpec, ProxySample } from "./types.js";

/** The files of one endpoint's proxy, all in the endpoint's folder of the state dir. */
export interface ProxyFiles {
  dir: string;
  config: string;
  map: string;
  pidFile: string;
  adminSocket: string;
}

export interface ProxyDriver {
  /** The proxy's version, or a DomainError (failed_precondition) saying how to install it. */
  version(): Promise<string>;
  /** Writes the configuration and starts a proxy for spec, detached from aetherd; resolves with its pid once it answers. */
  start(spec: EndpointSpec, files: ProxyFiles): Promise<number>;
  /** The pid of a proxy already running from these files (after an aetherd restart), if any. */
  running(files: ProxyFiles): number | undefined;
  /** Whether the running proxy was started for the same frame (listen, checks, split) as spec, so runtime changes suffice. */
  sameFrame(spec: EndpointSpec, files: ProxyFiles): boolean;
  /** Makes the running proxy match spec through its runtime API (membership, weights, states, split ratio); rewrites the files for the next start. */
  apply(spec: EndpointSpec, files: ProxyFiles): Promise<void>;
  /** Sets next's weights and the states that differ from previous (same membership) in one runtime API call: the fast path of a traffic shift. */
  update(previous: EndpointSpec, next: EndpointSpec, files: ProxyFiles): Promise<void>;
  /** Live statistics. */
  sample(files: ProxyFiles): Promise<ProxySample>;
  /** Stops the proxy with this pid and waits until it is gone. */
  stop(pid: number, files: ProxyFiles): Promise<void>;
}
