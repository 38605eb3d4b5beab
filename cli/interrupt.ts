// Ctrl-C (SIGINT) and SIGTERM during a command that moves content (pull,
// push, copy, mirror) or drives a rollout: they abort its work through an
// AbortSignal, so the work undoes what it started (a layout keeps no partial
// blob, a pull's temp directory is removed, an upload session is cancelled,
// a rollout rolls back) and the command prints its one `aegis: error: …`
// line. Then it ends by that signal, as skopeo, oras and other Unix tools do
// (a shell sees status 130 for SIGINT), not by exit 1: a shell only stops a
// script or a loop when the command it waited for died by the signal.
// https://www.cons.org/cracauer/sigint.html
import { AegisError } from "../errors.js";

/** What an interrupted command's work fails with (the abort's reason). */
export class Interrupted extends AegisError<"INTERRUPTED"> {
  constructor(readonly signal: NodeJS.Signals) {
    super("INTERRUPTED", `interrupted by ${signal}`);
  }
}

/** The signal that interrupted this process's work, if one did. */
let received: NodeJS.Signals | undefined;

/**
 * Runs `work` with a signal that SIGINT or SIGTERM aborts (`onSignal` is told
 * first), listening only while it runs. The first signal aborts; a second,
 * while the work undoes itself, ends the process as Node does by default.
 */
export async function interruptibly<T>(work: (signal: AbortSignal) => Promise<T>, onSignal?: (name: NodeJS.Signals) => void): Promise<T> {
  const controller = new AbortController();
  const stop = (name: NodeJS.Signals) => {
    received = name;
    onSignal?.(name);
    controller.abort(new Interrupted(name));
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  try {
    return await work(controller.signal);
  } finally {
    process.off("SIGINT", stop);
    process.off("SIGTERM", stop);
  }
}

/**
 * If a signal interrupted the work, ends the process by that same signal
 * (its listeners gone, so Node's default applies); else returns. For a
 * failing command, once its error is printed (cli/output.ts).
 */
export function dieIfInterrupted(): void {
  if (received === undefined) return;
  process.removeAllListeners(received);
  process.kill(process.pid, received);
}
