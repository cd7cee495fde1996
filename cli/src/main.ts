// aether: the operator command line (the commands are in program.ts).
import { fail } from "./exit-codes.js";
import { exitWhenOutputGoes } from "./progress.js";
import { buildProgram } from "./program.js";

// A command whose reader (a pipe, a terminal) went away ends instead of running on unseen.
exitWhenOutputGoes();

buildProgram().parseAsync().catch(fail);
