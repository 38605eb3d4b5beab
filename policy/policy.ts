// The normalized policy: what goes into a bundle as policy.json and what the
// datapath compiler in ebpf/ reads, one CIDR per rule side. The source format
// (source.ts) builds on the same field schemas and expands into this form.
//
// The schemas use zod's tree-shakable "mini" API: a pull or push validates
// a policy.json, and bundling only the parts of zod these schemas use loads
// in ~5 ms and ~1 MiB, where the whole of classic zod took ~25 ms and ~7 MiB
// of a command whose budget is 64 MiB. https://zod.dev/packages/mini
import * as z from "zod/mini";
import en from "zod/v4/locales/en.js";
import { InputError } from "../errors.js";
import { formatCidr, parseCidr } from "./cidr.js";

export type Action = "drop" | "allow";
export type Protocol = "icmp" | "tcp" | "udp" | "any";
export type Direction = "egress" | "ingress" | "both";

export interface Rule {
  action: Action;
  /** Destination CIDR, canonical text. Absent: any destination. */
  dst?: string;
  /** Source CIDR, canonical text. Absent: any source. */
  src?: string;
  protocol: Protocol;
  /** Destination port range, inclusive; only for tcp/udp. */
  ports?: { from: number; to: number };
}

export interface Policy {
  name: string;
  version: string;
  description: string;
  /** Name of an eBPF program in ebpf/, e.g. "aegis_net". */
  program: string;
  attach: { hook: "tc"; direction: Direction };
  rules: Rule[];
}

const NAME = /^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$/;
// Semantic Versioning 2.0.0, https://semver.org/#is-there-a-suggested-regular-expression-regex-to-check-a-semver-string
const SEMVER =
  /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$/;

// zod/mini has no messages until a locale is set (classic zod sets English when loaded).
z.config(en());

export const cidrText = z.pipe(
  z.string(),
  z.transform((text: string, ctx) => {
    try {
      return formatCidr(parseCidr(text));
    } catch (err) {
      ctx.issues.push({ code: "custom", message: (err as Error).message, input: text });
      return z.NEVER;
    }
  }),
);

// "443", 443, "1000-2000", or the normalized { from, to } of policy.json.
export const portRange = z.pipe(
  z.union([z.number(), z.string(), z.strictObject({ from: z.number(), to: z.number() })]),
  z.transform((value: number | string | { from: number; to: number }, ctx) => {
    const text = typeof value === "object" ? `${value.from}-${value.to}` : String(value).trim();
    const match = /^(\d{1,5})(?:\s*-\s*(\d{1,5}))?$/.exec(text);
    const from = match ? Number(match[1]) : NaN;
    const to = match ? Number(match[2] ?? match[1]) : NaN;
    if (!match || from < 1 || to > 65535 || from > to) {
      ctx.issues.push({ code: "custom", message: `"${text}" is not a port or a range like "1000-2000" within 1-65535`, input: value });
      return z.NEVER;
    }
    return { from, to };
  }),
);

/** A rule's fields but dst and src, as source.ts accepts them too. */
export const ruleFields = {
  action: z.enum(["drop", "allow"]),
  protocol: z._default(z.enum(["icmp", "tcp", "udp", "any"]), "any"),
  ports: z.optional(portRange),
};

/** Ports only with a protocol that has them (source.ts checks address families itself, per CIDR). */
export function checkPorts(rule: { protocol: Protocol; ports?: unknown }, ctx: z.core.$RefinementCtx): void {
  if (rule.ports && rule.protocol !== "tcp" && rule.protocol !== "udp") {
    ctx.addIssue({ code: "custom", path: ["ports"], message: `ports need protocol tcp or udp, not ${rule.protocol}` });
  }
}

const ruleSchema = z
  .strictObject({ action: ruleFields.action, dst: z.optional(cidrText), src: z.optional(cidrText), protocol: ruleFields.protocol, ports: ruleFields.ports })
  .check(
    z.superRefine((rule, ctx) => {
      checkPorts(rule, ctx);
      if (rule.dst && rule.src && cidrFamily(rule.dst) !== cidrFamily(rule.src)) {
        ctx.addIssue({ code: "custom", path: ["src"], message: "src and dst must be the same address family" });
      }
    }),
  );

/** A policy's fields but its rules, as source.ts accepts them too. */
export const policyFields = {
  name: z.string().check(z.regex(NAME, "lowercase letters, digits, '.', '_' or '-', at most 64")),
  version: z.string().check(z.regex(SEMVER, "a semantic version like 1.0.0")),
  description: z._default(z.string(), ""),
  program: z.string().check(z.regex(/^[a-z0-9_]+$/, "an eBPF program name like aegis_net")),
  attach: z._default(
    z.strictObject({
      hook: z.literal("tc"),
      direction: z._default(z.enum(["egress", "ingress", "both"]), "egress"),
    }),
    { hook: "tc", direction: "egress" },
  ),
};

const policySchema = z.strictObject({ ...policyFields, rules: z.array(ruleSchema).check(z.minLength(1, "a policy needs at least one rule")) });

/** Validates a normalized policy document (a bundle's policy.json); `source` names the file in errors, all reported at once. */
export function normalizePolicy(document: unknown, source: string): Policy {
  const result = policySchema.safeParse(document);
  if (!result.success) throw policyError(result.error.issues.map((issue) => issueText(source, issue)));
  return result.data as Policy;
}

/** At most this many problems are spelled out in one error; the rest are counted. */
const MAX_LISTED = 50;

/** One INVALID_POLICY error for every problem found, each naming its file and field (or line). */
export function policyError(problems: string[]): InputError {
  const listed = problems.slice(0, MAX_LISTED);
  if (problems.length > MAX_LISTED) listed.push(`and ${problems.length - MAX_LISTED} more problems`);
  return new InputError("INVALID_POLICY", listed.join("; "));
}

/** "file: field: message" for a zod issue. */
export function issueText(file: string, issue: z.core.$ZodIssue): string {
  const field = formatPath(issue.path);
  return `${file}: ${field ? `${field}: ` : ""}${issue.message}`;
}

export function formatPath(path: readonly PropertyKey[]): string {
  return path.reduce<string>(
    (out, key) => (typeof key === "number" ? `${out}[${key}]` : out ? `${out}.${String(key)}` : String(key)),
    "",
  );
}

export function cidrFamily(text: string): 4 | 6 {
  return text.includes(":") ? 6 : 4;
}
