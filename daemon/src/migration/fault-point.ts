// Test-only: with AETHERD_FAULT=<point> in its environment, aetherd does the harm a named point stands
// for (migration.target-guest-silent: the target freezes its QEMU right after it resumed a migrated
// guest, so the guest never answers there), as a real fault would, so the path that handles it can be
// tested deterministically. Unset (always, outside tests), it does nothing. Like AETHERD_CRASH_AT
// (store/crash-point.ts), whose kill -9 is a crash, not a fault aetherd lives through.
export function faultAt(name: string): boolean {
  return process.env.AETHERD_FAULT === name;
}
