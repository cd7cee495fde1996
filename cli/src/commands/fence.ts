// aether fence register|list|status|off|on|reset|unregister: the BMCs (Redfish, HPE iLO 5 first)
// that let aetherd switch peer hosts off for certain. Passwords are never taken on the command
// line (where `ps` shows them): --password-file FILE (or - for stdin), or AETHER_BMC_PASSWORD.
import { readFileSync } from "node:fs";
import { InvalidArgumentError, Option, type Command } from "commander";
import { fence as fenceApi } from "@aether/sdk";
import { withClient, type GlobalOptions } from "../client.js";
import { EXIT } from "../exit-codes.js";
import { clientTimeoutMs, durationOption, toDuration } from "../numbers.js";
import { age, printFields, printJson, printTable } from "../output.js";

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

  fence
    .command("register")
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
    .option("--json", "print the registration as JSON")
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
          json?: boolean;
        },
        cmd: Command,
      ) => {
        const username = o.username ?? process.env["AETHER_BMC_USERNAME"];
        if (!username) cmd.error("error: give the BMC account with --username (or AETHER_BMC_USERNAME)");
        const password = readPassword(o.passwordFile, cmd);
        const caPem = o.ca !== undefined ? readFileOrFail(o.ca, "the CA file", cmd) : undefined;
        await withClient(globals(), async (aether) => {
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
          if (o.json) return printJson(fenceApi.BmcSchema, bmc);
          process.stdout.write(
            `registered the BMC of ${bmc.node}: ${bmc.manufacturer || "system"} ${bmc.model} at ${bmc.systemPath || bmc.endpoint}, power ${powerName(bmc.powerState)} (${stateName(bmc.state)})\n`,
          );
          if (bmc.stateReason) process.stderr.write(`aether: ${bmc.stateReason}\n`);
        });
      },
    );

  fence
    .command("list")
    .alias("ls")
    .description("registered BMCs, by node")
    .option("--filter <k=v,...>", "only those with these labels")
    .addOption(new Option("--state <state>", "only those in this state").choices(["reachable", "unreachable", "unauthorized"]))
    .option("--json", "print as JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  aether fence list\n  aether fence list --state unreachable\n  aether fence list --json | jq -r '.[].node'",
    )
    .action(async (o: { filter?: string; state?: "reachable" | "unreachable" | "unauthorized"; json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const state = o.state === undefined ? fenceApi.BmcState.UNSPECIFIED : fenceApi.BmcState[o.state.toUpperCase() as "REACHABLE"];
        const bmcs: fenceApi.Bmc[] = [];
        let pageToken = "";
        do {
          const page = await aether.fence.listBmcs({ pageSize: 1000, pageToken, filter: o.filter ?? "", state });
          bmcs.push(...page.bmcs);
          pageToken = page.nextPageToken;
        } while (pageToken !== "");
        if (o.json) return printJson(fenceApi.BmcSchema, bmcs);
        printTable(
          ["NODE", "ENDPOINT", "PROFILE", "STATE", "POWER", "SYSTEM", "FIRMWARE", "CHECKED"],
          bmcs.map((b) => [
            b.node,
            b.endpoint,
            profileName(b.profile),
            stateName(b.state),
            powerName(b.powerState),
            [b.manufacturer, b.model].filter((x) => x).join(" ") || "-",
            b.firmwareVersion || "-",
            b.checkTime ? age(b.checkTime) : "-",
          ]),
        );
      }),
    );

  fence
    .command("status")
    .description("read a node's power state and the reset types its BMC allows")
    .argument("<node>", "node name or registration id")
    .option("--json", "print as JSON")
    .addHelpText("after", "\nExamples:\n  aether fence status node-7\n  aether fence status node-7 --json | jq -r .rawPowerState")
    .action(async (ref: string, o: { json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const res = await aether.fence.getPowerStatus({ bmc: ref });
        if (o.json) return printJson(fenceApi.GetPowerStatusResponseSchema, res);
        if (res.bmc) showBmc(res.bmc);
        printFields([
          ["power state", powerName(res.powerState, res.rawPowerState)],
          ["allowed resets", res.allowableResetTypes.join(", ") || "-"],
        ]);
      }),
    );

  fence
    .command("off")
    .description('fence a node: ForceOff unless already off, then read until PowerState is exactly "Off"; exits 1 if not confirmed')
    .argument("<node>", "node name or registration id")
    .addOption(durationOption("--timeout <duration>", 'longest time until "Off" is read back', 60_000))
    .addOption(durationOption("--poll-interval <duration>", "time between power state reads", 1000))
    .option("--reason <text>", "why, for the audit log and events")
    .option("--request-id <id>", "idempotency key: a retry with the same id returns the first result")
    .option("--json", "print the outcome as JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  aether fence off node-7\n  aether fence off node-7 --timeout 2m --reason \"lost heartbeat\"\n  aether fence off node-7 --json || echo 'node-7 is NOT fenced: do not start its workloads elsewhere'",
    )
    .action(async (ref: string, o: { timeout: number; pollInterval: number; reason?: string; requestId?: string; json?: boolean }) =>
      withClient(globals(), async (aether) => {
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
        if (o.json) printJson(fenceApi.FenceResponseSchema, res);
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

  fence
    .command("on")
    .description("power a node on (ResetType On); a node already on is left alone")
    .argument("<node>", "node name or registration id")
    .addOption(durationOption("--wait <duration>", 'also wait until PowerState is "On", for up to this long'))
    .option("--json", "print the outcome as JSON")
    .addHelpText("after", "\nExamples:\n  aether fence on node-7\n  aether fence on node-7 --wait 2m")
    .action(async (ref: string, o: { wait?: number; json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const res = await aether.fence.powerOn(
          { bmc: ref, ...(o.wait !== undefined ? { timeout: toDuration(o.wait) } : {}) },
          { timeoutMs: clientTimeoutMs((o.wait ?? 0) + 60_000) },
        );
        if (o.json) return printJson(fenceApi.PowerOnResponseSchema, res);
        process.stdout.write(
          res.alreadyOn
            ? `${ref} was already on\n`
            : `${ref}: power on accepted (HTTP ${res.actionStatusCode}); power state ${powerName(res.powerState, res.rawPowerState)}\n`,
        );
      }),
    );

  fence
    .command("reset")
    .description("send a Redfish ResetType the system allows (see `aether fence status`)")
    .argument("<node>", "node name or registration id")
    .argument("<type>", "ResetType, e.g. ForceRestart, GracefulShutdown, Nmi")
    .option("--json", "print the outcome as JSON")
    .addHelpText("after", "\nExamples:\n  aether fence reset node-7 ForceRestart\n  aether fence reset node-7 GracefulShutdown")
    .action(async (ref: string, type: string, o: { json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const res = await aether.fence.reset({ bmc: ref, resetType: type });
        if (o.json) return printJson(fenceApi.ResetResponseSchema, res);
        process.stdout.write(
          `${ref}: ${type} accepted (HTTP ${res.actionStatusCode}); power state ${powerName(res.powerState, res.rawPowerState)}\n`,
        );
      }),
    );

  fence
    .command("unregister")
    .description("forget a node's BMC and its credentials")
    .argument("<node>", "node name or registration id")
    .addHelpText("after", "\nExamples:\n  aether fence unregister node-7")
    .action(async (ref: string) =>
      withClient(globals(), async (aether) => {
        await aether.fence.unregisterBmc({ bmc: ref });
        process.stdout.write(`unregistered the BMC of ${ref}\n`);
      }),
    );
}
