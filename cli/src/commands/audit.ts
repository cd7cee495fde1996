// aether audit: the node's audit trail of mutating calls (ObserveService.ListAuditRecords), newest
// first (issue 23, item 12). The API filters by tenant and pages; --limit says how many to read.
import type { Command } from "commander";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { observe } from "@aether/sdk/client";
import { withClient, type GlobalOptions } from "../client.js";
import { uint32 } from "../numbers.js";
import { age, outputOptions, printList, type ListView, type OutputFlags } from "../output.js";

const RECORDS: ListView<observe.AuditRecord> = {
  json: observe.AuditRecordSchema,
  name: (r) => r.target || r.method,
  columns: [
    { header: "AGE", cell: (r) => age(r.time), whole: (r) => (r.time ? new Date(timestampMs(r.time)).toISOString() : "-") },
    { header: "IDENTITY", cell: (r) => r.identity, clip: true },
    { header: "METHOD", cell: (r) => r.method.replace(/^\/aether\.[a-z]+\.v1\./, ""), whole: (r) => r.method },
    { header: "TENANT", cell: (r) => r.tenant || "-" },
    { header: "TARGET", cell: (r) => r.target || "-", clip: true },
    { header: "RESULT", cell: (r) => r.result },
  ],
};

export function auditCommand(program: Command): void {
  outputOptions(
    program
      .command("audit")
      .description("the node's audit trail: every mutating call, who made it and how it ended, newest first")
      .option("--tenant <tenant>", "only this tenant's (default: every tenant you may see)", "")
      .option("--limit <n>", "read at most this many records (0: all)", uint32, 100)
      .addHelpText(
        "after",
        `
Examples:
  aether audit
  aether audit --tenant team-a --limit 20
  aether audit --limit 0 -o json | jq -r 'select(.result != "ok") | .method'
  aether audit -o wide`,
      ),
    "list",
  ).action(async (o: { tenant: string; limit: number } & OutputFlags) =>
    withClient(program.opts<GlobalOptions>(), async (aether) => {
      const records: observe.AuditRecord[] = [];
      let pageToken = "";
      do {
        const left = o.limit === 0 ? 1000 : Math.min(1000, o.limit - records.length);
        const page = await aether.observe.listAuditRecords({ tenant: o.tenant, pageSize: left, pageToken });
        records.push(...page.records);
        pageToken = page.nextPageToken;
      } while (pageToken !== "" && (o.limit === 0 || records.length < o.limit));
      printList(o, RECORDS, records);
    }),
  );
}
