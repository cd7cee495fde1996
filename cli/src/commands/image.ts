// aether image import|list|get|delete: read-only base images that volumes are cloned from.
import { resolve } from "node:path";
import { Option, type Command } from "commander";
import { storage as storageApi, type AetherClient } from "@aether/sdk";
import { withClient, type GlobalOptions } from "../client.js";
import { EXIT } from "../exit-codes.js";
import { age, bytes, printFields, printJson, printTable } from "../output.js";
import { startProgress } from "../progress.js";
import { cliWords } from "../api-words.js";
import { allPages, formatName, keyValue } from "./storage.js";

const { ImageState } = storageApi;

/** "45% of 64.0 MiB", or the bytes read so far while the size is unknown. */
function progress(i: storageApi.Image): string {
  if (i.sourceBytes > 0n)
    return `${Math.min(100, Math.floor(Number((i.importedBytes * 100n) / i.sourceBytes)))}% of ${bytes(i.sourceBytes)}`;
  return `${bytes(i.importedBytes)} read`;
}

function stateText(i: storageApi.Image): string {
  const word = ImageState[i.state].toLowerCase();
  return i.state === ImageState.IMPORTING ? `${word} ${progress(i)}` : word;
}

/** Why an image failed, clipped for a table (whole in image get and --json); "-" when nothing failed. */
const REASON_WIDTH = 80;
function reasonText(i: storageApi.Image): string {
  if (i.stateReason === "") return "-";
  return i.stateReason.length > REASON_WIDTH ? `${i.stateReason.slice(0, REASON_WIDTH - 1)}…` : i.stateReason;
}

const sourceText = (i: storageApi.Image) => (i.source?.source.case ? i.source.source.value : "-");

function printImage(i: storageApi.Image): void {
  printFields([
    ["id", i.id],
    ["name", i.name],
    ["tenant", i.tenant],
    ["state", `${stateText(i)}${i.stateReason ? `: ${i.stateReason}` : ""}`],
    ["pool", i.pool],
    ["format", formatName(i.format)],
    ["size", i.sizeBytes ? bytes(i.sizeBytes) : "-"],
    ["allocated", bytes(i.allocatedBytes)],
    ["source", sourceText(i)],
    ["sha256", i.sha256],
    ["imported", `${bytes(i.importedBytes)}${i.sourceBytes ? ` of ${bytes(i.sourceBytes)}` : ""}`],
    ["host path", i.hostPath || "-"],
    ["clones", i.clones.map((id) => id.slice(0, 8)).join(", ") || "-"],
    [
      "labels",
      Object.entries(i.labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(", ") || "-",
    ],
    ["age", age(i.createTime)],
  ]);
}

/** Whether progress (and the outcome with it) is shown on stderr: on a terminal, unless --json. */
const spinnerWanted = (json: boolean) => process.stderr.isTTY && !json;

/** Follows WatchImage until the import ends, with a spinner on a terminal; returns the last image seen. */
async function follow(aether: AetherClient, image: storageApi.Image, tenant: string, json: boolean): Promise<storageApi.Image> {
  const spinner = startProgress(`importing ${image.name}`, json);
  let last = image;
  try {
    for await (const r of aether.storage.watchImage({ image: image.id, tenant })) {
      if (r.image) last = r.image;
      spinner?.update(`importing ${image.name}: ${progress(last)}`);
    }
  } catch (err) {
    spinner?.stop();
    throw err;
  }
  if (last.state === ImageState.READY) spinner?.succeed(`${image.name} is ready: ${bytes(last.importedBytes)} imported, checksum verified`);
  else spinner?.fail(`importing ${image.name} failed: ${last.stateReason || ImageState[last.state].toLowerCase()}`);
  return last;
}

export function imageCommands(program: Command): void {
  const image = program
    .command("image")
    .description("images: read-only bases, imported from a file or URL, that volumes are cloned from")
    .addHelpText(
      "after",
      "\nExamples:\n  aether image import debian-12 https://example.org/debian-12.qcow2 --sha256 <hex>\n  aether image list",
    );
  const globals = () => program.opts<GlobalOptions>();

  image
    .command("import")
    .description(
      "import an image from an http(s) URL or a file on the node, verified by its SHA-256; waits until it is ready (a FAILED image of that name is replaced)",
    )
    .argument("<name>", "a name unique in the tenant (DNS label)")
    .argument("<source>", "an http:// or https:// URL, or a path of a file on aetherd's host")
    .requiredOption("--sha256 <hex>", "SHA-256 of the source file as published (before any conversion)")
    .option("--pool <pool>", "pool to store it in (default: the default pool)", "")
    .addOption(new Option("--format <format>", "format of the source file (default: detected)").choices(["raw", "qcow2"]))
    .option("--tenant <tenant>", "owning tenant", "")
    .option("-l, --label <key=value>", "label to attach (repeatable)", keyValue("label"))
    .option("--no-wait", "return once the import has started (follow it with aether image get)")
    .option("--json", "print the image as JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  aether image import debian-12 https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2 --sha256 <hex>\n  aether image import base ./base.raw --sha256 $(sha256sum base.raw | cut -d' ' -f1) --format raw\n  aether image import big https://example.org/big.qcow2 --sha256 <hex> --no-wait",
    )
    .action(
      async (
        name: string,
        source: string,
        o: {
          sha256: string;
          pool: string;
          format?: "raw" | "qcow2";
          tenant: string;
          label?: Record<string, string>;
          wait: boolean;
          json?: boolean;
        },
      ) => {
        let code: number = EXIT.ok;
        await withClient(globals(), async (aether) => {
          // A URL goes to aetherd as it is (it refuses schemes other than http and https); anything
          // else is a path, made absolute against the directory the command runs in.
          const isUrl = /^[a-z][a-z0-9+.-]*:\/\//i.test(source);
          const { image: started } = await aether.storage.importImage({
            name,
            tenant: o.tenant,
            labels: o.label ?? {},
            pool: o.pool,
            source: { source: isUrl ? { case: "url", value: source } : { case: "localPath", value: resolve(source) } },
            sha256: o.sha256.toLowerCase(),
            sourceFormat:
              o.format === "raw"
                ? storageApi.ImageFileFormat.RAW
                : o.format === "qcow2"
                  ? storageApi.ImageFileFormat.QCOW2
                  : storageApi.ImageFileFormat.UNSPECIFIED,
          });
          if (!started) throw new Error("aetherd returned no image");
          const shown = o.wait ? await follow(aether, started, o.tenant, o.json === true) : started;
          if (o.json) printJson(storageApi.ImageSchema, shown);
          else if (!o.wait || shown.state === ImageState.READY) printImage(shown);
          if (o.wait && shown.state !== ImageState.READY) {
            code = EXIT.failed;
            if (!spinnerWanted(o.json === true))
              process.stderr.write(
                `aether: importing image ${name} failed: ${cliWords(shown.stateReason) || `it is ${ImageState[shown.state].toLowerCase()}`}\n`,
              );
          }
        });
        process.exit(code);
      },
    );

  image
    .command("list")
    .alias("ls")
    .description("images, newest first")
    .option("--pool <pool>", "only images in this pool", "")
    .option("--tenant <tenant>", "only this tenant", "")
    .option("--filter <k=v,...>", "only those with these labels", "")
    .option("--json", "print as JSON")
    .addHelpText("after", "\nExamples:\n  aether image list\n  aether image list --filter os=debian --json")
    .action(async (o: { pool: string; tenant: string; filter: string; json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const images = await allPages((pageToken) =>
          aether.storage
            .listImages({ pool: o.pool, tenant: o.tenant, filter: o.filter, pageSize: 1000, pageToken })
            .then((r) => [r.images, r.nextPageToken]),
        );
        if (o.json) return printJson(storageApi.ImageSchema, images);
        printTable(
          ["NAME", "TENANT", "STATE", "POOL", "FORMAT", "SIZE", "ALLOCATED", "CLONES", "AGE", "SOURCE", "REASON"],
          images.map((i) => [
            i.name,
            i.tenant,
            stateText(i),
            i.pool,
            formatName(i.format),
            i.sizeBytes ? bytes(i.sizeBytes) : "-",
            bytes(i.allocatedBytes),
            String(i.clones.length),
            age(i.createTime),
            sourceText(i).slice(0, 60),
            reasonText(i),
          ]),
        );
      }),
    );

  image
    .command("get")
    .description("one image in detail (with its import's progress or why it failed)")
    .argument("<image>", "id or name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .option("--json", "print as JSON")
    .addHelpText("after", "\nExamples:\n  aether image get debian-12\n  aether image get debian-12 --json | jq -r .state")
    .action(async (ref: string, o: { tenant: string; json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const { image: i } = await aether.storage.getImage({ image: ref, tenant: o.tenant });
        if (!i) throw new Error("aetherd returned no image");
        if (o.json) return printJson(storageApi.ImageSchema, i);
        printImage(i);
      }),
    );

  image
    .command("delete")
    .alias("rm")
    .description("delete an image, cancelling its import (refused while a volume is cloned from it)")
    .argument("<image>", "id or name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addHelpText("after", "\nExamples:\n  aether image delete debian-12")
    .action(async (ref: string, o: { tenant: string }) =>
      withClient(globals(), async (aether) => {
        await aether.storage.deleteImage({ image: ref, tenant: o.tenant });
      }),
    );
}
