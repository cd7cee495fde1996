// aether fence register|list|status|off|on|reset|unregister: the BMCs (Redfish, HPE iLO 5 first)
// that let aetherd switch peer hosts off for certain. Passwords are never taken on the command
// line (where `ps` shows them): --password-file FILE (or - for stdin), or AETHER_BMC_PASSWORD.
import { readFileSync } from "node:fs";
import { InvalidArgumentError, Option, type Command } from "commander";
import { Code, ConnectError, fence as fenceApi, type AetherClient } from "@aether/sdk/client";
import { withClient, type GlobalOptions } from "../client.js";
import { EXIT } from "../exit-codes.js";
import { clientTimeoutMs, durationOption, toDuration } from "../numbers.js";
import {
  age,
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
import { dryRunOption, sayWould, type DryRunFlags } from "../mutations.js";
import { selectorOf, selectorOptions, selects, serverFilter, type SelectorFlags } from "../selectors.js";

// protobuf-es enums map numbers back to names without the enum's prefix ("REACHABLE").
const enumName = (names: Record<number, string>, value: number) => (names[value] ?? String(value)).toLowerCase().replace(/_/g, " ");
const stateName = (s: fenceApi.BmcState) => enumName(fenceApi.BmcState, s);
const powerName = (p: fenceApi.PowerState, raw = "") =>
  raw !== "" ? raw : p === fenceApi.PowerState.UNSPECIFIED ? "-" : enumName(fenceApi.PowerState, p);
const profileName = (p: fenceApi.BmcProfile) =>
  p === fenceApi.BmcProfile.ILO5 ? "ilo5" : p === fenceApi.BmcProfile.DMTF_GENERIC ? "dmtf" : "-";
const millis = (d: { seconds: bigint; nanos: number } | undefined) =>
  d ? `${(Number(d.seconds) * 1000 + d.nanos / 1e6).toFixed(0)} ms` : "-";
const messagesText = (messages: fenceApi.BmcMessage[]) =>
  messages.map((m) => `${m.messageId}${m.message ? `: ${m.message}` : ""}`).join("; ") || "-";

/** The password: from a file (or "-": stdin), else AETHER_BMC_PASSWORD; one trailing newline is dropped. */
function readPassword(file: string | undefined, cmd: Command): string {
  let text: string | undefined;
  if (file !== undefined) {
    try {
      text = readFileSync(file === "-" ? 0 : file, "utf8");
    } catch (err) {
      cmd.error(`error: cannot read the password file ${file}: ${(err as Error).message}`);
    }
  } else text = process.env["AETHER_BMC_PASSWORD"];
  if (text === undefined)
    cmd.error(
      "error: give the BMC password with --password-file FILE (- for stdin) or in AETHER_BMC_PASSWORD; it is never taken as an argument",
    );
  const password = (text ?? "").replace(/\r?\n$/, "");
  if (password === "") cmd.error("error: the BMC password is empty");
  return password;
}

function readFileOrFail(file: string, what: string, cmd: Command): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    return cmd.error(`error: cannot read ${what} ${file}: ${(err as Error).message}`);
  }
}

const BMCS: ListView<fenceApi.Bmc> = {
  json: fenceApi.BmcSchema,
  name: (b) => b.node,
  columns: [
    { header: "NODE", cell: (b) => b.node },
    { header: "ENDPOINT", cell: (b) => b.endpoint, clip: true },
    { header: "PROFILE", cell: (b) => profileName(b.profile) },
    { header: "STATE", cell: (b) => stateName(b.state) },
    { header: "POWER", cell: (b) => powerName(b.powerState) },
    { header: "SYSTEM", cell: (b) => [b.manufacturer, b.model].filter((x) => x).join(" ") || "-", clip: true },
    { header: "FIRMWARE", cell: (b) => b.firmwareVersion || "-", clip: true },
    { header: "CHECKED", cell: (b) => (b.checkTime ? age(b.checkTime) : "-") },
    { header: "ID", cell: (b) => shortId(b.id), whole: (b) => b.id, wideOnly: true },
    { header: "LABELS", cell: (b) => labelsText(b.labels), wideOnly: true },
    { header: "REASON", cell: (b) => b.stateReason || "-", wideOnly: true },
  ],
};

/** A dry run of a power action: reads the power state (which changes nothing) and says what would be sent. */
async function wouldPower(aether: AetherClient, ref: string, action: string): Promise<void> {
  const res = await aether.fence.getPowerStatus({ bmc: ref });
  const allowed = res.allowableResetTypes.length > 0 ? `; the BMC allows ${res.allowableResetTypes.join(", ")}` : "";
  sayWould(`${action} on ${res.bmc?.node ?? ref} (power now ${powerName(res.powerState, res.rawPowerState)}${allowed})`);
}

function showBmc(b: fenceApi.Bmc): void {
  const tls =
    b.tls?.verification.case === "caPem"
      ? "pinned CA"
      : b.tls?.verification.case === "insecureSkipVerify"
        ? "NOT VERIFIED (insecure)"
        : "system trust store";
  printFields([
    ["node", b.node],
    ["id", b.id],
    ["endpoint", b.endpoint],
    ["profile", profileName(b.profile)],
    ["state", `${stateName(b.state)}${b.stateReason ? `: ${b.stateReason}` : ""}`],
    ["power", powerName(b.powerState)],
    ["system", b.systemPath || "-"],
    ["model", [b.manufacturer, b.model].filter((x) => x !== "").join(" ") || "-"],
    ["firmware", b.firmwareVersion || "-"],
    ["tls", `${tls}${b.tls?.serverName ? `, name ${b.tls.serverName}` : ""}`],
    [
      "labels",
      Object.entries(b.labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(", ") || "-",
    ],
    ["checked", b.checkTime ? `${age(b.checkTime)} ago` : "-"],
    ["registered", `${age(b.createTime)} ago`],
  ]);
}

export function fenceCommands(program: Command): void {
  const fence = program
    .command("fence")
    .description("fence: BMCs (Redfish; HPE iLO 5 first) that power peer hosts off for certain, and on again")
    .addHelpText(
      "after",
      `
Examples:
  aether fence register node-7 --endpoint https://10.0.0.17 --username fence --password-file /etc/aether/bmc-node-7 --ca ilo-ca.pem --profile ilo5
  aether fence list
  aether fence status node-7
  aether fence off node-7 --timeout 60s --reason "node-7 stopped answering"
  aether fence on node-7
  aether fence unregister node-7

Passwords are never taken as arguments: --password-file FILE (- reads stdin) or AETHER_BMC_PASSWORD.
\`aether fence off\` exits 0 only when PowerState "Off" was read back; otherwise 1.`,
    );
  const globals = () => program.opts<GlobalOptions>();

  dryRunOption(outputOptions(fence.command("register")))
    .description("register the BMC of a node: aetherd logs in, finds the system and reads its power state first")
    .argument("<node>", "the node the BMC controls (DNS label)")
    .requiredOption("--endpoint <url>", "the BMC's Redfish service root (https://HOST or https://HOST/redfish/v1)")
    .option("--username <name>", "BMC account (default: AETHER_BMC_USERNAME)")
    .option("--password-file <file>", "file holding the BMC password (- for stdin); default: AETHER_BMC_PASSWORD")
    .addOption(new Option("--ca <file>", "PEM of the CA (or the BMC's self-signed certificate) to trust, alone").conflicts("insecure"))
    .addOption(new Option("--insecure", "do not verify the BMC's certificate (not recommended; recorded as a warning)").conflicts("ca"))
    .option("--server-name <name>", "name the BMC's certificate must carry (default: the endpoint's host)")
    .addOption(new Option("--profile <profile>", "Redfish dialect").choices(["ilo5", "dmtf"]).default("dmtf"))
    .option("-l, --label <key=value>", "label to attach (repeatable)", (v: string, prev: Record<string, string> = {}) => {
      const eq = v.indexOf("=");
      if (eq <= 0) throw new InvalidArgumentError(`label ${JSON.stringify(v)} is not KEY=VALUE`);
      return { ...prev, [v.slice(0, eq)]: v.slice(eq + 1) };
    })
    .option("--allow-unreachable", "record the BMC even if it cannot be reached or logged in to now")
    .option("--replace", "replace the node's existing registration (new endpoint, credentials or TLS)")
    .addHelpText(
      "after",
      `
Examples:
  aether fence register node-7 --endpoint https://10.0.0.17 --username fence --password-file ~/.bmc-node-7 --ca ilo-ca.pem --profile ilo5
  AETHER_BMC_PASSWORD=... aether fence register node-8 --endpoint https://bmc-8.example.org --username fence --replace
  pass show bmc/node-9 | aether fence register node-9 --endpoint https://10.0.0.19 --username fence --password-file - --insecure`,
    )
    .action(
      async (
        node: string,
        o: {
          endpoint: string;
          username?: string;
          passwordFile?: string;
          ca?: string;
          insecure?: boolean;
          serverName?: string;
          profile: "ilo5" | "dmtf";
          label?: Record<string, string>;
          allowUnreachable?: boolean;
          replace?: boolean;
        } & OutputFlags &
          DryRunFlags,
        cmd: Command,
      ) => {
        const username = o.username ?? process.env["AETHER_BMC_USERNAME"];
        if (!username) cmd.error("error: give the BMC account with --username (or AETHER_BMC_USERNAME)");
        const password = readPassword(o.passwordFile, cmd);
        const caPem = o.ca !== undefined ? readFileOrFail(o.ca, "the CA file", cmd) : undefined;
        await withClient(globals(), async (aether) => {
          if (o.dryRun) {
            // The BMC is not contacted: that is what registering does first.
            const { bmcs } = await aether.fence.listBmcs({ pageSize: 1000 });
            const old = bmcs.find((b) => b.node === node);
            const no = old && !o.replace ? `, but aetherd would refuse: ${node} has a BMC registered (${old.endpoint}); add --replace` : "";
            return sayWould(
              `register the BMC of ${node} at ${o.endpoint} as ${username}${old && o.replace ? `, replacing ${old.endpoint}` : ""}${no}`,
            );
          }
          const { bmc } = await aether.fence.registerBmc({
            node,
            endpoint: o.endpoint,
            profile: o.profile === "ilo5" ? fenceApi.BmcProfile.ILO5 : fenceApi.BmcProfile.DMTF_GENERIC,
            credentials: { username, password },
            tls: {
              verification:
                caPem !== undefined
                  ? { case: "caPem", value: caPem }
                  : o.insecure
                    ? { case: "insecureSkipVerify", value: true }
                    : { case: undefined },
              serverName: o.serverName ?? "",
            },
            labels: o.label ?? {},
            allowUnreachable: o.allowUnreachable ?? false,
            replace: o.replace ?? false,
          });
          if (!bmc) throw new Error("aetherd returned no registration");
          if (forPrograms(o)) return printOne(o, BMCS, bmc);
          process.stdout.write(
            `registered the BMC of ${bmc.node}: ${bmc.manufacturer || "system"} ${bmc.model} at ${bmc.systemPath || bmc.endpoint}, power ${powerName(bmc.powerState)} (${stateName(bmc.state)})\n`,
          );
          if (bmc.stateReason) process.stderr.write(`aether: ${bmc.stateReason}\n`);
        });
      },
    );

  const list = fence
    .command("list")
    .alias("ls")
    .description("registered BMCs, by node")
    .addOption(new Option("--state <state>", "only those in this state").choices(["reachable", "unreachable", "unauthorized"]))
    .addHelpText(
      "after",
      "\nExamples:\n  aether fence list\n  aether fence list --state unreachable -l chassis=c7000-1\n  aether fence list -o name\n  aether fence list --json | jq -r '.[].node'",
    )
    .action(async (o: { state?: "reachable" | "unreachable" | "unauthorized" } & SelectorFlags & OutputFlags) =>
      withClient(globals(), async (aether) => {
        const selector = selectorOf(o);
        const state = o.state === undefined ? fenceApi.BmcState.UNSPECIFIED : fenceApi.BmcState[o.state.toUpperCase() as "REACHABLE"];
        const bmcs: fenceApi.Bmc[] = [];
        let pageToken = "";
        do {
          const page = await aether.fence.listBmcs({ pageSize: 1000, pageToken, filter: serverFilter(selector), state });
          bmcs.push(...page.bmcs);
          pageToken = page.nextPageToken;
        } while (pageToken !== "");
        printList(
          o,
          BMCS,
          bmcs.filter((b) => selects(selector, b.labels)),
        );
      }),
    );
  selectorOptions(outputOptions(list, "list"));

  outputOptions(fence.command("status"))
    .description("read a node's power state and the reset types its BMC allows")
    .argument("<node>", "node name or registration id")
    .addHelpText("after", "\nExamples:\n  aether fence status node-7\n  aether fence status node-7 --json | jq -r .rawPowerState")
    .action(async (ref: string, o: OutputFlags) =>
      withClient(globals(), async (aether) => {
        const res = await aether.fence.getPowerStatus({ bmc: ref });
        if (forPrograms(o)) return printOne(o, { json: fenceApi.GetPowerStatusResponseSchema, name: () => res.bmc?.node ?? ref }, res);
        if (res.bmc) showBmc(res.bmc);
        printFields([
          ["power state", powerName(res.powerState, res.rawPowerState)],
          ["allowed resets", res.allowableResetTypes.join(", ") || "-"],
        ]);
      }),
    );

  dryRunOption(outputOptions(fence.command("off")))
    .description('fence a node: ForceOff unless already off, then read until PowerState is exactly "Off"; exits 1 if not confirmed')
    .argument("<node>", "node name or registration id")
    .addOption(durationOption("--timeout <duration>", 'longest time until "Off" is read back', 60_000))
    .addOption(durationOption("--poll-interval <duration>", "time between power state reads", 1000))
    .option("--reason <text>", "why, for the audit log and events")
    .option("--request-id <id>", "idempotency key: a retry with the same id returns the first result")
    .addHelpText(
      "after",
      "\nExamples:\n  aether fence off node-7\n  aether fence off node-7 --timeout 2m --reason \"lost heartbeat\"\n  aether fence off node-7 --json || echo 'node-7 is NOT fenced: do not start its workloads elsewhere'\n  aether fence off node-7 --dry-run",
    )
    .action(
      async (ref: string, o: { timeout: number; pollInterval: number; reason?: string; requestId?: string } & OutputFlags & DryRunFlags) =>
        withClient(globals(), async (aether) => {
          if (o.dryRun) return wouldPower(aether, ref, "send ForceOff (unless already off) and read until PowerState is Off");
          const res = await aether.fence.fence(
            {
              bmc: ref,
              timeout: toDuration(o.timeout),
              pollInterval: toDuration(o.pollInterval),
              reason: o.reason ?? "",
              requestId: o.requestId ?? "",
            },
            { timeoutMs: clientTimeoutMs(o.timeout + 60_000) },
          );
          if (forPrograms(o)) printOne(o, { json: fenceApi.FenceResponseSchema, name: () => ref }, res);
          else {
            printFields([
              ["confirmed", res.confirmed ? "yes" : "NO"],
              ["reason", res.reason],
              ["power state", powerName(res.powerState, res.rawPowerState)],
              ["already off", res.alreadyOff ? "yes" : "no"],
              ["reads", String(res.pollCount)],
              ["ForceOff answer", res.actionStatusCode ? `HTTP ${res.actionStatusCode} in ${millis(res.commandLatency)}` : "-"],
              ["BMC messages", messagesText(res.messages)],
              ["total", millis(res.totalDuration)],
            ]);
          }
          if (!res.confirmed) {
            process.stderr.write(`aether: ${ref} is NOT fenced: ${res.reason}\n`);
            process.exitCode = EXIT.failed;
          }
        }),
    );

  dryRunOption(outputOptions(fence.command("on")))
    .description("power a node on (ResetType On); a node already on is left alone")
    .argument("<node>", "node name or registration id")
    .addOption(durationOption("--wait <duration>", 'also wait until PowerState is "On", for up to this long'))
    .addHelpText("after", "\nExamples:\n  aether fence on node-7\n  aether fence on node-7 --wait 2m\n  aether fence on node-7 --dry-run")
    .action(async (ref: string, o: { wait?: number } & OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun) return wouldPower(aether, ref, "send ResetType On (unless already on)");
        const res = await aether.fence.powerOn(
          { bmc: ref, ...(o.wait !== undefined ? { timeout: toDuration(o.wait) } : {}) },
          { timeoutMs: clientTimeoutMs((o.wait ?? 0) + 60_000) },
        );
        if (forPrograms(o)) return printOne(o, { json: fenceApi.PowerOnResponseSchema, name: () => ref }, res);
        process.stdout.write(
          res.alreadyOn
            ? `${ref} was already on\n`
            : `${ref}: power on accepted (HTTP ${res.actionStatusCode}); power state ${powerName(res.powerState, res.rawPowerState)}\n`,
        );
      }),
    );

  dryRunOption(outputOptions(fence.command("reset")))
    .description("send a Redfish ResetType the system allows (see `aether fence status`)")
    .argument("<node>", "node name or registration id")
    .argument("<type>", "ResetType, e.g. ForceRestart, GracefulShutdown, Nmi")
    .addHelpText(
      "after",
      "\nExamples:\n  aether fence reset node-7 ForceRestart\n  aether fence reset node-7 GracefulShutdown\n  aether fence reset node-7 Nmi --dry-run",
    )
    .action(async (ref: string, type: string, o: OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun) return wouldPower(aether, ref, `send ResetType ${type}`);
        const res = await aether.fence.reset({ bmc: ref, resetType: type });
        if (forPrograms(o)) return printOne(o, { json: fenceApi.ResetResponseSchema, name: () => ref }, res);
        process.stdout.write(
          `${ref}: ${type} accepted (HTTP ${res.actionStatusCode}); power state ${powerName(res.powerState, res.rawPowerState)}\n`,
        );
      }),
    );

  dryRunOption(fence.command("unregister"))
    .description("forget a node's BMC and its credentials")
    .argument("<node>", "node name or registration id")
    .addHelpText("after", "\nExamples:\n  aether fence unregister node-7\n  aether fence unregister node-7 --dry-run")
    .action(async (ref: string, o: DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun) {
          const { bmcs } = await aether.fence.listBmcs({ pageSize: 1000 });
          const bmc = bmcs.find((b) => b.node === ref || b.id === ref) ?? bmcs.find((b) => b.id.startsWith(ref));
          if (!bmc) throw new ConnectError(`no BMC is registered for ${ref} (see aether fence list)`, Code.NotFound);
          return sayWould(`unregister the BMC of ${bmc.node} (${bmc.endpoint}) and forget its credentials`);
        }
        await aether.fence.unregisterBmc({ bmc: ref });
        process.stdout.write(`unregistered the BMC of ${ref}\n`);
      }),
    );
}
