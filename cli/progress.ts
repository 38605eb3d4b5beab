// Progress of long steps (push and pull of large bundles, building a policy,
// reading a fleet host by host), drawn on one line of stderr, and only when
// stderr is a terminal and the command is not printing JSON: pipes, logs and
// scripts see nothing. One module, so every command shows progress the same way.
import { isatty } from "node:tty";
import type { CopyEvent } from "../registry/index.js";

/** Where progress is drawn; process.stderr by default, a fake terminal in tests. */
export interface ProgressStream {
  isTTY?: boolean;
  write(text: string): unknown;
}

export interface ProgressOptions {
  json?: boolean;
  /** "bytes": shown in MiB; "items": shown as a count (hosts, say). Default "bytes". */
  unit?: "bytes" | "items";
  stream?: ProgressStream;
  /** Redraws at most this often, in ms; default 100. */
  intervalMs?: number;
}

export interface Progress {
  /** The bundle and registry helpers' callback shape: how much is done of how much. */
  onProgress(done: number, total: number): void;
  /** The same fed from copy()'s events (registry/copy.ts). Undefined when nothing is drawn, so callers skip the work. */
  onEvent: ((event: CopyEvent) => void) | undefined;
  /** Ends the line (drawn at 100% if anything was drawn). */
  finish(): void;
  /** Whether anything is drawn at all: a terminal, and not --json. */
  readonly active: boolean;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const WIDTH = 30;

const NOTHING: Progress = { onProgress() {}, onEvent: undefined, finish() {}, active: false };

/**
 * The stream to draw on, or undefined when there is none to draw on. Asks
 * isatty(2) before touching process.stderr: making that stream for a pipe or
 * a file costs a few ms that a command run by a script would spend for nothing.
 */
function terminal(options: ProgressOptions): ProgressStream | undefined {
  if (options.json) return undefined;
  if (options.stream) return options.stream.isTTY ? options.stream : undefined;
  return isatty(2) ? process.stderr : undefined;
}

export function startProgress(label: string, options: ProgressOptions = {}): Progress {
  const stream = terminal(options);
  if (!stream) return NOTHING;
  const interval = options.intervalMs ?? 100;
  const items = options.unit === "items";
  let done = 0;
  let total = 0;
  let lastDraw = -Infinity;
  let drawn = false;
  const draw = (force: boolean) => {
    const now = Date.now();
    if (!force && now - lastDraw < interval) return;
    lastDraw = now;
    drawn = true;
    const filled = total > 0 ? Math.min(WIDTH, Math.round((done / total) * WIDTH)) : 0;
    // \r and a clear-to-end-of-line: the line is rewritten in place.
    const amount = items ? `${done}/${total}` : total < MiB ? `${(done / KiB).toFixed(1)}/${(total / KiB).toFixed(1)} KiB` : `${(done / MiB).toFixed(1)}/${(total / MiB).toFixed(1)} MiB`;
    stream.write(`\r${label} [${"#".repeat(filled)}${"-".repeat(WIDTH - filled)}] ${amount}\x1b[K`);
  };
  // copy() sends a start per blob and bytes as they pass; the total grows as blobs start.
  const descs = new Map<string, number>();
  return {
    active: true,
    onProgress(nextDone, nextTotal) {
      done = nextDone;
      total = nextTotal;
      draw(done >= total);
    },
    onEvent(event) {
      if (event.kind === "start" && !descs.has(event.desc.digest)) {
        descs.set(event.desc.digest, event.desc.size);
        total += event.desc.size;
      }
      if (event.kind === "bytes") done += event.bytes;
      draw(false);
    },
    finish() {
      if (!drawn && total === 0) return;
      done = Math.max(done, total);
      draw(true);
      stream.write("\n");
    },
  };
}

/**
 * A step with no measure of its own (compiling a policy, say): its label on
 * the terminal while it runs, wiped when it ends, so the line that follows
 * is the command's answer alone.
 */
export async function duringStep<T>(label: string, options: ProgressOptions, work: () => Promise<T>): Promise<T> {
  const stream = terminal(options);
  if (!stream) return work();
  stream.write(`${label}…\x1b[K`);
  try {
    return await work();
  } finally {
    stream.write("\r\x1b[K");
  }
}
