// Compiles a policy's rules into the contents of aegis_net's maps (the
// layout is documented at the top of ebpf/aegis_net.c) and into the map
// sizes the object is built with. Pure: no kernel, no files.
import type { Protocol, Rule } from "../policy/index.js";
// cidr.js, not the package index: loading the rule compiler need not load YAML and zod.
import { parseCidr } from "../policy/cidr.js";
import { EbpfError } from "./errors.js";

/** The maps rules.ts fills; aegis_counters starts zeroed and is only read. */
export const FILLED_MAPS = ["aegis_v4_dst", "aegis_v4_src", "aegis_v6_dst", "aegis_v6_src", "aegis_cands", "aegis_rules"] as const;
export type FilledMap = (typeof FILLED_MAPS)[number];
export const COUNTERS_MAP = "aegis_counters";

/** One entry, as a view into its map's packed contents. */
export interface MapEntry {
  key: Buffer;
  value: Buffer;
}

/**
 * One map's contents packed the way BPF_MAP_UPDATE_BATCH takes them: `count`
 * keys back to back, and their values in the same order.
 */
export interface MapContents {
  count: number;
  keySize: number;
  valueSize: number;
  keys: Buffer;
  values: Buffer;
}

/** max_entries of each map; every one is at least 1 (the kernel refuses 0). */
export interface MapSizes {
  rules: number;
  cands: number;
  v4Dst: number;
  v4Src: number;
  v6Dst: number;
  v6Src: number;
}

export interface CompiledRules {
  sizes: MapSizes;
  maps: Record<FilledMap, MapContents>;
}

// Values shared with aegis_net.c.
const ACTION = { drop: 0, allow: 1 } as const;
const PROTO: Record<Protocol, number> = { any: 0, icmp: 1, tcp: 6, udp: 17 };
const FLAG_PORTS = 1;
const FLAG_SRC = 2;
const RULE_VALUE_SIZE = 24;
const LIST_VALUE_SIZE = 8;

/** The rules placed under one distinct prefix. */
interface Group {
  prefix: number;
  address: Uint8Array;
  /** Orders and identifies the prefix; see prefixKey. */
  key: PrefixKey;
  /** The rules placed under this very prefix, ascending. */
  own: number[];
  /** Theirs and those of every covering prefix, ascending (see candidateLists). */
  indexes: number[];
}

/**
 * Identifies a prefix and sorts like (prefix, address bytes): a number for
 * IPv4 (prefix * 2^32 + address), cheap to build and compare at 100,000
 * CIDRs; for IPv6 a string of the zero-padded prefix and the address in hex.
 */
type PrefixKey = number | string;

/**
 * The most entries aegis_cands may hold. Each prefix's slice repeats every
 * rule whose prefix covers it (an address-less rule covers all), so 100,000
 * networks under 1,000 address-less rules need 100 million: gigabytes here
 * and in the kernel, from a small policy. 8 million (64 MiB of kernel
 * memory) leaves 100,000 networks room for some 79 rules covering them all.
 */
export const MAX_CANDIDATES = 8_000_000;

export function compileRules(rules: readonly Rule[]): CompiledRules {
  const tries = { v4Dst: new Trie(), v4Src: new Trie(), v6Dst: new Trie(), v6Src: new Trie() };
  rules.forEach((rule, index) => {
    // A rule naming dst (and maybe src) lives in the dst trie and checks src
    // itself; one naming only src lives in the src trie; one naming neither
    // matches every address, so it sits at /0 in both families' dst tries.
    if (rule.dst) {
      const cidr = parseCidr(rule.dst);
      (cidr.family === 4 ? tries.v4Dst : tries.v6Dst).place(index, cidr.prefix, cidr.address);
    } else if (rule.src) {
      const cidr = parseCidr(rule.src);
      (cidr.family === 4 ? tries.v4Src : tries.v6Src).place(index, cidr.prefix, cidr.address);
    } else {
      tries.v4Dst.place(index, 0, new Uint8Array(4));
      tries.v6Dst.place(index, 0, new Uint8Array(16));
    }
  });

  const needed = Object.values(tries).reduce((sum, trie) => sum + trie.candidateCount(), 0);
  if (needed > MAX_CANDIDATES) {
    throw new EbpfError(
      "TOO_MANY_CANDIDATES",
      `the rules need up to ${needed} candidate entries, more than ${MAX_CANDIDATES}: each network's list repeats every rule covering it (rules with no dst cover all); fewer covering rules, or a policy of their own, keep it small`,
    );
  }
  const cands: number[] = [];
  // Identical candidate lists share one slice of aegis_cands: a one-rule
  // list's slice is found by its index (most lists at 100,000 CIDRs), a
  // longer one's by the joined indexes.
  const single = new Int32Array(rules.length).fill(-1);
  const slices = new Map<string, number>();
  const trieContents = (trie: Trie, addressSize: number): MapContents => {
    const lists = trie.candidateLists();
    const keySize = 4 + addressSize;
    const keys = Buffer.alloc(lists.length * keySize);
    const values = Buffer.alloc(lists.length * LIST_VALUE_SIZE);
    const [keys32, values32] = [u32View(keys), u32View(values)];
    lists.forEach(({ prefix, address, indexes }, i) => {
      let offset: number | undefined;
      if (indexes.length === 1) {
        const index = indexes[0]!;
        offset = single[index]! >= 0 ? single[index]! : (single[index] = cands.push(index) - 1);
      } else {
        const id = indexes.join(",");
        offset = slices.get(id);
        if (offset === undefined) {
          offset = cands.length;
          slices.set(id, offset);
          for (const index of indexes) cands.push(index);
        }
      }
      // struct aegis_v{4,6}_key: u32 prefixlen (host order), then the address in network order.
      const at = i * keySize;
      keys32[at >> 2] = prefix;
      for (let b = 0; b < addressSize; b++) keys[at + 4 + b] = address[b]!;
      values32[i * 2] = offset;
      values32[i * 2 + 1] = indexes.length;
    });
    return { count: lists.length, keySize, valueSize: LIST_VALUE_SIZE, keys, values };
  };

  const maps: Record<FilledMap, MapContents> = {
    aegis_v4_dst: trieContents(tries.v4Dst, 4),
    aegis_v4_src: trieContents(tries.v4Src, 4),
    aegis_v6_dst: trieContents(tries.v6Dst, 16),
    aegis_v6_src: trieContents(tries.v6Src, 16),
    aegis_cands: u32Array(cands),
    aegis_rules: ruleValues(rules),
  };
  const size = (n: number) => Math.max(1, n);
  return {
    sizes: {
      rules: size(rules.length),
      cands: size(cands.length),
      v4Dst: size(maps.aegis_v4_dst.count),
      v4Src: size(maps.aegis_v4_src.count),
      v6Dst: size(maps.aegis_v6_dst.count),
      v6Src: size(maps.aegis_v6_src.count),
    },
    maps,
  };
}

/** The entries of packed contents, one by one, as views (bpftool's batch file, tests): millions of entries are never all objects at once. */
export function* mapEntries(contents: MapContents): Generator<MapEntry> {
  const { count, keySize, valueSize, keys, values } = contents;
  for (let i = 0; i < count; i++) yield { key: keys.subarray(i * keySize, (i + 1) * keySize), value: values.subarray(i * valueSize, (i + 1) * valueSize) };
}

/** The -D flags that size aegis_net.c's maps. */
export function sizeDefines(sizes: MapSizes): string[] {
  return [
    `-DAEGIS_MAX_RULES=${sizes.rules}`,
    `-DAEGIS_MAX_CANDS=${sizes.cands}`,
    `-DAEGIS_V4_DST_ENTRIES=${sizes.v4Dst}`,
    `-DAEGIS_V4_SRC_ENTRIES=${sizes.v4Src}`,
    `-DAEGIS_V6_DST_ENTRIES=${sizes.v6Dst}`,
    `-DAEGIS_V6_SRC_ENTRIES=${sizes.v6Src}`,
  ];
}

/** The rules placed in one trie, grouped by prefix. */
class Trie {
  private readonly groups = new Map<PrefixKey, Group>();
  /** The prefix lengths rules use: only these can hold a covering prefix. */
  private readonly lengths = new Set<number>();

  /** Places rule `index` (placed in policy order, so each group's indexes ascend). */
  place(index: number, prefix: number, address: Uint8Array): void {
    const key = prefixKey(prefix, address);
    const group = this.groups.get(key);
    if (group) group.own.push(index);
    else {
      const own = [index];
      this.groups.set(key, { prefix, address, key, own, indexes: own });
    }
    this.lengths.add(prefix);
  }

  /** How many entries candidateLists() would give in all, counted without building them. */
  candidateCount(): number {
    const lengths = this.sortedLengths();
    let count = 0;
    for (const group of this.groups.values()) {
      count += group.own.length;
      for (const covering of this.covering(group, lengths)) count += covering.own.length;
    }
    return count;
  }

  private sortedLengths(): number[] {
    return [...this.lengths].sort((a, b) => a - b);
  }

  /** The groups whose prefix covers `group`'s, shortest first (`lengths`: sortedLengths()). */
  private *covering(group: Group, lengths: readonly number[]): Generator<Group> {
    for (const length of lengths) {
      if (length >= group.prefix) return;
      const covering = this.groups.get(prefixKey(length, maskAddress(group.address, length)));
      if (covering) yield covering;
    }
  }

  /**
   * For every distinct prefix, the ascending indexes of all rules whose
   * prefix covers it. A packet's longest matching prefix P gets exactly the
   * rules that contain its address: any prefix containing the address
   * either covers P or would be a longer match than P. Sorted by (prefix,
   * address), so the map contents, and thus loading, are deterministic.
   */
  candidateLists(): Group[] {
    const lengths = this.sortedLengths();
    for (const group of this.groups.values()) {
      let indexes = group.own;
      for (const covering of this.covering(group, lengths)) indexes = [...covering.own, ...indexes];
      if (indexes !== group.own) group.indexes = indexes.sort((a, b) => a - b);
    }
    const keys = [...this.groups.keys()];
    // IPv4 keys are numbers: a typed-array sort is several times faster at 100,000 prefixes.
    const sorted = keys.every((key) => typeof key === "number") ? Array.from(Float64Array.from(keys).sort()) : keys.sort((a, b) => (a < b ? -1 : 1));
    return sorted.map((key) => this.groups.get(key)!);
  }
}

function prefixKey(prefix: number, address: Uint8Array): PrefixKey {
  if (address.length === 4) return prefix * 2 ** 32 + (((address[0]! << 24) | (address[1]! << 16) | (address[2]! << 8) | address[3]!) >>> 0);
  return `${String(prefix).padStart(3, "0")}/${Buffer.from(address.buffer, address.byteOffset, address.length).toString("hex")}`;
}

function maskAddress(address: Uint8Array, prefix: number): Uint8Array {
  return address.map((byte, i) => byte & (0xff << (8 - Math.min(8, Math.max(0, prefix - i * 8)))));
}

/** aegis_cands: slot i holds cands[i]. */
function u32Array(numbers: number[]): MapContents {
  const keys = Buffer.alloc(numbers.length * 4);
  const values = Buffer.alloc(numbers.length * 4);
  const [keys32, values32] = [u32View(keys), u32View(values)];
  numbers.forEach((n, i) => {
    keys32[i] = i;
    values32[i] = n;
  });
  return { count: numbers.length, keySize: 4, valueSize: 4, keys, values };
}

/** aegis_rules: struct aegis_rule per rule index. */
function ruleValues(rules: readonly Rule[]): MapContents {
  const keys = Buffer.alloc(rules.length * 4);
  const keys32 = u32View(keys);
  const values = Buffer.alloc(rules.length * RULE_VALUE_SIZE);
  rules.forEach((rule, index) => {
    keys32[index] = index;
    const at = index * RULE_VALUE_SIZE;
    values[at] = ACTION[rule.action];
    values[at + 1] = PROTO[rule.protocol];
    let flags = 0;
    if (rule.ports) {
      flags |= FLAG_PORTS;
      values.writeUInt16LE(rule.ports.from, at + 4);
      values.writeUInt16LE(rule.ports.to, at + 6);
    }
    if (rule.dst && rule.src) {
      const src = parseCidr(rule.src);
      flags |= FLAG_SRC;
      values[at + 3] = src.prefix;
      values.set(src.address, at + 8);
    }
    values[at + 2] = flags;
  });
  return { count: rules.length, keySize: 4, valueSize: RULE_VALUE_SIZE, keys, values };
}

/**
 * The u32s of a buffer, in the host's byte order: the kernel reads map keys
 * and values in host order, and Buffer.alloc is 8-byte aligned (its own
 * ArrayBuffer, offset 0).
 */
function u32View(buffer: Buffer): Uint32Array {
  return new Uint32Array(buffer.buffer, buffer.byteOffset, buffer.length >> 2);
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n, 0);
  return b;
}
