// Ctrl-C (SIGINT) and SIGTERM during a command that moves content (pull,
// push, copy, mirror): they abort its work through an AbortSignal, so the
// work undoes what it started (a layout keeps no partial blob, a pull's temp
// directory is removed, an upload session is cancelled) and the command
// ends with one `aegis: error: interrupted by SIGINT` line and exit 1,
// instead of dying mid-write.
import { AegisError } from "../errors.js";

export interface Interrupt {
  signal: AbortSignal;
  /** Stops listening: a signal after this ends the process as Node does by default. */
  close(): void;
}

export function interruptible(): Interrupt {
  const controller = new AbortController();
  const stop = (name: NodeJS.Signals) => controller.abort(new AegisError("INTERRUPTED", `interrupted by ${name}`));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  return {
    signal: controller.signal,
    close() {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
    },
  };
}

/** Runs `work` with an interrupt's signal, listening for the signals only while it runs. */
export async function interruptibly<T>(work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const interrupt = interruptible();
  try {
    return await work(interrupt.signal);
  } finally {
    interrupt.close();
  }
}
