// qemu-img through the host command helper: the one tool behind dir pools and image inspection.
import { runHost } from "../host/command.js";

export interface QemuImgInfo {
  format: string;
  virtualSize: number;
  actualSize: number;
  /** Backing file as recorded in the image ("" when none). */
  backingFile: string;
  backingFormat: string;
  /** An external data file (qcow2 data-file option); "" when none. */
  dataFile: string;
}

interface RawInfo {
  format: string;
  "virtual-size": number;
  "actual-size"?: number;
  "backing-filename"?: string;
  "full-backing-filename"?: string;
  "backing-filename-format"?: string;
  "format-specific"?: { data?: { "data-file"?: string } };
}

const TIMEOUT_MS = 120_000;

export async function qemuImg(args: string[], timeoutMs = TIMEOUT_MS): Promise<string> {
  return (await runHost("qemu-img", args, { timeoutMs })).stdout;
}

/**
 * Reads an image's header. `format` pins the driver so a raw file that happens to start with a
 * qcow2 header is not misread; without it qemu-img probes the contents.
 */
export async function qemuImgInfo(path: string, format?: "qcow2" | "raw"): Promise<QemuImgInfo> {
  const args = ["info", "--output=json", ...(format ? ["-f", format] : []), "-U", path];
  const raw = JSON.parse(await qemuImg(args)) as RawInfo;
  return {
    format: raw.format,
    virtualSize: raw["virtual-size"],
    actualSize: raw["actual-size"] ?? 0,
    backingFile: raw["full-backing-filename"] ?? raw["backing-filename"] ?? "",
    backingFormat: raw["backing-filename-format"] ?? "",
    dataFile: raw["format-specific"]?.data?.["data-file"] ?? "",
  };
}
