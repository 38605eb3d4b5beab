// Streamed transfers give back the memory of the Buffers they have finished
// with. A Buffer's bytes live outside the V8 heap; V8 learns of them only
// through its external-memory accounting and collects them once tens of MiB
// have piled up: a 50 MiB `aegis pull` or `push` peaked at ~32 MiB of dead
// chunks while holding ~1 MiB live. Those chunks die young, so a minor GC (a
// scavenge of the young generation: its cost follows the small young heap,
// not the bytes moved, well under a millisecond here) after every STEP bytes
// streamed frees them, and the pile stays at a few STEPs whatever the size
// (~5 MiB; a 50 MiB pull timed no slower). https://v8.dev/blog/trash-talk
import { setV8Flag } from "./v8-flags.js";

/** Bytes streamed between two minor GCs. */
const STEP = 1024 * 1024;

type MinorGc = (options: { type: "minor" }) => void;

let gc: MinorGc | null | undefined;
let sinceGc = 0;

/**
 * V8's gc() in a fresh context once the flag is set (the form Node's
 * v8.setFlagsFromString documents for flags set after start-up); null if
 * this V8 gives none, and then nothing is forced.
 */
function loadGc(): MinorGc | null {
  setV8Flag("--expose-gc");
  // node:vm is fetched here, not imported: every command loads this module at start-up.
  const found: unknown = process.getBuiltinModule("node:vm").runInNewContext("typeof gc === 'function' ? gc : null");
  return typeof found === "function" ? (found as MinorGc) : null;
}

/** Counts bytes a transfer has streamed; every STEP of them, one minor GC. */
export function streamed(bytes: number): void {
  sinceGc += bytes;
  if (sinceGc < STEP) return;
  sinceGc = 0;
  gc ??= loadGc();
  gc?.({ type: "minor" });
}
