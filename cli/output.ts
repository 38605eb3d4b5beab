// How commands talk to people and scripts: one human line by default, JSON
// with --json, progress bars only on a terminal, and one error line on failure.
import { describeError } from "../errors.js";
import type { CopyEvent } from "../registry/index.js";

export interface OutputOptions {
  json?: boolean;
}

/** Prints `human` for people, or `data` as JSON for scripts. */
export function report(options: OutputOptions, human: string, data: unknown): void {
  process.stdout.write(options.json ? JSON.stringify(data, null, 2) + "\n" : human + "\n");
}

export function fail(err: unknown): never {
  process.stderr.write(`aegis: error: ${describeError(err)}\n`);
  if (process.env.AEGIS_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  process.exit(1);
}

const MiB = 1024 * 1024;

/**
 * A one-line progress bar on stderr for copies, drawn only when stderr is a
 * terminal (and not with --json), so logs and pipes stay clean.
 */
export function progressBar(label: string, options: OutputOptions): { onEvent?: (event: CopyEvent) => void; finish(): void } {
  if (!process.stderr.isTTY || options.json) return { finish() {} };
  let total = 0;
  let done = 0;
  let lastDraw = 0;
  const draw = (force = false) => {
    const now = Date.now();
    if (!force && now - lastDraw < 100) return;
    lastDraw = now;
    const width = 30;
    const filled = total > 0 ? Math.round((done / total) * width) : 0;
    const bar = "#".repeat(filled) + "-".repeat(width - filled);
    process.stderr.write(`\r${label} [${bar}] ${(done / MiB).toFixed(1)}/${(total / MiB).toFixed(1)} MiB`);
  };
  return {
    onEvent(event) {
      if (event.kind === "start") total += event.desc.size;
      if (event.kind === "bytes") done += event.bytes;
      draw();
    },
    finish() {
      if (total > 0) {
        draw(true);
        process.stderr.write("\n");
      }
    },
  };
}
