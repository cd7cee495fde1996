// aether: the operator command line (the commands are in program.ts).
import { fail } from "./exit-codes.js";
import { exitWhenOutputGoes } from "./progress.js";
import { buildProgram } from "./program.js";
import { completeAndExit } from "./completion.js";

// A command whose reader (a pipe, a terminal) went away ends instead of running on unseen.
exitWhenOutputGoes();

// The completion scripts' helper reads the words as they are, past commander (completion.ts).
if (process.argv[2] === "__complete") await completeAndExit(buildProgram(), process.argv.slice(3));
else buildProgram().parseAsync().catch(fail);
