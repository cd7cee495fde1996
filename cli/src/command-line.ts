// How aether reads its command line, once every command is defined (issue 23, item 2):
//
// - Options of the program and of a command group (-a/--address, cluster --aggregator) are
//   recognized before the subcommand and after it, as kubectl's are, but never inside a program's
//   arguments: `aether vm exec web uname -a` runs `uname -a` in the guest. The program is parsed with
//   positional options (it stops at the subcommand's name), and each command gets hidden copies of its
//   ancestors' options whose values are handed up before its action runs.
// - A command whose last argument is a program's argv (exec start, vm exec, cluster deploy) takes
//   everything from the program's first word on literally, as if `--` stood before it: options are
//   read only before that word.
// - A usage error prints the error, the command's one-line usage and where its help is, not all of
//   --help.
import { Option, type Command } from "commander";

/** The command's path as typed: "aether vm exec". */
function pathOf(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(" ");
}

function* walk(cmd: Command): Generator<Command> {
  yield cmd;
  for (const sub of cmd.commands) yield* walk(sub);
}

const sameFlag = (a: Option, b: Option) => (a.short !== undefined && a.short === b.short) || (a.long !== undefined && a.long === b.long);

/**
 * Where a program's argv starts in `args` (the words a command parses), after `fixed` arguments of
 * the command's own: the index of its first word, or -1 when there is none or `--` marks it already.
 */
export function argvStart(cmd: Command, args: readonly string[], fixed: number): number {
  let operands = 0;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === "--") return -1;
    if (arg.length > 1 && arg.startsWith("-")) {
      // An option: skip the word after it when that is its value (not for --name=value or -t30s).
      const option = cmd.options.find((o) => o.short === arg || o.long === arg);
      const next = args[i + 1];
      if (option?.required || (option?.optional && next !== undefined && !next.startsWith("-"))) i++;
      continue;
    }
    if (operands === fixed) return i;
    operands++;
  }
  return -1;
}

/** Makes everything from the program's first word on literal (see argvStart). */
function programArgvIsLiteral(cmd: Command, fixed: number): void {
  const parse = cmd.parseOptions.bind(cmd);
  cmd.parseOptions = (args: string[]) => {
    const start = argvStart(cmd, args, fixed);
    return parse(start < 0 ? args : [...args.slice(0, start), "--", ...args.slice(start)]);
  };
}

/**
 * Applies the rules above to a program whose commands are all defined. The program must have been
 * made with enablePositionalOptions() before its subcommands (they inherit it when created).
 */
export function finishCommandLine(program: Command): void {
  /** Per command, the options copied from its ancestors: the owner and the attribute both use. */
  const copied = new Map<Command, Array<{ owner: Command; key: string }>>();
  for (const cmd of walk(program)) {
    cmd.configureHelp({ ...cmd.configureHelp(), showGlobalOptions: true });
    const more = cmd.commands.length > 0 ? "its commands" : "its options and examples";
    cmd.showHelpAfterError(`usage: ${pathOf(cmd)} ${cmd.usage()}\nsee '${pathOf(cmd)} --help' for ${more}`);
    if (cmd.commands.length > 0) continue;
    const copies: Array<{ owner: Command; key: string }> = [];
    for (let owner = cmd.parent; owner; owner = owner.parent) {
      for (const option of owner.options) {
        if (option.long === "--version" || cmd.options.some((o) => sameFlag(o, option))) continue;
        const copy = new Option(option.flags, option.description).hideHelp();
        if (option.parseArg) copy.argParser(option.parseArg);
        if (option.argChoices) copy.choices(option.argChoices);
        cmd.addOption(copy);
        copies.push({ owner, key: option.attributeName() });
      }
    }
    copied.set(cmd, copies);
    const args = cmd.registeredArguments;
    const last = args[args.length - 1];
    if (last?.variadic && last.name() === "argv") programArgvIsLiteral(cmd, args.length - 1);
  }
  // Before an action: what was given to a hidden copy goes to the command that owns the option, where
  // the action reads it (program.opts().address, cluster.opts().aggregator).
  program.hook("preAction", (_program, action) => {
    for (const { owner, key } of copied.get(action) ?? []) {
      if (action.getOptionValueSource(key) === "cli") owner.setOptionValueWithSource(key, action.getOptionValue(key), "cli");
    }
  });
}
