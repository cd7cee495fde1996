// Test-only: with AETHERD_CRASH_AT=<point> in its environment, aetherd kills itself with SIGKILL
// when it reaches that named point, exactly as a crash there would, so recovery can be tested
// deterministically. Unset (always, outside tests), it does nothing.
export function crashPoint(name: string): void {
  if (process.env.AETHERD_CRASH_AT === name) process.kill(process.pid, "SIGKILL");
}
