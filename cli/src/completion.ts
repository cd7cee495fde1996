// Shell completion (issue 23, item 9). The scripts `aether completion bash|zsh|fish` prints are thin:
// each hands the words typed so far to the hidden `aether __complete WORD... CURRENT`, which walks
// the command tree (commands, their flags and the global ones, the values an option allows) and,
// where a command takes a name, asks the daemon for the names there are. It prints one candidate a
// line, already matched against CURRENT; nothing means "complete file names" (the scripts fall back
// to the shell's own file completion, e.g. for --ca FILE).
//
// It never fails loudly and never makes a shell wait: without a daemon (or an aggregator) the names
// are simply left out, every call has a deadline (NAMES_DEADLINE_MS), and the process ends within
// HARD_DEADLINE_MS whatever happens.
import type { Command, Option } from "commander";
import { connect, readClientConfig, type AetherClient } from "@aether/sdk/client";
import { configPath } from "./contexts.js";

const NAMES_DEADLINE_MS = 1000;
const HARD_DEADLINE_MS = 2000;

/** Options whose value completion must know, wherever they stand on the line. */
interface Globals {
  address?: string;
  context?: string;
  tenant?: string;
  aggregator?: string;
}

/** Lists names of one kind for the first argument of a group's commands. */
type Lister = (aether: AetherClient, globals: Globals, signal: AbortSignal) => Promise<string[]>;

const call = (signal: AbortSignal) => ({ signal, timeoutMs: NAMES_DEADLINE_MS });

/** The first argument of these groups' commands is one of these names. */
const NAMES: Record<string, Lister> = {
  exec: async (a, g, s) =>
    (await a.runtime.listExecutables({ tenant: g.tenant ?? "", pageSize: 1000 }, call(s))).executables.map((e) => e.name),
  vm: async (a, g, s) => (await a.vm.listVms({ tenant: g.tenant ?? "", pageSize: 1000 }, call(s))).vms.map((v) => v.name),
  cell: async (a, g, s) => (await a.cells.listCells({ tenant: g.tenant ?? "", pageSize: 1000 }, call(s))).cells.map((c) => c.name),
  image: async (a, g, s) => (await a.storage.listImages({ tenant: g.tenant ?? "", pageSize: 1000 }, call(s))).images.map((i) => i.name),
  storage: async (a, g, s) => (await a.storage.listVolumes({ tenant: g.tenant ?? "", pageSize: 1000 }, call(s))).volumes.map((v) => v.name),
};

/** Commands of `cluster` whose argument is a node, asked of the aggregator. */
const NODE_COMMANDS = new Set(["cordon", "drain", "uncordon", "shutdown"]);
/** Commands of `config` whose argument is a context (read from the file, no daemon). */
const CONTEXT_COMMANDS = new Set(["use-context", "delete-context", "set-context"]);
/** Groups that list nothing by name (their commands create things, or take no name). */
const CREATING = new Set(["start", "allocate", "create", "import", "deploy", "list", "ls", "pools", "nodes", "placements"]);

function ancestorsAndSelf(cmd: Command): Command[] {
  const all: Command[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) all.push(c);
  return all;
}

/** The options a command accepts, its own and its ancestors', as people see them (no hidden copies). */
function optionsOf(cmd: Command): Option[] {
  return ancestorsAndSelf(cmd).flatMap((c) => c.options.filter((o) => !o.hidden));
}

function findOption(cmd: Command, flag: string): Option | undefined {
  return ancestorsAndSelf(cmd)
    .flatMap((c) => c.options)
    .find((o) => o.short === flag || o.long === flag);
}

const visibleCommands = (cmd: Command) => cmd.commands.filter((c) => !(c as unknown as { _hidden?: boolean })._hidden);

/** The candidates for the last of `words` (the word being typed; "" after a space). */
export async function complete(program: Command, words: string[]): Promise<string[]> {
  const current = words[words.length - 1] ?? "";
  const before = words.slice(0, -1);
  let cmd = program;
  let operands = 0;
  const globals: Globals = {};
  let pendingValue: Option | undefined;
  for (let i = 0; i < before.length; i++) {
    const word = before[i] as string;
    if (word === "--") {
      pendingValue = undefined;
      operands += before.length - i;
      break;
    }
    if (word.startsWith("-") && word.length > 1) {
      const [flag, inline] = word.includes("=") ? [word.slice(0, word.indexOf("=")), word.slice(word.indexOf("=") + 1)] : [word, undefined];
      const option = findOption(cmd, flag);
      const takesValue = option !== undefined && (option.required || option.optional);
      const value = inline ?? (takesValue ? before[i + 1] : undefined);
      if (takesValue && inline === undefined) {
        if (i + 1 >= before.length) pendingValue = option;
        i++;
      }
      if (option && value !== undefined) {
        const key = option.attributeName();
        if (key === "address" || key === "context" || key === "tenant" || key === "aggregator") globals[key] = value;
      }
      continue;
    }
    const sub = cmd.commands.find((c) => c.name() === word || c.aliases().includes(word));
    if (sub && operands === 0) cmd = sub;
    else operands++;
  }
  const matching = (candidates: string[]) => [...new Set(candidates)].filter((c) => c.startsWith(current)).sort();

  // The value of an option: its choices, context names, else files (nothing).
  if (pendingValue) {
    if (pendingValue.argChoices) return matching(pendingValue.argChoices);
    if (pendingValue.attributeName() === "context") return matching(contextNames());
    return [];
  }
  if (current.startsWith("-")) {
    return matching(optionsOf(cmd).flatMap((o) => [o.long, o.short].filter((f): f is string => f !== undefined)));
  }
  const subs = visibleCommands(cmd);
  if (subs.length > 0 && operands === 0) return matching(subs.map((c) => c.name()));
  const argument = cmd.registeredArguments[operands];
  if (argument?.argChoices) return matching(argument.argChoices);
  if (operands > 0 || argument === undefined) return [];
  return matching(await liveNames(cmd, globals));
}

function contextNames(): string[] {
  try {
    return [...readClientConfig(configPath()).contexts.keys()];
  } catch {
    return [];
  }
}

/** The names the command's first argument can be, from the daemon; none when it cannot say at once. */
async function liveNames(cmd: Command, globals: Globals): Promise<string[]> {
  const group = cmd.parent?.name() ?? "";
  if (group === "config" && CONTEXT_COMMANDS.has(cmd.name())) return contextNames();
  const aggregator = group === "cluster" && NODE_COMMANDS.has(cmd.name());
  const lister: Lister | undefined = aggregator
    ? async (a, _g, s) => (await a.aggregator.listNodes({}, call(s))).nodes.map((n) => n.name)
    : CREATING.has(cmd.name())
      ? undefined
      : NAMES[group];
  if (!lister) return [];
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), NAMES_DEADLINE_MS);
  let aether: AetherClient | undefined;
  try {
    const address = aggregator ? (globals.aggregator ?? process.env.AETHER_AGGREGATOR ?? globals.address) : globals.address;
    aether = await connect({
      ...(address !== undefined && { address }),
      ...(globals.context !== undefined && { context: globals.context }),
      verify: false,
    });
    return await lister(aether, globals, abort.signal);
  } catch {
    return [];
  } finally {
    clearTimeout(timer);
    aether?.close();
  }
}

/** Runs `aether __complete WORD...`: prints the candidates and exits 0, whatever happens. */
export async function completeAndExit(program: Command, words: string[]): Promise<never> {
  setTimeout(() => process.exit(0), HARD_DEADLINE_MS).unref();
  try {
    const candidates = await complete(program, words);
    if (candidates.length > 0) process.stdout.write(`${candidates.join("\n")}\n`);
  } catch {
    // Completion says nothing rather than an error in the middle of a command line.
  }
  process.exit(0);
}

/** The scripts `aether completion SHELL` prints. */
export const SCRIPTS: Record<"bash" | "zsh" | "fish", string> = {
  // The words come from COMP_LINE where bash sets it: COMP_WORDS splits at COMP_WORDBREAKS, so
  // "-a unix:///x.sock" would arrive as "-a" "unix" ":" "///x.sock".
  bash: `# aether completion for bash. Load it now: source <(aether completion bash)
# or for every shell: aether completion bash > /etc/bash_completion.d/aether
_aether_complete() {
  local IFS=$'\\n' line
  local -a words
  if [[ -n "\${COMP_LINE-}" ]]; then
    line="\${COMP_LINE:0:COMP_POINT}"
    IFS=$' \\t' read -r -a words <<< "$line"
    [[ "$line" =~ [[:space:]]$ ]] && words+=("")
    words=("\${words[@]:1}")
  else
    words=("\${COMP_WORDS[@]:1:COMP_CWORD}")
  fi
  COMPREPLY=($(aether __complete "\${words[@]}" 2>/dev/null))
}
complete -o default -o nosort -F _aether_complete aether
`,
  zsh: `#compdef aether
# aether completion for zsh. Load it now: source <(aether completion zsh)
# or put it in a folder of $fpath as _aether.
_aether() {
  local -a candidates
  candidates=("\${(@f)$(aether __complete "\${(@)words[2,$CURRENT]}" 2>/dev/null)}")
  if [[ -n "\${candidates[1]}" ]]; then
    compadd -Q -- "\${candidates[@]}"
  else
    _files
  fi
}
if (( $+functions[compdef] )); then compdef _aether aether; fi
`,
  fish: `# aether completion for fish. Load it now: aether completion fish | source
# or for every shell: aether completion fish > ~/.config/fish/completions/aether.fish
function __aether_complete
    set -l words (commandline -opc) (commandline -ct)
    set -l candidates (aether __complete $words[2..-1] 2>/dev/null)
    if test (count $candidates) -eq 0
        __fish_complete_path (commandline -ct)
    else
        printf '%s\\n' $candidates
    end
end
complete -c aether -f -a '(__aether_complete)'
`,
};
