// aether completion bash|zsh|fish: prints the shell's completion script (see completion.ts).
import { Argument, type Command } from "commander";
import { SCRIPTS } from "../completion.js";

export function completionCommand(program: Command): void {
  program
    .command("completion")
    .description("print the shell completion script: commands, flags and the names of what exists on the node")
    .addArgument(new Argument("<shell>", "bash, zsh or fish").choices(Object.keys(SCRIPTS)))
    .addHelpText(
      "after",
      `
Names (VMs, executables, cells, images, volumes, nodes, contexts) come from the daemon the command
line would talk to (--address, --context, AETHER_HOST...); with none reachable they are left out.

Examples:
  source <(aether completion bash)                      # this shell; add it to ~/.bashrc to keep it
  aether completion bash > /etc/bash_completion.d/aether
  aether completion zsh > "\${fpath[1]}/_aether"
  aether completion fish > ~/.config/fish/completions/aether.fish`,
    )
    .action((shell: keyof typeof SCRIPTS) => {
      process.stdout.write(SCRIPTS[shell]);
    });
}
