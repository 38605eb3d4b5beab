// Files as a run killed mid-way leaves them, for the tests of the sweeps that
// take them once unchanged for an hour (util/atomic-write.ts STALE_TEMP_MS).
import { utimesSync, writeFileSync } from "node:fs";

/** A time past the hour, in whole seconds (as utimes keeps it on every file system): when a killed run's file last changed. */
export function overAnHourAgo(): number {
  return Math.floor((Date.now() - 61 * 60 * 1000) / 1000);
}

/** Makes `paths` look unchanged for over an hour. */
export function backdate(...paths: string[]): void {
  const then = overAnHourAgo();
  for (const path of paths) utimesSync(path, then, then);
}

/** Writes a partial file at `path`; an `old` one last changed over an hour ago. */
export function leaveFile(path: string, old: boolean): void {
  writeFileSync(path, "partial");
  if (old) backdate(path);
}
