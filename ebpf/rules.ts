// Compiles a policy's rules into the contents of aegis_net's maps (the
// layout is documented at the top of ebpf/aegis_net.c) and into the map
// sizes the object is built with. Pure: no kernel, no files.
import type { Protocol, Rule } from "../policy/index.js";
import { parseCidr } from "../policy/index.js";

/** The maps rules.ts fills; aegis_counters starts zeroed and is only read. */
export const FILLED_MAPS = ["aegis_v4_dst", "aegis_v4_src", "aegis_v6_dst", "aegis_v6_src", "aegis_cands", "aegis_rules"] as const;
export type FilledMap = (typeof FILLED_MAPS)[number];
export const COUNTERS_MAP = "aegis_counters";

export interface MapEntry {
  key: Buffer;
  value: Buffer;
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
  maps: Record<FilledMap, MapEntry[]>;
}

// Values shared with aegis_net.c.
const ACTION = { drop: 0, allow: 1 } as const;
const PROTO: Record<Protocol, number> = { any: 0, icmp: 1, tcp: 6, udp: 17 };
const FLAG_PORTS = 1;
const FLAG_SRC = 2;
const RULE_VALUE_SIZE = 24;

/** A rule placed in one trie under one prefix. */
interface Placed {
  index: number;
  prefix: number;
  address: Uint8Array;
}

export function compileRules(rules: readonly Rule[]): CompiledRules {
  const tries = { v4Dst: [] as Placed[], v4Src: [] as Placed[], v6Dst: [] as Placed[], v6Src: [] as Placed[] };
  rules.forEach((rule, index) => {
    // A rule naming dst (and maybe src) lives in the dst trie and checks src
    // itself; one naming only src lives in the src trie; one naming neither
    // matches every address, so it sits at /0 in both families' dst tries.
    if (rule.dst) {
      const cidr = parseCidr(rule.dst);
      (cidr.family === 4 ? tries.v4Dst : tries.v6Dst).push({ index, ...cidr });
    } else if (rule.src) {
      const cidr = parseCidr(rule.src);
      (cidr.family === 4 ? tries.v4Src : tries.v6Src).push({ index, ...cidr });
    } else {
      tries.v4Dst.push({ index, prefix: 0, address: new Uint8Array(4) });
      tries.v6Dst.push({ index, prefix: 0, address: new Uint8Array(16) });
    }
  });

  const cands: number[] = [];
  // Identical candidate lists share one slice of aegis_cands.
  const slices = new Map<string, Buffer>();
  const trieEntries = (placed: Placed[]): MapEntry[] =>
    candidateLists(placed).map(({ prefix, address, indexes }) => {
      const id = indexes.join(",");
      let value = slices.get(id);
      if (!value) {
        value = Buffer.alloc(8);
        value.writeUInt32LE(cands.length, 0);
        value.writeUInt32LE(indexes.length, 4);
        slices.set(id, value);
        cands.push(...indexes);
      }
      return { key: lpmKey(prefix, address), value };
    });

  const maps: Record<FilledMap, MapEntry[]> = {
    aegis_v4_dst: trieEntries(tries.v4Dst),
    aegis_v4_src: trieEntries(tries.v4Src),
    aegis_v6_dst: trieEntries(tries.v6Dst),
    aegis_v6_src: trieEntries(tries.v6Src),
    aegis_cands: cands.map((index, slot) => ({ key: u32(slot), value: u32(index) })),
    aegis_rules: rules.map((rule, index) => ({ key: u32(index), value: ruleValue(rule) })),
  };
  const size = (n: number) => Math.max(1, n);
  return {
    sizes: {
      rules: size(rules.length),
      cands: size(cands.length),
      v4Dst: size(maps.aegis_v4_dst.length),
      v4Src: size(maps.aegis_v4_src.length),
      v6Dst: size(maps.aegis_v6_dst.length),
      v6Src: size(maps.aegis_v6_src.length),
    },
    maps,
  };
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

/**
 * For every distinct prefix, the ascending indexes of all rules whose prefix
 * covers it. A packet's longest matching prefix P gets exactly the rules
 * that contain its address: any prefix containing the address either covers
 * P or would be a longer match than P.
 */
function candidateLists(placed: Placed[]): { prefix: number; address: Uint8Array; indexes: number[] }[] {
  const groups = new Map<string, { prefix: number; address: Uint8Array; indexes: number[] }>();
  for (const { index, prefix, address } of placed) {
    const id = prefixId(prefix, address);
    const group = groups.get(id) ?? { prefix, address, indexes: [] };
    group.indexes.push(index);
    groups.set(id, group);
  }
  // Only lengths some rule uses can hold a covering prefix.
  const lengths = [...new Set(placed.map((p) => p.prefix))].sort((a, b) => a - b);
  const lists = [...groups.values()].map(({ prefix, address }) => {
    const indexes: number[] = [];
    for (const length of lengths) {
      if (length > prefix) break;
      const covering = groups.get(prefixId(length, maskAddress(address, length)));
      if (covering) indexes.push(...covering.indexes);
    }
    return { prefix, address, indexes: indexes.sort((a, b) => a - b) };
  });
  // A stable order keeps the batch file, and thus loading, deterministic.
  return lists.sort((a, b) => a.prefix - b.prefix || Buffer.compare(a.address, b.address));
}

function prefixId(prefix: number, address: Uint8Array): string {
  return `${prefix}/${Buffer.from(address).toString("hex")}`;
}

function maskAddress(address: Uint8Array, prefix: number): Uint8Array {
  return address.map((byte, i) => byte & (0xff << (8 - Math.min(8, Math.max(0, prefix - i * 8)))));
}

/** struct aegis_v{4,6}_key: u32 prefixlen (host order), then the address in network order. */
function lpmKey(prefix: number, address: Uint8Array): Buffer {
  const key = Buffer.alloc(4 + address.length);
  key.writeUInt32LE(prefix, 0);
  key.set(address, 4);
  return key;
}

/** struct aegis_rule. */
function ruleValue(rule: Rule): Buffer {
  const value = Buffer.alloc(RULE_VALUE_SIZE);
  value[0] = ACTION[rule.action];
  value[1] = PROTO[rule.protocol];
  let flags = 0;
  if (rule.ports) {
    flags |= FLAG_PORTS;
    value.writeUInt16LE(rule.ports.from, 4);
    value.writeUInt16LE(rule.ports.to, 6);
  }
  if (rule.dst && rule.src) {
    const src = parseCidr(rule.src);
    flags |= FLAG_SRC;
    value[3] = src.prefix;
    value.set(src.address, 8);
  }
  value[2] = flags;
  return value;
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n, 0);
  return b;
}
