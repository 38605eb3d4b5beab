// CIDR parsing and canonical formatting, shared by the policy schema (which
// normalizes rule addresses) and the eBPF rule compiler (which needs bytes).
import { isIPv4, isIPv6 } from "node:net";

/** A CIDR normalized to its network address, e.g. "10.0.0.0/8", "2001:db8::/32". */
export interface Cidr {
  family: 4 | 6;
  /** Network address bytes (4 or 16), host bits cleared. */
  address: Uint8Array;
  prefix: number;
  /** The text had bits set past the prefix ("8.8.8.8/24"), cleared in `address`. */
  hostBits?: boolean;
}

/** Parses "a.b.c.d/n", "x::y/n" or a bare address (a host route). */
export function parseCidr(text: string): Cidr {
  // The common case without splitting or regular expressions (policies list up to a million of them).
  const v4 = scanIPv4(text);
  if (v4) {
    const { value, prefix } = v4;
    return masked({ family: 4, address: Uint8Array.of(value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255), prefix });
  }
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
  return masked({ family, address: bytes, prefix });
}

/** Clears host bits so "10.1.2.3/8" and "10.0.0.0/8" are the same rule, noting whether any were set. */
function masked(cidr: Cidr): Cidr {
  const bytes = cidr.address;
  let hostBits = false;
  for (let bit = cidr.prefix; bit < bytes.length * 8; bit++) {
    const mask = 0x80 >> (bit & 7);
    if (bytes[bit >> 3]! & mask) {
      hostBits = true;
      bytes[bit >> 3]! &= ~mask;
    }
  }
  return hostBits ? { ...cidr, hostBits } : cidr;
}

/**
 * The canonical text of a CIDR ("10.1.2.3/8" → "10.0.0.0/8"), its family and
 * whether host bits were set. IPv4 text already canonical is returned as it is.
 */
export function canonicalCidr(text: string): { cidr: string; family: 4 | 6; hostBits: boolean } {
  const v4 = scanIPv4(text);
  if (v4) {
    const hostSize = 2 ** (32 - v4.prefix);
    const network = v4.value - (v4.value % hostSize);
    const hostBits = network !== v4.value;
    if (!hostBits && v4.canonical) return { cidr: text, family: 4, hostBits };
    return { cidr: `${network >>> 24}.${(network >>> 16) & 255}.${(network >>> 8) & 255}.${network & 255}/${v4.prefix}`, family: 4, hostBits };
  }
  const cidr = parseCidr(text);
  return { cidr: formatCidr(cidr), family: cidr.family, hostBits: cidr.hostBits === true };
}

/**
 * "a.b.c.d" or "a.b.c.d/n" in plain decimal (no leading zeros, which
 * node:net refuses too): the address as a 32-bit number and the prefix, and
 * whether the text is already canonical. Anything else is undefined, for the
 * general parser to accept or explain.
 */
function scanIPv4(text: string): { value: number; prefix: number; canonical: boolean } | undefined {
  let value = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  let i = 0;
  for (; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      if (digits > 0 && octet === 0) return undefined;
      octet = octet * 10 + c - 48;
      if (++digits > 3 || octet > 255) return undefined;
    } else if (c === 46 && digits > 0 && dots < 3) {
      value = value * 256 + octet;
      dots++;
      octet = 0;
      digits = 0;
    } else break;
  }
  if (dots !== 3 || digits === 0) return undefined;
  value = value * 256 + octet;
  if (i === text.length) return { value, prefix: 32, canonical: false };
  if (text.charCodeAt(i) !== 47 || i + 1 === text.length || i + 3 < text.length) return undefined;
  const prefixText = text.slice(i + 1);
  if (!/^(?:[1-9]?\d)$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  return prefix <= 32 ? { value, prefix, canonical: true } : undefined;
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
