// aether's command tree: every command, defined once. main.ts parses the command line with it; the
// tests walk it (test/cli-tree.test.ts) to check that every command has examples, output formats and
// usage errors that exit 2.
import { readFileSync } from "node:fs";
import { Command } from "commander";
import { cellCommands } from "./commands/cell.js";
import { vmCommands } from "./commands/vm.js";
import { execCommands } from "./commands/exec.js";
import { nodeCommands } from "./commands/node.js";
import { healthCommand } from "./commands/health.js";
import { storageCommands } from "./commands/storage.js";
import { imageCommands } from "./commands/image.js";
import { clusterCommands } from "./commands/cluster.js";
import { deployCommands } from "./commands/deploy.js";
import { rolloutCommands } from "./commands/rollout.js";
import { backupCommands } from "./commands/backup.js";
import { alertsCommands } from "./commands/alerts.js";
import { trafficCommands } from "./commands/traffic.js";
import { pkiCommands } from "./commands/pki.js";
import { fenceCommands } from "./commands/fence.js";
import { configCommands } from "./commands/config.js";
import { completionCommand } from "./commands/completion.js";
import { eventsCommand } from "./commands/events.js";
import { topCommand } from "./commands/top.js";
import { auditCommand } from "./commands/audit.js";
import { versionCommand } from "./commands/version.js";
import { manifestCommands } from "./commands/manifest.js";
import { uiCommand } from "./commands/ui.js";
import { applyContexts } from "./contexts.js";
import { EXIT, EXIT_CODES_HELP } from "./exit-codes.js";
import { finishCommandLine } from "./command-line.js";
import { speakFor } from "./api-words.js";

const { version } = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string };

/** The whole command tree, ready to parse. */
export function buildProgram(): Command {
  const program = new Command("aether")
    .description("Operate Aether nodes: processes, cells, VMs and storage, and (as it arrives) the cluster.")
    .version(version)
    .option(
      "-a, --address <address>",
      "aetherd to talk to: unix:///path.sock or https://host:port (default: AETHER_HOST, ~/.config/aether/config.toml, the default socket)",
    )
    .option("--context <name>", "client config context to use (default: AETHER_CONTEXT, else the current one; aether config get-contexts)")
    // The program's options end where the subcommand starts (command-line.ts lets them follow it too,
    // but never into a program's argv: `aether vm exec web uname -a`).
    .enablePositionalOptions()
    // Usage errors exit 2 (commander's default is 1, which scripts would read as a refused request).
    .exitOverride((err) => process.exit(err.exitCode === 0 ? EXIT.ok : EXIT.usage))
    .addHelpText(
      "after",
      `
Examples:
  aether node info
  aether exec start --name web -- /usr/bin/python3 -m http.server 8080
  aether exec list --json
  aether exec logs web -f
  aether cell allocate team-a --memory 2G --cpu-max 150%
  aether vm create web --kernel vmlinuz --initrd initrd.img --start --wait
  aether vm exec web -- /bin/uname -a
  aether image import debian-12 https://example.org/debian-12.qcow2 --sha256 <hex>
  aether storage create web-disk --image debian-12 --size 20G
  aether cluster deploy web --memory 256M -- /usr/bin/python3 -m http.server 8080
  aether deploy apply web.toml && aether scale web --instances 5
  aether apply -f web.manifest.ts
  aether backup list
  aether alerts thresholds set cpu_warning 0.75
  aether fence off node-7 --timeout 60s --reason "lost heartbeat"
  aether exec list -w                                  # redrawn as the node reports changes
  aether --context lab top                             # contexts: aether config get-contexts
  source <(aether completion bash)
  aether --address unix:///tmp/aether.sock exec stop web
${EXIT_CODES_HELP}`,
    );

  nodeCommands(program);
  healthCommand(program);
  execCommands(program);
  cellCommands(program);
  vmCommands(program);
  storageCommands(program);
  imageCommands(program);
  clusterCommands(program);
  deployCommands(program);
  rolloutCommands(program);
  backupCommands(program);
  alertsCommands(program);
  trafficCommands(program);
  pkiCommands(program);
  fenceCommands(program);
  configCommands(program);
  eventsCommand(program);
  topCommand(program);
  auditCommand(program);
  versionCommand(program);
  completionCommand(program);
  manifestCommands(program);
  uiCommand(program);

  finishCommandLine(program);
  speakFor(program);
  applyContexts(program);
  return program;
}
