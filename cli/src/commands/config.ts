// aether config get-contexts|current-context|use-context|set-context|delete-context: named contexts
// in the client config (issue 23, item 10; the file's format is in @aether/sdk client-config.ts).
import { dirname, isAbsolute, resolve } from "node:path";
import { InvalidArgumentError, type Command } from "commander";
import { CONTEXT_FIELDS, DEFAULT_CONTEXT, readClientConfig, selectContext, type ClientContext } from "@aether/sdk/client";
import { configPath, deleteContext, messageOf, setContext, useContext } from "../contexts.js";
import { outputOptions, printList, type ListView, type OutputFlags } from "../output.js";

/** Context names: what a person types after --context (no spaces, no dots that TOML would split). */
const CONTEXT_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;
const ADDRESS = /^(unix:\/\/\/|\/|https:\/\/)/;

type ContextRow = ClientContext & { name: string; current: boolean };

const CONTEXTS: ListView<ContextRow> = {
  json: (c) => c,
  name: (c) => c.name,
  columns: [
    { header: "CURRENT", cell: (c) => (c.current ? "*" : "") },
    { header: "NAME", cell: (c) => c.name },
    { header: "ADDRESS", cell: (c) => c.address ?? "-" },
    { header: "AGGREGATOR", cell: (c) => c.aggregator ?? "-" },
    { header: "TENANT", cell: (c) => c.tenant ?? "-" },
    { header: "CA", cell: (c) => c.ca ?? "-", wideOnly: true },
    { header: "CERT", cell: (c) => c.cert ?? "-", wideOnly: true },
    { header: "KEY", cell: (c) => c.key ?? "-", wideOnly: true },
  ],
};

export function configCommands(program: Command): void {
  const config = program
    .command("config")
    .description("the client config: named contexts (node address, aggregator, CA, certificate, key, default tenant)")
    .addHelpText(
      "after",
      `
The file is ~/.config/aether/config.toml ($XDG_CONFIG_HOME/aether/config.toml). Its top-level fields
are the context "default"; more are [contexts.NAME] tables. A command uses --context NAME (or
AETHER_CONTEXT), else AETHER_HOST, else the current context.

Examples:
  aether config set-context lab --address https://10.0.0.7:7443 --ca ca.pem --cert me.pem --key me.key --tenant team-a
  aether config use-context lab
  aether config get-contexts
  aether --context default exec list`,
    );

  const names = (): string[] => [...readClientConfig(configPath()).contexts.keys()];

  outputOptions(
    config
      .command("get-contexts")
      .description("every context, the current one marked *")
      .addHelpText(
        "after",
        "\nExamples:\n  aether config get-contexts\n  aether config get-contexts -o wide\n  aether config get-contexts -o name",
      ),
    "list",
  ).action((o: OutputFlags) => {
    const file = readClientConfig(configPath());
    printList(
      o,
      CONTEXTS,
      [...file.contexts.entries()].map(([name, c]) => ({ name, current: name === file.current, ...c })),
    );
  });

  config
    .command("current-context")
    .description("the name of the current context")
    .addHelpText("after", "\nExamples:\n  aether config current-context")
    .action(() => {
      process.stdout.write(`${readClientConfig(configPath()).current}\n`);
    });

  config
    .command("use-context")
    .description("make a context the current one")
    .argument("<name>", "context name (default: the top-level fields)")
    .addHelpText("after", "\nExamples:\n  aether config use-context lab\n  aether config use-context default")
    .action((name: string, _o: unknown, cmd: Command) => {
      if (!names().includes(name)) cmd.error(`error: ${contextMissing(name)}`, { exitCode: 2 });
      useContext(name);
      process.stderr.write(`switched to context "${name}"\n`);
    });

  const setCmd = config
    .command("set-context")
    .description("add a context or change its fields (the fields not given stay as they are)")
    .argument("<name>", `context name; "${DEFAULT_CONTEXT}" is the top-level fields`)
    .option("--address <address>", "aetherd: unix:///path.sock or https://host:port")
    .option("--aggregator <address>", "aether-aggregator: unix:///path.sock or https://host:port")
    .option("--ca <file>", "the cluster CA's certificate")
    .option("--cert <file>", "client certificate")
    .option("--key <file>", "client private key")
    .option("--tenant <tenant>", "tenant commands use when given no --tenant")
    .option("--unset <field>", `remove a field (repeatable): ${CONTEXT_FIELDS.join(", ")}`, collectField)
    .option("--from <file>", "take the fields of a client config file (e.g. the NAME.toml of aether pki issue user --write-config)")
    .option("--use", "also make it the current context")
    .addHelpText(
      "after",
      `
Relative file names are made absolute, so the context works from any directory.

Examples:
  aether config set-context lab --address https://10.0.0.7:7443 --ca ca.pem --cert alice.pem --key alice.key
  aether config set-context lab --aggregator https://10.0.0.2:7444 --tenant team-a --use
  aether config set-context local --address unix:///run/aether/aetherd.sock
  aether config set-context lab --unset tenant
  aether config set-context lab --from ~/.config/aether/pki/user/alice.toml --use`,
    );
  setCmd.action((name: string, o: ClientContext & { unset?: string[]; use?: boolean; from?: string }, cmd: Command) => {
    if (!CONTEXT_NAME.test(name))
      cmd.error(`error: context name ${JSON.stringify(name)}: use letters, digits, - and _ (at most 63).`, { exitCode: 2 });
    for (const field of ["address", "aggregator"] as const) {
      const value = o[field];
      if (value !== undefined && !ADDRESS.test(value)) {
        cmd.error(`error: --${field} ${JSON.stringify(value)}: use unix:///path/to.sock or https://host:port.`, { exitCode: 2 });
      }
    }
    const fields: ClientContext = {};
    if (o.from !== undefined) {
      const file = readClientConfig(resolve(o.from));
      if (!file.exists) cmd.error(`error: --from ${o.from}: no such file.`, { exitCode: 2 });
      const from = selectContext(file).context;
      // Its file names are relative to it, if they are relative at all.
      for (const field of ["ca", "cert", "key"] as const) {
        const value = from[field];
        if (value !== undefined && !value.includes("-----BEGIN") && !isAbsolute(value))
          from[field] = resolve(dirname(resolve(o.from)), value);
      }
      Object.assign(fields, from);
    }
    for (const field of CONTEXT_FIELDS) {
      const value = o[field];
      if (value === undefined) continue;
      fields[field] = (field === "ca" || field === "cert" || field === "key") && !isAbsolute(value) ? resolve(value) : value;
    }
    const created = setContext(name, fields, o.unset ?? []);
    if (o.use) useContext(name);
    process.stderr.write(`${created ? "added" : "changed"} context "${name}"${o.use ? ", now the current one" : ""} in ${configPath()}\n`);
  });

  config
    .command("delete-context")
    .description(`remove a context ("${DEFAULT_CONTEXT}": empty the top-level fields); default becomes current if it was`)
    .argument("<name>", "context name")
    .addHelpText("after", "\nExamples:\n  aether config delete-context lab")
    .action((name: string, _o: unknown, cmd: Command) => {
      if (!names().includes(name)) cmd.error(`error: ${contextMissing(name)}`, { exitCode: 2 });
      deleteContext(name);
      process.stderr.write(`deleted context "${name}"\n`);
    });
}

function collectField(value: string, previous: string[] = []): string[] {
  if (!(CONTEXT_FIELDS as readonly string[]).includes(value)) {
    throw new InvalidArgumentError(`not a context field; use one of ${CONTEXT_FIELDS.join(", ")}.`);
  }
  return [...previous, value];
}

function contextMissing(name: string): string {
  try {
    selectContext(readClientConfig(configPath()), name);
    return "";
  } catch (err) {
    return messageOf(err);
  }
}
