// Ctrl-C (SIGINT) and SIGTERM during a command that moves content (pull,
// push, copy, mirror): they abort its work through an AbortSignal, so the
// work undoes what it started (a layout keeps no partial blob, a pull's temp
// directory is removed, an upload session is cancelled) and the command
// ends with one `aegis: error: interrupted by SIGINT` line and exit 1,
// instead of dying mid-write.
import { AegisError } from "../errors.js";

/**
 * Runs `work` with a signal that SIGINT or SIGTERM aborts, listening only
 * while it runs. The first signal aborts; a second, while the work undoes
 * itself, ends the process as Node does by default.
 */
export async function interruptibly<T>(work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const stop = (name: NodeJS.Signals) => controller.abort(new AegisError("INTERRUPTED", `interrupted by ${name}`));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  try {
    return await work(controller.signal);
  } finally {
    process.off("SIGINT", stop);
    process.off("SIGTERM", stop);
  }
}
