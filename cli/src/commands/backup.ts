// aether backup list|trigger|restore: the cluster's state backed up to git by aether-aggregator
// ([backup] repository, remote). The aggregator is found as `aether cluster` finds it: --aggregator,
// else AETHER_AGGREGATOR, else the node address every other command uses.
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Command } from "commander";
import { auction } from "@aether/sdk/client";
import { withClient, type GlobalOptions } from "../client.js";
import { age, forPrograms, outputOptions, printList, printOne, type ListView, type OutputFlags } from "../output.js";
import { dryRunOption, sayWould, type DryRunFlags } from "../mutations.js";
import { uint32 } from "../numbers.js";

const changeKind = (k: auction.BackupChangeKind) => (auction.BackupChangeKind[k] ?? String(k)).toLowerCase();
const when = (b: auction.Backup) => (b.commitTime ? `${timestampDate(b.commitTime).toISOString()} (${age(b.commitTime)} ago)` : "-");

function printBackupLine(prefix: string, b: auction.Backup | undefined, pushError: string): void {
  if (b) process.stdout.write(`${prefix} ${b.commit.slice(0, 12)} at ${when(b)}: ${b.summary} (${b.recordCount} records)\n`);
  if (pushError) process.stderr.write(`warning: ${pushError}\n`);
}

/** Backups; PUSHED says "-" when the repository has no remote. */
function backupsView(remote: string): ListView<auction.Backup> {
  return {
    json: auction.BackupSchema,
    name: (b) => b.commit,
    columns: [
      { header: "COMMIT", cell: (b) => b.commit.slice(0, 12), whole: (b) => b.commit },
      { header: "TIME", cell: (b) => (b.commitTime ? timestampDate(b.commitTime).toISOString() : "-") },
      { header: "AGE", cell: (b) => age(b.commitTime) },
      { header: "RECORDS", cell: (b) => String(b.recordCount) },
      { header: "PUSHED", cell: (b) => (remote ? (b.pushed ? "yes" : "no") : "-") },
      { header: "SUMMARY", cell: (b) => b.summary, clip: true },
    ],
  };
}

export function backupCommands(program: Command): void {
  const backup = program
    .command("backup")
    .description("the cluster's state backed up to git by aether-aggregator: list the backups, back up now, restore one")
    .option("--aggregator <address>", "aether-aggregator to talk to (default: AETHER_AGGREGATOR, else the node address)")
    .addHelpText(
      "after",
      `
The aggregator commits its state (nodes and their lifecycle, placements, auctions, request ids,
fencing records, drains; BMC registrations and the policy without secrets) to the git repository
of its [backup] settings after every change (batched) and on an interval, and pushes each commit
to the remote when one is configured.

Examples:
  aether backup list
  aether backup --aggregator unix:///run/aether/aggregator.sock list --json
  aether backup trigger
  aether backup restore 1a2b3c4d --dry-run
  aether backup restore 1a2b3c4d --force`,
    );
  const globals = (): GlobalOptions => {
    const address =
      backup.opts<{ aggregator?: string }>().aggregator ?? process.env.AETHER_AGGREGATOR ?? program.opts<GlobalOptions>().address;
    return address === undefined ? { peer: "aether-aggregator" } : { address, peer: "aether-aggregator" };
  };

  outputOptions(backup.command("list"), "list")
    .description("the backups (git commits), newest first: commit, time, summary of what changed, records, pushed")
    .option("--limit <n>", "at most this many (default 50)", uint32, 50)
    .addHelpText(
      "after",
      "\nExamples:\n  aether backup list\n  aether backup list --limit 10 --json\n  aether backup list -o name | head -1",
    )
    .action(async (o: { limit: number } & OutputFlags) =>
      withClient(globals(), async (aether) => {
        const backups: auction.Backup[] = [];
        let pageToken = "";
        let last: auction.ListBackupsResponse | undefined;
        do {
          last = await aether.aggregator.listBackups({ pageSize: Math.min(1000, o.limit - backups.length), pageToken });
          backups.push(...last.backups);
          pageToken = last.nextPageToken;
        } while (pageToken !== "" && backups.length < o.limit);
        if (forPrograms(o)) return printList(o, backupsView(""), backups);
        process.stdout.write(`repository ${last.repository}${last.remote ? `, pushed to ${last.remote}` : " (no remote)"}\n`);
        if (last.pushError) process.stderr.write(`warning: ${last.pushError}\n`);
        if (last.heldReason) process.stderr.write(`warning: ${last.heldReason}\n`);
        if (backups.length === 0) {
          process.stdout.write("no backup yet: the first is made after the next change, or by aether backup trigger.\n");
          return;
        }
        printList(o, backupsView(last.remote), backups);
      }),
    );

  dryRunOption(outputOptions(backup.command("trigger")))
    .description("back the cluster's state up now (and push it when a remote is configured)")
    .addHelpText("after", "\nExamples:\n  aether backup trigger\n  aether backup trigger --dry-run")
    .action(async (o: OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun) {
          const last = await aether.aggregator.listBackups({ pageSize: 1 });
          const newest = last.backups[0];
          return sayWould(
            `back the store up into ${last.repository}${newest ? ` (the newest backup is ${newest.commit.slice(0, 12)}, ${age(newest.commitTime)} old)` : " (no backup yet)"}${last.remote ? ` and push it to ${last.remote}` : ""}`,
          );
        }
        const r = await aether.aggregator.triggerBackup({});
        if (forPrograms(o)) return printOne(o, { json: auction.TriggerBackupResponseSchema, name: () => r.backup?.commit ?? "" }, r);
        if (!r.backup) process.stdout.write("nothing to back up: the store is empty and there is no backup yet.\n");
        else printBackupLine(r.committed ? "backed up as" : "nothing changed since", r.backup, r.pushError);
      }),
    );

  outputOptions(backup.command("restore"))
    .description(
      "rebuild the aggregator's store from a backup; refused while nodes are live unless --force. Says what it changes (added, changed, removed records)",
    )
    .argument("<commit>", "the backup's commit (7 to 40 hexadecimal digits, as aether backup list shows it)")
    .option("--force", "restore even though nodes are live (their records are overwritten)")
    .option("--dry-run", "say what would change and change nothing (the aggregator's own dry run)")
    .addHelpText(
      "after",
      "\nExamples:\n  aether backup restore 1a2b3c4d --dry-run\n  aether backup restore 1a2b3c4d\n  aether backup restore 1a2b3c4d --force     while nodes are live",
    )
    .action(async (commit: string, o: { force?: boolean; dryRun?: boolean } & OutputFlags) =>
      withClient(globals(), async (aether) => {
        const r = await aether.aggregator.restoreBackup({ commit, force: o.force ?? false, dryRun: o.dryRun ?? false });
        if (forPrograms(o)) return printOne(o, { json: auction.RestoreBackupResponseSchema, name: () => r.commit }, r);
        const verb = r.applied ? "restored" : "would restore";
        process.stdout.write(`${verb} ${r.commit.slice(0, 12)}: ${r.changes.length} record(s) ${r.applied ? "changed" : "to change"}\n`);
        for (const c of r.changes) process.stdout.write(`  ${changeKind(c.kind).padEnd(8)} ${c.key}\n`);
        if (r.liveNodes.length > 0)
          process.stdout.write(
            `${r.applied ? "live nodes overridden (--force)" : "live nodes (a restore needs --force)"}: ${r.liveNodes.join(", ")}\n`,
          );
        if (r.backup) printBackupLine("recorded as", r.backup, "");
      }),
    );
}
