// Builds the configured pools: each [[pools]] entry becomes a driver behind StoragePool. Without
// any, one dir pool named "default" in the state directory: storage works with no setup at all.
import { join } from "node:path";
import type { PoolConfig } from "../config.js";
import { DirPool } from "./dir-pool.js";
import { LvmThinPool } from "./lvm-thin-pool.js";
import { ZfsPool } from "./zfs-pool.js";
import type { StoragePool } from "./pool.js";

export interface ConfiguredPools {
  pools: Map<string, { pool: StoragePool; labels: Record<string, string> }>;
  defaultPool: string;
}

export function createPools(configs: PoolConfig[], stateDir: string): ConfiguredPools {
  const list =
    configs.length > 0
      ? configs
      : [{ name: "default", driver: "dir" as const, location: join(stateDir, "pools", "default"), default: true, labels: {} }];
  const pools = new Map<string, { pool: StoragePool; labels: Record<string, string> }>();
  for (const c of list) pools.set(c.name, { pool: createPool(c, stateDir), labels: c.labels });
  const defaultPool = (list.find((c) => c.default) ?? list[0])?.name ?? "default";
  return { pools, defaultPool };
}

function createPool(c: PoolConfig, stateDir: string): StoragePool {
  switch (c.driver) {
    case "dir":
      return new DirPool(c.name, c.location);
    case "zfs":
      return new ZfsPool(c.name, c.location);
    case "lvm-thin":
      return new LvmThinPool(c.name, c.location, { stagingDir: join(stateDir, "storage", "staging", c.name) });
  }
}
