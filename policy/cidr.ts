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

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\/(\d{1,2}))?$/;

/** Parses "a.b.c.d/n", "x::y/n" or a bare address (a host route). */
export function parseCidr(text: string): Cidr {
  // The common case without splitting (policies list up to a million of them).
  const v4 = IPV4.exec(text);
  if (v4) {
    const octets = [v4[1], v4[2], v4[3], v4[4]].map((o) => (o!.length > 1 && o!.startsWith("0") ? NaN : Number(o)));
    const prefix = v4[5] === undefined ? 32 : Number(v4[5]);
    if (octets.every((o) => o <= 255) && prefix <= 32) return masked({ family: 4, address: Uint8Array.from(octets), prefix });
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
