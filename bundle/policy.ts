// The policy source format (DESIGN.md "Policy source") and its normalized
// form, which is what goes into a bundle as policy.json and what the
// datapath compiler in ebpf/ reads.
import { readFile } from "node:fs/promises";
import { isIPv4, isIPv6 } from "node:net";
import { parseDocument } from "yaml";
import { z } from "zod";
import { InputError } from "../errors.js";

export type Action = "drop" | "allow";
export type Protocol = "icmp" | "tcp" | "udp" | "any";
export type Direction = "egress" | "ingress" | "both";

/** A CIDR normalized to its network address, e.g. "10.0.0.0/8", "2001:db8::/32". */
export interface Cidr {
  family: 4 | 6;
  /** Network address bytes (4 or 16), host bits cleared. */
  address: Uint8Array;
  prefix: number;
}

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

/** Parses "a.b.c.d/n", "x::y/n" or a bare address (a host route). */
export function parseCidr(text: string): Cidr {
  const [addr = "", prefixText, extra] = text.trim().split("/");
  if (extra !== undefined) throw new Error(`"${text}" is not a CIDR`);
  let family: 4 | 6;
  let bytes: Uint8Array;
  if (isIPv4(addr)) {
    family = 4;
    bytes = Uint8Array.from(addr.split(".").map(Number));
  } else if (isIPv6(addr)) {
    family = 6;
    bytes = parseIPv6(addr);
  } else {
    throw new Error(`"${text}" is not an IPv4 or IPv6 CIDR`);
  }
  const max = family === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!(prefix >= 0 && prefix <= max)) throw new Error(`"${text}" has a prefix length outside 0-${max}`);
  // Clear host bits so "10.1.2.3/8" and "10.0.0.0/8" are the same rule.
  for (let bit = prefix; bit < max; bit++) bytes[bit >> 3]! &= ~(0x80 >> (bit & 7));
  return { family, address: bytes, prefix };
}

function parseIPv6(addr: string): Uint8Array {
  let text = addr;
  // An embedded IPv4 tail ("::ffff:1.2.3.4") becomes two hex groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4[1]!.split(".").map(Number) as [number, number, number, number];
    text = text.slice(0, v4.index) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = "", tail] = text.split("::");
  const headGroups = head ? head.split(":") : [];
  const tailGroups = tail ? tail.split(":") : [];
  const zeros = tail === undefined ? 0 : 8 - headGroups.length - tailGroups.length;
  const groups = [...headGroups, ...Array<string>(zeros).fill("0"), ...tailGroups];
  const bytes = new Uint8Array(16);
  groups.forEach((group, i) => {
    const value = parseInt(group, 16);
    bytes[i * 2] = value >> 8;
    bytes[i * 2 + 1] = value & 0xff;
  });
  return bytes;
}

export function formatCidr(cidr: Cidr): string {
  if (cidr.family === 4) return `${Array.from(cidr.address).join(".")}/${cidr.prefix}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((cidr.address[i]! << 8) | cidr.address[i + 1]!);
  // RFC 5952: compress the longest run (length >= 2) of zero groups.
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) { bestStart = i; bestLength = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  const text =
    bestStart < 0
      ? hex.join(":")
      : `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLength).join(":")}`;
  return `${text}/${cidr.prefix}`;
}
