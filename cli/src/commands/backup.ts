// aether backup list|trigger|restore: the cluster's state backed up to git by aether-aggregator
// ([backup] repository, remote). The aggregator is found as `aether cluster` finds it: --aggregator,
// else AETHER_AGGREGATOR, else the node address every other command uses.
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Command } from "commander";
import { auction } from "@aether/sdk";
import { withClient, type GlobalOptions } from "../client.js";
import { age, printJson, printTable } from "../output.js";
import { uint32 } from "../numbers.js";

const changeKind = (k: auction.BackupChangeKind) => (auction.BackupChangeKind[k] ?? String(k)).toLowerCase();
const when = (b: auction.Backup) => (b.commitTime ? `${timestampDate(b.commitTime).toISOString()} (${age(b.commitTime)} ago)` : "-");

function printBackupLine(prefix: string, b: auction.Backup | undefined, pushError: string): void {
  if (b) process.stdout.write(`${prefix} ${b.commit.slice(0, 12)} at ${when(b)}: ${b.summary} (${b.recordCount} records)\n`);
  if (pushError) process.stderr.write(`warning: ${pushError}\n`);
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

  backup
    .command("list")
    .description("the backups (git commits), newest first: commit, time, summary of what changed, records, pushed")
    .option("--json", "print the backups as JSON")
    .option("--limit <n>", "at most this many (default 50)", uint32, 50)
    .addHelpText("after", "\nExamples:\n  aether backup list\n  aether backup list --limit 10 --json")
    .action(async (o: { json?: boolean; limit: number }) =>
      withClient(globals(), async (aether) => {
        const backups: auction.Backup[] = [];
        let pageToken = "";
        let last: auction.ListBackupsResponse | undefined;
        do {
          last = await aether.aggregator.listBackups({ pageSize: Math.min(1000, o.limit - backups.length), pageToken });
          backups.push(...last.backups);
          pageToken = last.nextPageToken;
        } while (pageToken !== "" && backups.length < o.limit);
        if (o.json) return printJson(auction.BackupSchema, backups);
        process.stdout.write(`repository ${last.repository}${last.remote ? `, pushed to ${last.remote}` : " (no remote)"}\n`);
        if (last.pushError) process.stderr.write(`warning: ${last.pushError}\n`);
        if (last.heldReason) process.stderr.write(`warning: ${last.heldReason}\n`);
        if (backups.length === 0) {
          process.stdout.write("no backup yet: the first is made after the next change, or by aether backup trigger.\n");
          return;
        }
        printTable(
          ["COMMIT", "TIME", "AGE", "RECORDS", "PUSHED", "SUMMARY"],
          backups.map((b) => [
            b.commit.slice(0, 12),
            b.commitTime ? timestampDate(b.commitTime).toISOString() : "-",
            age(b.commitTime),
            String(b.recordCount),
            last?.remote ? (b.pushed ? "yes" : "no") : "-",
            b.summary,
          ]),
        );
      }),
    );

  backup
    .command("trigger")
    .description("back the cluster's state up now (and push it when a remote is configured)")
    .option("--json", "print the answer as JSON")
    .addHelpText("after", "\nExamples:\n  aether backup trigger")
    .action(async (o: { json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const r = await aether.aggregator.triggerBackup({});
        if (o.json) return printJson(auction.TriggerBackupResponseSchema, r);
        if (!r.backup) process.stdout.write("nothing to back up: the store is empty and there is no backup yet.\n");
        else printBackupLine(r.committed ? "backed up as" : "nothing changed since", r.backup, r.pushError);
      }),
    );

  backup
    .command("restore")
    .description(
      "rebuild the aggregator's store from a backup; refused while nodes are live unless --force. Says what it changes (added, changed, removed records)",
    )
    .argument("<commit>", "the backup's commit (7 to 40 hexadecimal digits, as aether backup list shows it)")
    .option("--force", "restore even though nodes are live (their records are overwritten)")
    .option("--dry-run", "say what would change and change nothing")
    .option("--json", "print the answer as JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  aether backup restore 1a2b3c4d --dry-run\n  aether backup restore 1a2b3c4d\n  aether backup restore 1a2b3c4d --force     while nodes are live",
    )
    .action(async (commit: string, o: { force?: boolean; dryRun?: boolean; json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const r = await aether.aggregator.restoreBackup({ commit, force: o.force ?? false, dryRun: o.dryRun ?? false });
        if (o.json) return printJson(auction.RestoreBackupResponseSchema, r);
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
