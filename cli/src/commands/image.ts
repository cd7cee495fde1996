// aether image import|list|get|delete: read-only base images that volumes are cloned from.
import { resolve } from "node:path";
import { Option, type Command } from "commander";
import { storage as storageApi, type AetherClient } from "@aether/sdk/client";
import { withClient, type GlobalOptions } from "../client.js";
import { EXIT } from "../exit-codes.js";
import {
  age,
  bytes,
  forPrograms,
  labelsText,
  outputOptions,
  printFields,
  printList,
  printOne,
  shortId,
  type ListView,
  type OutputFlags,
} from "../output.js";
import { deleteMany, deleteManyOptions, dryRunOption, exists, sayWould, type DeleteFlags, type DryRunFlags } from "../mutations.js";
import { selectorOf, selectorOptions, selects, serverFilter, type SelectorFlags } from "../selectors.js";
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

/** Why an image failed ("-" when nothing did): clipped to fit in a table, whole in -o wide, image get and --json. */
const reasonText = (i: storageApi.Image): string => i.stateReason || "-";

const sourceText = (i: storageApi.Image) => (i.source?.source.case ? i.source.source.value : "-");

const IMAGES: ListView<storageApi.Image> = {
  json: storageApi.ImageSchema,
  name: (i) => i.name,
  columns: [
    { header: "NAME", cell: (i) => i.name },
    { header: "TENANT", cell: (i) => i.tenant },
    { header: "STATE", cell: stateText },
    { header: "POOL", cell: (i) => i.pool },
    { header: "FORMAT", cell: (i) => formatName(i.format) },
    { header: "SIZE", cell: (i) => (i.sizeBytes ? bytes(i.sizeBytes) : "-") },
    { header: "ALLOCATED", cell: (i) => bytes(i.allocatedBytes) },
    { header: "CLONES", cell: (i) => String(i.clones.length) },
    { header: "AGE", cell: (i) => age(i.createTime) },
    { header: "ID", cell: (i) => shortId(i.id), whole: (i) => i.id, wideOnly: true },
    { header: "LABELS", cell: (i) => labelsText(i.labels), wideOnly: true },
    { header: "SOURCE", cell: sourceText, clip: true },
    { header: "REASON", cell: reasonText, clip: true },
  ],
};

async function getImage(aether: AetherClient, ref: string, tenant: string): Promise<storageApi.Image> {
  const { image } = await aether.storage.getImage({ image: ref, tenant });
  if (!image) throw new Error("aetherd returned no image");
  return image;
}

async function listImages(aether: AetherClient, pool: string, tenant: string, filter: string): Promise<storageApi.Image[]> {
  return allPages((pageToken) =>
    aether.storage.listImages({ pool, tenant, filter, pageSize: 1000, pageToken }).then((r) => [r.images, r.nextPageToken]),
  );
}

function printImage(i: storageApi.Image): void {
  printFields(imageFields(i));
}

function imageFields(i: storageApi.Image): Array<[string, string]> {
  return [
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
    ["clones", i.clones.map(shortId).join(", ") || "-"],
    ["labels", labelsText(i.labels)],
    ["age", age(i.createTime)],
  ];
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

  dryRunOption(outputOptions(image.command("import")))
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
    .addHelpText(
      "after",
      "\nExamples:\n  aether image import debian-12 https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2 --sha256 <hex>\n  aether image import base ./base.raw --sha256 $(sha256sum base.raw | cut -d' ' -f1) --format raw\n  aether image import big https://example.org/big.qcow2 --sha256 <hex> --no-wait\n  aether image import base ./base.raw --sha256 <hex> --dry-run",
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
        } & OutputFlags &
          DryRunFlags,
      ) => {
        let code: number = EXIT.ok;
        const json = forPrograms(o);
        await withClient(globals(), async (aether) => {
          if (o.dryRun) {
            const taken = await exists(() => getImage(aether, name, o.tenant));
            const old = taken ? await getImage(aether, name, o.tenant) : undefined;
            if (old && old.state !== ImageState.FAILED)
              return sayWould(`import image ${name} from ${source}, but aetherd would refuse: an image named ${name} exists`);
            if (!/^[0-9a-f]{64}$/i.test(o.sha256))
              return sayWould(`import image ${name} from ${source}, but aetherd would refuse: --sha256 is not 64 hex digits`);
            return sayWould(`import image ${name} from ${source}${old ? " (replacing the failed import of that name)" : ""}`);
          }
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
          const shown = o.wait ? await follow(aether, started, o.tenant, json) : started;
          if (json) printOne(o, IMAGES, shown);
          else if (!o.wait || shown.state === ImageState.READY) printImage(shown);
          if (o.wait && shown.state !== ImageState.READY) {
            code = EXIT.failed;
            if (!spinnerWanted(json))
              process.stderr.write(
                `aether: importing image ${name} failed: ${cliWords(shown.stateReason) || `it is ${ImageState[shown.state].toLowerCase()}`}\n`,
              );
          }
        });
        process.exit(code);
      },
    );

  const list = image
    .command("list")
    .alias("ls")
    .description("images, newest first")
    .option("--pool <pool>", "only images in this pool", "")
    .option("--tenant <tenant>", "only this tenant", "")
    .addHelpText("after", "\nExamples:\n  aether image list\n  aether image list -l os=debian --json\n  aether image list -o wide")
    .action(async (o: { pool: string; tenant: string } & SelectorFlags & OutputFlags) =>
      withClient(globals(), async (aether) => {
        const selector = selectorOf(o);
        const images = await listImages(aether, o.pool, o.tenant, serverFilter(selector));
        printList(
          o,
          IMAGES,
          images.filter((i) => selects(selector, i.labels)),
        );
      }),
    );
  selectorOptions(outputOptions(list, "list"));

  outputOptions(image.command("get"))
    .description("one image in detail (with its import's progress or why it failed)")
    .argument("<image>", "id or name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addHelpText("after", "\nExamples:\n  aether image get debian-12\n  aether image get debian-12 --json | jq -r .state")
    .action(async (ref: string, o: { tenant: string } & OutputFlags) =>
      withClient(globals(), async (aether) => printOne(o, IMAGES, await getImage(aether, ref, o.tenant), imageFields)),
    );

  const remove = image
    .command("delete")
    .alias("rm")
    .description("delete images, cancelling their imports (refused while a volume is cloned from one): by name, by label selector, or all")
    .argument("[image...]", "ids or names")
    .option("--tenant <tenant>", "tenant to resolve names in (and to select in)", "")
    .option("--pool <pool>", "with -l or --all: only images in this pool", "")
    .addHelpText(
      "after",
      "\nExamples:\n  aether image delete debian-12\n  aether image delete -l os=debian --dry-run\n  aether image delete -l os=debian --yes",
    )
    .action(async (refs: string[], o: { tenant: string; pool: string } & DeleteFlags) =>
      withClient(globals(), async (aether) =>
        deleteMany(refs, o, {
          kind: "image",
          list: (selector) => listImages(aether, o.pool, o.tenant, serverFilter(selector)),
          labels: (i) => i.labels,
          target: (i) => ({
            name: i.name,
            id: i.id,
            ...(i.clones.length > 0 && { refusal: `${i.clones.length} volume(s) are cloned from ${i.name}` }),
          }),
          get: (ref) => getImage(aether, ref, o.tenant),
          remove: async (ref) => {
            await aether.storage.deleteImage({ image: ref, tenant: o.tenant });
          },
        }),
      ),
    );
  deleteManyOptions(remove, "image");
}
