// How commands talk to people and scripts: one human line (or a table with a
// header) by default, JSON with --json, and one plain error line on failure.
// Progress on a terminal is cli/progress.ts.
import { isatty } from "node:tty";
import { describeError, errorCode } from "../errors.js";
import { oneLine, printable } from "../util/index.js";
import { dieIfInterrupted } from "./interrupt.js";

export interface OutputOptions {
  json?: boolean;
}

/** The command printed its JSON document: a failure after it adds none (stdout stays one document). */
let printedJson = false;
/** The command asked for --json (set once its options are parsed; cli/main.ts). */
let jsonAsked: boolean | undefined;

/** Whether the command runs with --json: failures then also print their code as JSON. */
export function jsonOutput(asked: boolean): void {
  jsonAsked = asked;
}

/** Prints `human` for people, or `data` as JSON for scripts. */
export function report(options: OutputOptions, human: string, data: unknown): void {
  process.stdout.write(options.json ? JSON.stringify(data, null, 2) + "\n" : printable(human) + "\n");
  if (options.json) printedJson = true;
}

/** One more line for people on stdout (a step of a long command), escaped as report() does. */
export function say(line: string): void {
  process.stdout.write(`${printable(line)}\n`);
}

/** Warnings go to stderr whatever the output format, so scripts piping stdout still show them. */
export function warn(warnings: readonly string[]): void {
  for (const warning of warnings) process.stderr.write(`aegis: warning: ${printable(warning)}\n`);
}

/**
 * A table for people: a header row, then one row per item, columns padded
 * to their widest cell. Cells are escaped before they are measured (what
 * printable() escapes, and tabs and newlines, which would break a row), so
 * an agent's label or reason cannot shift the columns. With --json the
 * caller prints the data instead (report()).
 */
export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const escaped = rows.map((row) => row.map((text) => printable(text).replace(/[\t\n]/g, (c) => (c === "\t" ? "\\t" : "\\n"))));
  const widths = headers.map((h, i) => Math.max(h.length, ...escaped.map((row) => (row[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(headers), ...escaped.map(line)].join("\n");
}

/** Plain words for a system error's code (Node's `err.code`), as people say them. */
const SYSTEM_ERRORS: Readonly<Record<string, string>> = {
  ENOENT: "no such file or directory",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EISDIR: "is a directory, not a file",
  ENOTDIR: "a part of the path is not a directory",
  EEXIST: "file exists",
  ENOSPC: "no space left on the device",
  EROFS: "read-only file system",
  ECONNREFUSED: "connection refused",
};

/** OpenSSL's reasons (the last field of `error:1E08010C:DECODER routines::unsupported`) in words. */
const OPENSSL_REASONS: Readonly<Record<string, string>> = {
  unsupported: "not in a key format this reads (PEM)",
  "bad decrypt": "wrong passphrase",
  "no start line": "no PEM block found",
  "bad end line": "the PEM block is cut short",
  "interrupted or cancelled": "the key is encrypted and no passphrase was given",
};

/**
 * The one line an error is shown as: its message and causes (describeError),
 * with Node's system-error texts (`ENOENT: no such file or directory, open
 * 'x.key'`, the file often named twice) and OpenSSL's error codes turned into
 * plain words. Every command's failures pass through here.
 */
export function plainError(err: unknown): string {
  let text = describeError(err);
  // "ENOENT: no such file or directory, open 'x.key'" (or "EISDIR: illegal
  // operation on a directory, read"): plain words, the file named once.
  text = text.replace(/\b(E[A-Z]{2,}): [a-z][^,:]*(?:, \w+(?: '([^']*)')?)?/g, (match, code: string, path: string | undefined) => {
    const words = SYSTEM_ERRORS[code];
    if (!words) return match;
    return path && !text.includes(`${path}:`) ? `${path}: ${words}` : words;
  });
  // "error:1E08010C:DECODER routines::unsupported": said in words, or dropped after a message that already says it.
  text = text.replace(/(: )?error:[0-9A-F]{8}:[^:]*:[^:]*:([^:]*)/g, (_match, sep: string | undefined, reason: string) => {
    if (sep && /not a|wrong passphrase|encrypted/.test(text.slice(0, text.indexOf("error:")))) return "";
    const words = OPENSSL_REASONS[reason.trim()] ?? `the crypto library says: ${reason.trim()}`;
    return `${sep ?? ""}${words}`;
  });
  // A cause that says the same as the message once the codes are gone.
  return text.replace(/(: [^:]+)\1$/, "$1");
}

/**
 * Ends the command on `err`: one `aegis: error: …` line on stderr, exit 1
 * (or, when Ctrl-C or SIGTERM interrupted it, death by that signal).
 * With --json, stdout also gets `{"error", "code"}` (unless the command
 * already printed its JSON document there), so a script that parses the
 * command's JSON reads the failure's stable code (the first in the cause
 * chain: DIGEST_MISMATCH, NOT_VERIFIED…) there.
 */
export function fail(err: unknown): never {
  const message = plainError(err);
  // Before the options are parsed (a usage error), the command line as given says.
  const json = jsonAsked ?? process.argv.slice(2).includes("--json");
  if (json && !printedJson) process.stdout.write(`${JSON.stringify({ error: message, code: errorCode(err) })}\n`);
  // On a terminal, a progress line left mid-way (cli/progress.ts) is wiped first, so the error has its own line.
  const wipe = isatty(2) ? "\r\x1b[K" : "";
  // One line, whatever the message quotes (a capsule's annotation, a registry's answer): a newline in it would forge another.
  process.stderr.write(`${wipe}aegis: error: ${oneLine(message)}\n`);
  if (process.env.AEGIS_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  // Ctrl-C: the process ends by the signal, so a script running it stops too (cli/interrupt.ts).
  dieIfInterrupted();
  process.exit(1);
}
