// An engine turns "run this script with these arguments" into a command line.
export interface Permissions {
  /** Extra paths the script may read (Deno --allow-read). */
  read: string[];
  /** Paths the script may write (Deno --allow-write). */
  write: string[];
  /** Extra hosts the script may reach (Deno --allow-net). */
  net: string[];
  /** Extra environment variables the script may read (Deno --allow-env). */
  env: string[];
  /** Programs the script may run (Deno --allow-run). */
  run: string[];
  /** Everything (Deno -A). */
  all: boolean;
}

export interface EngineCommand {
  file: string;
  args: string[];
  env: NodeJS.ProcessEnv;
}

export interface RunRequest {
  /** Absolute path of the script (or of the driver that loads a manifest). */
  script: string;
  args: string[];
  permissions: Permissions;
}
