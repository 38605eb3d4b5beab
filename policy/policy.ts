// The policy source format (DESIGN.md "Policy source") and its normalized
// form, which is what goes into a bundle as policy.json and what the
// datapath compiler in ebpf/ reads.
import { readFile } from "node:fs/promises";
import { parseDocument } from "yaml";
import { z } from "zod";
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

const cidrText = z.string().transform((text, ctx) => {
  try {
    return formatCidr(parseCidr(text));
  } catch (err) {
    ctx.addIssue({ code: "custom", message: (err as Error).message });
    return z.NEVER;
  }
});

// "443", 443, "1000-2000", or the normalized { from, to } of policy.json.
const portRange = z
  .union([z.number(), z.string(), z.strictObject({ from: z.number(), to: z.number() })])
  .transform((value, ctx) => {
    const text = typeof value === "object" ? `${value.from}-${value.to}` : String(value).trim();
    const match = /^(\d{1,5})(?:\s*-\s*(\d{1,5}))?$/.exec(text);
    const from = match ? Number(match[1]) : NaN;
    const to = match ? Number(match[2] ?? match[1]) : NaN;
    if (!match || from < 1 || to > 65535 || from > to) {
      ctx.addIssue({ code: "custom", message: `"${text}" is not a port or a range like "1000-2000" within 1-65535` });
      return z.NEVER;
    }
    return { from, to };
  });

const ruleSchema = z
  .strictObject({
    action: z.enum(["drop", "allow"]),
    dst: cidrText.optional(),
    src: cidrText.optional(),
    protocol: z.enum(["icmp", "tcp", "udp", "any"]).default("any"),
    ports: portRange.optional(),
  })
  .superRefine((rule, ctx) => {
    if (rule.ports && rule.protocol !== "tcp" && rule.protocol !== "udp") {
      ctx.addIssue({ code: "custom", path: ["ports"], message: `ports need protocol tcp or udp, not ${rule.protocol}` });
    }
    if (rule.dst && rule.src && cidrFamily(rule.dst) !== cidrFamily(rule.src)) {
      ctx.addIssue({ code: "custom", path: ["src"], message: "src and dst must be the same address family" });
    }
  });

const policySchema = z.strictObject({
  name: z.string().regex(NAME, "lowercase letters, digits, '.', '_' or '-', at most 64"),
  version: z.string().regex(SEMVER, "a semantic version like 1.0.0"),
  description: z.string().default(""),
  program: z.string().regex(/^[a-z0-9_]+$/, "an eBPF program name like aegis_net"),
  attach: z
    .strictObject({
      hook: z.literal("tc"),
      direction: z.enum(["egress", "ingress", "both"]).default("egress"),
    })
    .default({ hook: "tc", direction: "egress" }),
  rules: z.array(ruleSchema).min(1, "a policy needs at least one rule"),
});

/** Validates a parsed policy document; `source` names the file in errors. */
export function normalizePolicy(document: unknown, source: string): Policy {
  const result = policySchema.safeParse(document);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const field = formatPath(issue.path);
    throw new InputError("INVALID_POLICY", `${source}: ${field ? `${field}: ` : ""}${issue.message}`);
  }
  return result.data as Policy;
}

/** Reads and validates `<dir>/policy.yaml` (or a policy file path). */
export async function loadPolicy(path: string): Promise<Policy> {
  const file = path.endsWith(".yaml") || path.endsWith(".yml") ? path : `${path.replace(/\/$/, "")}/policy.yaml`;
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new InputError("FILE_NOT_FOUND", `${file}: cannot read policy file`, { cause: err });
  }
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    const first = doc.errors[0]!;
    const line = first.linePos?.[0]?.line;
    throw new InputError("INVALID_POLICY", `${file}${line ? `:${line}` : ""}: invalid YAML: ${first.message.split("\n")[0]!.replace(/ at line \d+, column \d+:?$/, "")}`);
  }
  return normalizePolicy(doc.toJS(), file);
}

function formatPath(path: PropertyKey[]): string {
  return path.reduce<string>(
    (out, key) => (typeof key === "number" ? `${out}[${key}]` : out ? `${out}.${String(key)}` : String(key)),
    "",
  );
}

function cidrFamily(text: string): 4 | 6 {
  return text.includes(":") ? 6 : 4;
}
