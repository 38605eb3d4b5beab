// The policy source: policy.yaml (or policy.yml) in a policy directory, and
// the CIDR files its rules name. A rule's dst is one CIDR, a list of them,
// a file of them in the policy directory ({ file: deny.txt }: one CIDR a
// line, # comments), or a list mixing CIDRs and files. Each CIDR becomes one
// normalized rule with the rule's other fields (policy.ts), so 100,000
// networks are one YAML rule and a text file rather than 100,000 YAML objects
// (parsing those takes seconds). Every problem is reported at once, each
// naming its file and field, or its file and line.
import { readFile, realpath, stat } from "node:fs/promises";
import { dirname, isAbsolute, join, sep } from "node:path";
import { parseDocument } from "yaml";
import * as z from "zod/mini";
import { InputError } from "../errors.js";
import { canonicalCidr } from "./cidr.js";
import { checkPorts, cidrFamily, issueText, policyError, policyFields, ruleFields, type Policy, type Rule } from "./policy.js";

export interface LoadedPolicy {
  policy: Policy;
  /** The policy file read. */
  file: string;
  /** Accepted, but probably not what was meant ("8.8.8.8/24" is read as 8.8.8.0/24); each names its file and field or line. */
  warnings: string[];
}

/** Most normalized rules one policy may expand to. */
export const MAX_RULES = 1_000_000;
/** Largest CIDR file read. */
const MAX_CIDR_FILE_BYTES = 64 * 1024 * 1024;
/** At most this many warnings are spelled out; the rest are counted. */
const MAX_WARNINGS = 100;
/** A CIDR file is read no further once this many of its lines are not CIDRs. */
const MAX_FILE_PROBLEMS = 50;

const fileRef = z.strictObject({ file: z.string().check(z.minLength(1)) });
const cidrSet = z.union([z.string(), fileRef, z.array(z.union([z.string(), fileRef])).check(z.minLength(1, "a list needs at least one entry"))], {
  error: "a CIDR, { file: <path in the policy directory> }, or a list of them",
});

// CIDR texts are checked (and files read) by expand() below, over the raw document, so their problems are reported with the schema's.
const sourceSchema = z.strictObject({
  ...policyFields,
  rules: z
    .array(z.strictObject({ action: ruleFields.action, dst: z.optional(cidrSet), src: z.optional(z.string()), protocol: ruleFields.protocol, ports: ruleFields.ports }).check(z.superRefine(checkPorts)))
    .check(z.minLength(1, "a policy needs at least one rule")),
});

/** Finds the policy file: `path` itself if it names a .yaml/.yml file, else the directory's policy.yaml or policy.yml. */
async function policyFile(path: string): Promise<string> {
  if (/\.ya?ml$/.test(path)) return path;
  const dir = path.replace(/\/$/, "");
  const candidates = [`${dir}/policy.yaml`, `${dir}/policy.yml`];
  const present: string[] = [];
  for (const file of candidates) if (await stat(file).then((s) => s.isFile(), () => false)) present.push(file);
  if (present.length > 1) throw new InputError("INVALID_POLICY", `${dir}: both policy.yaml and policy.yml exist; keep one`);
  return present[0] ?? candidates[0]!;
}

/** Reads and validates a policy directory (or a policy file), expanding CIDR lists and files into normalized rules. */
export async function loadPolicy(path: string): Promise<LoadedPolicy> {
  const file = await policyFile(path);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new InputError("FILE_NOT_FOUND", `${file}: cannot read policy file`, { cause: err });
  }
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    throw policyError(
      doc.errors.map((error) => {
        const line = error.linePos?.[0]?.line;
        return `${file}${line ? `:${line}` : ""}: invalid YAML: ${error.message.split("\n")[0]!.replace(/ at line \d+, column \d+:?$/, "")}`;
      }),
    );
  }
  const document: unknown = doc.toJS();
  const problems: string[] = [];
  const warnings: string[] = [];
  const parsed = sourceSchema.safeParse(document);
  if (!parsed.success) problems.push(...parsed.error.issues.map((issue) => issueText(file, issue)));
  const { rules: cidrs, total, unlistedWarnings } = await expandCidrs(document, file, problems, warnings);
  if (total > MAX_RULES) problems.push(`${file}: rules: the policy expands to ${total} rules, more than ${MAX_RULES}`);
  if (problems.length > 0 || !parsed.success) throw policyError(problems);
  const rules: Rule[] = [];
  parsed.data.rules.forEach((rule, i) => {
    const { src, dst } = cidrs[i]!;
    if (!dst) rules.push(normalizedRule(rule, undefined, src));
    else for (const one of dst) rules.push(normalizedRule(rule, one, src));
  });
  const more = Math.max(0, warnings.length - MAX_WARNINGS) + unlistedWarnings;
  if (more > 0) warnings.splice(MAX_WARNINGS, Infinity, `and ${more} more warnings`);
  const { rules: _source, ...rest } = parsed.data;
  return { policy: { ...rest, rules }, file, warnings };
}

/** One normalized rule, its keys in policy.json's order; absent fields are left out, not undefined. */
function normalizedRule(rule: Omit<Rule, "dst" | "src">, dst: string | undefined, src: string | undefined): Rule {
  const out = { action: rule.action } as Rule;
  if (dst) out.dst = dst;
  if (src) out.src = src;
  out.protocol = rule.protocol;
  if (rule.ports) out.ports = rule.ports;
  return out;
}

interface RuleCidrs {
  /** The rule's dst CIDRs, canonical, in order; undefined for any destination. */
  dst?: string[];
  src?: string;
}

/**
 * Reads every CIDR the raw document's rules name (inline, in lists, in
 * files), whatever else is wrong with the document, so all problems come out
 * at once. Returns each rule's canonical CIDRs and the number of rules they
 * expand to; past MAX_RULES the CIDRs are only counted (the policy is
 * refused), so a file named by many rules cannot fill memory first. A rule
 * whose dst names no network at all (an empty file) is a problem: it would
 * vanish from the policy unsaid.
 */
async function expandCidrs(document: unknown, file: string, problems: string[], warnings: string[]): Promise<{ rules: RuleCidrs[]; total: number; unlistedWarnings: number }> {
  const rawRules = isRecord(document) && Array.isArray(document.rules) ? (document.rules as unknown[]) : [];
  const dir = dirname(file);
  const files = new Map<string, Promise<CidrFile>>();
  const out: RuleCidrs[] = [];
  let total = 0;
  let unlistedWarnings = 0;
  for (const [i, raw] of rawRules.entries()) {
    const rule: RuleCidrs = {};
    out.push(rule);
    if (!isRecord(raw)) continue;
    let srcFamily: 4 | 6 | undefined;
    if (typeof raw.src === "string") {
      rule.src = checkCidr(raw.src, `${file}: rules[${i}].src`, problems, warnings);
      if (rule.src) srcFamily = cidrFamily(rule.src);
    }
    const entries = Array.isArray(raw.dst) ? raw.dst.map((e: unknown, j: number) => [e, `rules[${i}].dst[${j}]`] as const) : raw.dst === undefined ? [] : [[raw.dst, `rules[${i}].dst`] as const];
    if (entries.length === 0) {
      total++;
      continue;
    }
    rule.dst = [];
    let named = 0;
    let unread = false;
    for (const [entry, field] of entries) {
      if (typeof entry === "string") {
        const cidr = checkCidr(entry, `${file}: ${field}`, problems, warnings);
        if (cidr && srcFamily && cidrFamily(cidr) !== srcFamily) problems.push(`${file}: ${field}: src and dst must be the same address family`);
        unread ||= !cidr;
        if (cidr && ++named + total <= MAX_RULES) rule.dst.push(cidr);
      } else if (isRecord(entry) && typeof entry.file === "string") {
        const name = entry.file;
        if (!files.has(name)) files.set(name, readCidrFile(dir, name));
        const list = await files.get(name)!;
        if (list.error) {
          problems.push(`${file}: ${field}.file: ${list.error}`);
          unread = true;
          continue;
        }
        // A file's problems and warnings are its own, reported once however many rules name it.
        if (!list.reported) {
          list.reported = true;
          problems.push(...list.problems);
          warnings.push(...list.warnings);
          unlistedWarnings += list.unlistedWarnings;
        }
        if (srcFamily && list.families.has(srcFamily === 4 ? 6 : 4)) {
          problems.push(`${file}: ${field}: src and dst must be the same address family (${list.path} holds IPv${srcFamily === 4 ? 6 : 4} networks)`);
        }
        unread ||= list.problems.length > 0;
        named += list.cidrs.length;
        if (named + total <= MAX_RULES) for (const cidr of list.cidrs) rule.dst.push(cidr);
      } else {
        unread = true; // refused by the schema
      }
    }
    total += named;
    if (named === 0 && !unread) problems.push(`${file}: rules[${i}].dst: names no network (an empty list or file): the rule would not be in the policy; remove it, or add a network`);
  }
  return { rules: out, total, unlistedWarnings };
}

/** A CIDR text → its canonical form, or a problem; host bits set are a warning naming the network it becomes. */
function checkCidr(text: string, where: string, problems: string[], warnings: string[]): string | undefined {
  try {
    const { cidr, hostBits } = canonicalCidr(text);
    if (hostBits) warnings.push(`${where}: ${text.trim()} has host bits set; it is read as ${cidr}`);
    return cidr;
  } catch (err) {
    problems.push(`${where}: ${(err as Error).message}`);
    return undefined;
  }
}

interface CidrFile {
  path: string;
  cidrs: string[];
  families: Set<4 | 6>;
  problems: string[];
  warnings: string[];
  /** Warnings past MAX_WARNINGS, counted, not kept. */
  unlistedWarnings: number;
  reported?: boolean;
  /** Why the file could not be read at all. */
  error?: string;
}

/** Reads `<dir>/<name>`: a plain relative path that stays inside the policy directory (symlinks resolved). */
async function readCidrFile(dir: string, name: string): Promise<CidrFile> {
  const path = join(dir, name);
  const result: CidrFile = { path, cidrs: [], families: new Set(), problems: [], warnings: [], unlistedWarnings: 0 };
  if (isAbsolute(name) || name.split(/[\\/]/).includes("..")) return { ...result, error: `"${name}" is not a relative path inside the policy directory` };
  let text: string;
  try {
    const [real, root] = await Promise.all([realpath(path), realpath(dir)]);
    if (!real.startsWith(root + sep)) return { ...result, error: `"${name}" leads outside the policy directory` };
    const info = await stat(real);
    if (!info.isFile()) return { ...result, error: `${path} is not a file` };
    if (info.size > MAX_CIDR_FILE_BYTES) return { ...result, error: `${path} is ${info.size} bytes, over the ${MAX_CIDR_FILE_BYTES}-byte limit` };
    text = await readFile(real, "utf8");
  } catch (err) {
    return { ...result, error: `cannot read ${path} (${plainError(err)})` };
  }
  // A file of the wrong kind (a log, a binary) is told after MAX_FILE_PROBLEMS lines, not with a problem for each of its millions.
  let line = 0;
  for (const raw of text.split("\n")) {
    line++;
    const hash = raw.indexOf("#");
    const entry = (hash < 0 ? raw : raw.slice(0, hash)).trim();
    if (!entry) continue;
    const cidr = checkCidr(entry, `${path}:${line}`, result.problems, result.warnings);
    if (result.warnings.length > MAX_WARNINGS) {
      result.warnings.pop();
      result.unlistedWarnings++;
    }
    if (result.problems.length >= MAX_FILE_PROBLEMS) {
      // First, so the cut at 50 listed problems (policyError) keeps it.
      result.problems.unshift(`${path}: not read past line ${line}: ${MAX_FILE_PROBLEMS} of its lines are not CIDRs (is it a list of networks?)`);
      break;
    }
    if (cidr) {
      result.cidrs.push(cidr);
      result.families.add(cidrFamily(cidr));
    }
  }
  return result;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** An fs error in plain words ("no such file"), not Node's "ENOENT: no such file or directory, open '…'". */
function plainError(err: unknown): string {
  switch ((err as NodeJS.ErrnoException).code) {
    case "ENOENT":
      return "no such file";
    case "EACCES":
      return "permission denied";
    case "EISDIR":
      return "a directory";
    default:
      return (err as Error).message;
  }
}
