// Label selectors, as Kubernetes writes them (equality- and set-based):
// `env=prod,zone in (a,b),!canary`. An assignment to a selector reaches every
// registered host whose labels (sent by its agent at registration) match, now
// and when it registers later. Parsed and bounded here, once, for the
// assigner and for fleet files; the canonical text (requirements sorted, set
// values sorted and unique, `==` as `=`) is what is stored and compared.
// https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors
import { AssignerError } from "./errors.js";

export const SELECTOR_MAX_LENGTH = 1024;
export const SELECTOR_MAX_REQUIREMENTS = 32;
const SELECTOR_MAX_VALUES = 64;

/** A label key as the agents' labels allow it (schemas.ts Labels). */
const KEY = /^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$/;
/** A value a selector can name: Kubernetes' label value syntax (empty allowed). */
const VALUE = /^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$/;

export type Requirement =
  | { key: string; op: "=" | "!="; value: string }
  | { key: string; op: "in" | "notin"; values: string[] }
  | { key: string; op: "exists" | "!exists" };

export interface Selector {
  requirements: Requirement[];
  /** The canonical text: the same selector always reads the same. */
  text: string;
}

function refuse(text: string, why: string): never {
  throw new AssignerError("BAD_REQUEST", `selector "${text.length > 80 ? `${text.slice(0, 80)}…` : text}": ${why}`);
}

/** Splits on commas outside parentheses. */
function splitTop(text: string, source: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "(") depth++;
    else if (c === ")") depth--;
    if (depth < 0 || depth > 1) refuse(source, "unbalanced parentheses");
    if (c === "," && depth === 0) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  if (depth !== 0) refuse(source, "unbalanced parentheses");
  parts.push(text.slice(start));
  return parts;
}

function key(k: string, source: string): string {
  if (!KEY.test(k)) refuse(source, `"${k}" is not a label key (1-63 letters, digits, '.', '_', '/' or '-', starting and ending with a letter or digit)`);
  return k;
}

function value(v: string, source: string): string {
  if (!VALUE.test(v)) refuse(source, `"${v}" is not a label value (at most 63 letters, digits, '.', '_' or '-', starting and ending with a letter or digit)`);
  return v;
}

function requirement(part: string, source: string): Requirement {
  const p = part.trim();
  if (p === "") refuse(source, "empty requirement (two commas, or a comma at an end)");
  const set = /^(\S+)\s+(in|notin)\s*\((.*)\)$/.exec(p);
  if (set) {
    const values = [...new Set(set[3]!.split(",").map((v) => value(v.trim(), source)))].sort();
    if (set[3]!.trim() === "") refuse(source, `"${p}": a set needs at least one value`);
    if (values.length > SELECTOR_MAX_VALUES) refuse(source, `"${set[1]}": at most ${SELECTOR_MAX_VALUES} values in a set`);
    return { key: key(set[1]!, source), op: set[2] as "in" | "notin", values };
  }
  const eq = /^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(p);
  if (eq) return { key: key(eq[1]!, source), op: eq[2] === "!=" ? "!=" : "=", value: value(eq[3]!, source) };
  if (p.startsWith("!")) return { key: key(p.slice(1).trim(), source), op: "!exists" };
  if (/^\S+$/.test(p)) return { key: key(p, source), op: "exists" };
  refuse(source, `cannot read "${p}" (key=value, key!=value, key in (a,b), key notin (a,b), key or !key)`);
}

function format(r: Requirement): string {
  switch (r.op) {
    case "=":
    case "!=":
      return `${r.key}${r.op}${r.value}`;
    case "in":
    case "notin":
      return `${r.key} ${r.op} (${r.values.join(",")})`;
    case "exists":
      return r.key;
    case "!exists":
      return `!${r.key}`;
  }
}

/** Parses a selector; throws BAD_REQUEST naming what is wrong. An empty selector (every host) is refused: name a label. */
export function parseSelector(text: string): Selector {
  if (text.length > SELECTOR_MAX_LENGTH) refuse(text, `longer than ${SELECTOR_MAX_LENGTH} characters`);
  if (text.trim() === "") refuse(text, "empty: a selector needs at least one requirement (an empty one would match every host)");
  const parts = splitTop(text, text);
  if (parts.length > SELECTOR_MAX_REQUIREMENTS) refuse(text, `at most ${SELECTOR_MAX_REQUIREMENTS} requirements`);
  const byText = new Map<string, Requirement>();
  for (const part of parts) {
    const r = requirement(part, text);
    byText.set(format(r), r);
  }
  const requirements = [...byText.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, r]) => r);
  return { requirements, text: requirements.map(format).join(",") };
}

/** The canonical text of a selector (parseSelector(text).text). */
export function canonicalSelector(text: string): string {
  return parseSelector(text).text;
}

/** Whether labels satisfy every requirement (Kubernetes semantics: `!=` and `notin` match a host without the key). */
export function matches(selector: Selector, labels: Readonly<Record<string, string>> | undefined): boolean {
  const has = (k: string) => labels !== undefined && Object.hasOwn(labels, k);
  return selector.requirements.every((r) => {
    const v = has(r.key) ? labels![r.key] : undefined;
    switch (r.op) {
      case "=":
        return v === r.value;
      case "!=":
        return v !== r.value;
      case "in":
        return v !== undefined && r.values.includes(v);
      case "notin":
        return v === undefined || !r.values.includes(v);
      case "exists":
        return v !== undefined;
      case "!exists":
        return v === undefined;
    }
  });
}
