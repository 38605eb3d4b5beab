// Text that others wrote, made safe to show: control characters escaped, so
// a terminal or a log reader runs no sequence of theirs; a log line and a
// quoted value bounded.

/**
 * `text` with its control characters, but for newlines and tabs, written as
 * escapes (`\x1b`, `\r`). What people read may quote what others wrote (a
 * capsule's annotations and entry names, an agent's reported reason, a
 * registry's error): a terminal must not run an escape sequence of theirs,
 * and a carriage return must not paint over a line.
 */
export function printable(text: string): string {
  // C0 and C1 controls, DEL, the line and paragraph separators and the bidi overrides (which reorder what follows).
  // eslint-disable-next-line no-control-regex -- finding control characters is the point
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (c) => {
    if (c === "\r") return "\\r";
    const code = c.charCodeAt(0);
    return code > 0xff ? `\\u${code.toString(16).padStart(4, "0")}` : `\\x${code.toString(16).padStart(2, "0")}`;
  });
}

/** `shown`, the first `max` characters of a text `length` long (as shown), saying how many more there were. */
function cut(shown: string, length: number, max: number): string {
  return length <= max ? shown : `${shown}… (${length - max} more characters)`;
}

/** The most characters of someone else's value that one error message quotes. */
const QUOTE_MAX = 128;

/**
 * `value`, which someone else wrote (a manifest's field, a signed payload's),
 * for an error message, as JSON (a string in double quotes, its own quotes
 * and control characters escaped), cut at QUOTE_MAX characters. A manifest
 * of 4 MiB can hold a media type of 4 MiB, and one error must not carry it
 * whole into a terminal, a log line or an agent's report.
 */
export function quote(value: unknown): string {
  if (typeof value === "string") {
    // printable: JSON escapes C0 controls only, not C1 ones, line separators or bidi overrides.
    return cut(printable(JSON.stringify(value.slice(0, QUOTE_MAX))), value.length, QUOTE_MAX);
  }
  let text: string;
  try {
    text = printable(JSON.stringify(value) ?? String(value));
  } catch {
    // Nested deeper than JSON.stringify goes (JSON.parse goes deeper), or not JSON at all.
    return `(a${typeof value === "object" ? "n object" : ` ${typeof value}`} that cannot be shown)`;
  }
  return cut(text.slice(0, QUOTE_MAX), text.length, QUOTE_MAX);
}

/** `text` cut at `max` characters, saying how many more there were (a reference or an error text someone else chose). */
export function clip(text: string, max: number): string {
  return cut(text.slice(0, max), text.length, max);
}

/** The most characters of one log line: a registry's error or an agent's reason can be megabytes. */
const LOG_LINE_MAX = 4096;

/** `text` on one line: printable(), newlines escaped too, so a quoted newline cannot forge a line of its own. */
export function oneLine(text: string): string {
  return printable(text).replace(/\n/g, "\\n");
}

/** `line` for an operator's log: oneLine() (one line is one entry), cut at LOG_LINE_MAX characters, saying how many were left out. */
export function logText(line: string): string {
  const text = oneLine(line);
  return cut(text.slice(0, LOG_LINE_MAX), text.length, LOG_LINE_MAX);
}
