// CIDR parsing and canonical formatting, shared by the policy schema (which
// normalizes rule addresses) and the eBPF rule compiler (which needs bytes).
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
    return masked({ family: 4, address: ipv4Bytes(value), prefix });
  }
  const [addr = "", prefixText, extra] = text.trim().split("/");
  if (extra !== undefined) throw new Error(`"${text}" is not a CIDR`);
  const v4addr = scanIPv4(addr);
  const v6addr = v4addr ? undefined : parseIPv6(addr);
  if (!v4addr && !v6addr) throw new Error(`"${text}" is not an IPv4 or IPv6 CIDR`);
  const family = v4addr ? 4 : 6;
  const bytes = v4addr ? ipv4Bytes(v4addr.value) : v6addr!;
  const max = family === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!(prefix >= 0 && prefix <= max)) throw new Error(`"${text}" has a prefix length outside 0-${max}`);
  return masked({ family, address: bytes, prefix });
}

function ipv4Bytes(value: number): Uint8Array {
  return Uint8Array.of(value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255);
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

/**
 * An IPv6 address in RFC 4291's text forms (up to 8 hex groups, at most one
 * "::", an IPv4 tail as in "::ffff:192.0.2.1") as 16 bytes; undefined for
 * anything else. A zone ("fe80::1%eth0") is refused: it names an interface,
 * not part of a network. https://www.rfc-editor.org/rfc/rfc4291#section-2.2
 */
function parseIPv6(addr: string): Uint8Array | undefined {
  let text = addr;
  let v4tail: number | undefined;
  const lastColon = text.lastIndexOf(":");
  if (lastColon < 0) return undefined;
  if (text.includes(".", lastColon)) {
    const v4 = scanIPv4(text.slice(lastColon + 1));
    if (!v4) return undefined;
    v4tail = v4.value;
    // Two placeholder groups, overwritten with the IPv4 tail below.
    text = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const head = hexGroups(halves[0]!);
  const tail = halves.length === 2 ? hexGroups(halves[1]!) : [];
  if (!head || !tail) return undefined;
  const count = head.length + tail.length;
  // "::" stands for at least one group of zeros; without it there must be eight.
  if (halves.length === 2 ? count > 7 : count !== 8) return undefined;
  const groups = [...head, ...Array<number>(8 - count).fill(0), ...tail];
  if (v4tail !== undefined) groups.splice(6, 2, v4tail >>> 16, v4tail & 0xffff);
  const bytes = new Uint8Array(16);
  groups.forEach((group, i) => {
    bytes[i * 2] = group >> 8;
    bytes[i * 2 + 1] = group & 0xff;
  });
  return bytes;
}

/** "1:ab:0" → [1, 0xab, 0]; "" → []; undefined unless every group is 1-4 hex digits. */
function hexGroups(text: string): number[] | undefined {
  if (text === "") return [];
  const groups: number[] = [];
  for (const group of text.split(":")) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(group)) return undefined;
    groups.push(parseInt(group, 16));
  }
  return groups;
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
