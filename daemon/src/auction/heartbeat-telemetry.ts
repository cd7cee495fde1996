// What a heartbeat tells the aggregator about the node (its alerts are evaluated on it): the same
// kernel figures the bids are scored with (observe/telemetry.ts: load, pressure, memory, disk wear;
// disks never waited for) and the memory the node promised its workloads and held bids.
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { NodeTelemetrySchema } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { readTelemetry, type TelemetrySnapshot } from "../observe/telemetry.js";

export type HeartbeatTelemetry = MessageInitShape<typeof NodeTelemetrySchema>;

/** The snapshot as the heartbeat's NodeTelemetry. */
export function heartbeatTelemetry(t: TelemetrySnapshot, memoryCommittedBytes: number): HeartbeatTelemetry {
  const psi = (resource: string) => t.pressure.find((p) => p.resource === resource);
  const worn = t.disks
    .filter((d) => d.known && d.percentageUsed !== undefined)
    .sort((a, b) => (b.percentageUsed as number) - (a.percentageUsed as number))[0];
  return {
    load1m: t.load[0],
    cpuCount: t.cpuCount,
    cpuPressureSomeAvg10: psi("cpu")?.someAvg10 ?? 0,
    memoryPressureSomeAvg10: psi("memory")?.someAvg10 ?? 0,
    ioPressureSomeAvg10: psi("io")?.someAvg10 ?? 0,
    pressureAvailable: t.pressure.length > 0 && t.pressure.every((p) => p.available),
    memoryTotalBytes: BigInt(t.memoryTotalBytes),
    memoryAvailableBytes: BigInt(Math.min(t.memoryAvailableBytes, t.memoryTotalBytes)),
    memoryCommittedBytes: BigInt(Math.max(0, Math.round(memoryCommittedBytes))),
    diskWearPercent: worn === undefined ? -1 : Math.round(worn.percentageUsed as number),
    diskWearDevice: worn?.device ?? "",
  };
}

/** Reads the node's figures now (never waiting for a disk). */
export async function readHeartbeatTelemetry(memoryCommittedBytes: () => number): Promise<HeartbeatTelemetry> {
  return heartbeatTelemetry(await readTelemetry({ diskWaitMs: 0 }), memoryCommittedBytes());
}
