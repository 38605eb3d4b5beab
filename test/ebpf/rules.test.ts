// The map contents rules.ts produces, checked byte for byte against the
// layout aegis_net.c reads. No kernel needed.
import { describe, expect, it } from "vitest";
import type { Rule } from "../../policy/index.js";
import { compileRules, mapEntries as eachEntry, sizeDefines, type CompiledRules, type FilledMap, type MapContents } from "../../ebpf/rules.js";

/** The entries of packed contents, as an array. */
const mapEntries = (contents: MapContents) => [...eachEntry(contents)];

/** A trie as "prefix -> candidate rule indexes", resolved through aegis_cands. */
function trie(compiled: CompiledRules, map: FilledMap): Record<string, number[]> {
  const cands = mapEntries(compiled.maps.aegis_cands).map((e) => e.value.readUInt32LE(0));
  const out: Record<string, number[]> = {};
  for (const { key, value } of mapEntries(compiled.maps[map])) {
    const offset = value.readUInt32LE(0);
    const address = key.subarray(4);
    const text = address.length === 4 ? Array.from(address).join(".") : address.toString("hex");
    out[`${text}/${key.readUInt32LE(0)}`] = cands.slice(offset, offset + value.readUInt32LE(4));
  }
  return out;
}

const drop = (rule: Omit<Rule, "action" | "protocol"> & Partial<Rule>): Rule => ({ action: "drop", protocol: "any", ...rule });

describe("compileRules", () => {
  it("encodes an LPM key as u32 prefixlen (little-endian) then the address in network order", () => {
    const compiled = compileRules([drop({ dst: "8.8.8.8/32", protocol: "icmp" }), drop({ dst: "2001:db8::/32" })]);
    expect(mapEntries(compiled.maps.aegis_v4_dst).map((e) => e.key.toString("hex"))).toEqual(["2000000008080808"]);
    expect(mapEntries(compiled.maps.aegis_v6_dst).map((e) => e.key.toString("hex"))).toEqual([
      "20000000" + "20010db8" + "00".repeat(12),
    ]);
    // value: u32 offset into aegis_cands, u32 count
    expect(mapEntries(compiled.maps.aegis_v4_dst).map((e) => e.value.toString("hex"))).toEqual(["0000000001000000"]);
    expect(mapEntries(compiled.maps.aegis_v6_dst).map((e) => e.value.toString("hex"))).toEqual(["0100000001000000"]);
    expect(mapEntries(compiled.maps.aegis_cands).map((e) => [e.key.readUInt32LE(0), e.value.readUInt32LE(0)])).toEqual([[0, 0], [1, 1]]);
  });

  it("encodes struct aegis_rule: action, proto, flags, src_prefix, port_lo, port_hi, src[16]", () => {
    const compiled = compileRules([
      drop({ dst: "8.8.8.8/32", protocol: "icmp" }),
      { action: "allow", dst: "10.0.0.0/8", src: "192.168.1.0/24", protocol: "tcp", ports: { from: 1000, to: 2000 } },
      drop({ protocol: "udp" }),
    ]);
    const values = mapEntries(compiled.maps.aegis_rules).map((e) => e.value.toString("hex"));
    expect(mapEntries(compiled.maps.aegis_rules).map((e) => e.key.readUInt32LE(0))).toEqual([0, 1, 2]);
    expect(values[0]).toBe("00010000" + "0000" + "0000" + "00".repeat(16));
    expect(values[1]).toBe("01060318" + "e803" + "d007" + "c0a80100" + "00".repeat(12));
    expect(values[2]).toBe("00110000" + "0000" + "0000" + "00".repeat(16));
  });

  it("gives each prefix the rules of every covering prefix, in policy order", () => {
    const compiled = compileRules([
      { action: "allow", dst: "10.1.2.3/32", protocol: "tcp" },
      drop({ dst: "10.1.0.0/16" }),
      drop({ dst: "10.0.0.0/8", protocol: "udp" }),
      drop({ dst: "10.1.2.0/24" }),
      drop({ dst: "10.2.0.0/16" }),
    ]);
    expect(trie(compiled, "aegis_v4_dst")).toEqual({
      "10.0.0.0/8": [2],
      "10.1.0.0/16": [1, 2],
      "10.2.0.0/16": [2, 4],
      "10.1.2.0/24": [1, 2, 3],
      "10.1.2.3/32": [0, 1, 2, 3],
    });
  });

  it("puts address-less rules at /0 of both families and src-only rules in the src tries", () => {
    const compiled = compileRules([
      drop({ dst: "2001:db8::/32", protocol: "tcp" }),
      drop({ protocol: "udp", ports: { from: 53, to: 53 } }),
      drop({ src: "192.168.0.0/16" }),
      drop({ src: "fd00::/8" }),
      drop({ dst: "10.0.0.0/8", src: "172.16.0.0/12" }),
    ]);
    expect(trie(compiled, "aegis_v4_dst")).toEqual({ "0.0.0.0/0": [1], "10.0.0.0/8": [1, 4] });
    expect(trie(compiled, "aegis_v6_dst")).toEqual({
      [`${"00".repeat(16)}/0`]: [1],
      [`20010db8${"00".repeat(12)}/32`]: [0, 1],
    });
    expect(trie(compiled, "aegis_v4_src")).toEqual({ "192.168.0.0/16": [2] });
    expect(trie(compiled, "aegis_v6_src")).toEqual({ [`fd${"00".repeat(15)}/8`]: [3] });
  });

  it("stores identical candidate lists once", () => {
    const compiled = compileRules([drop({ protocol: "icmp" }), drop({ dst: "10.0.0.0/8", protocol: "tcp" })]);
    // v4 /0 and v6 /0 both list [0]; the /8 lists [0, 1].
    expect(mapEntries(compiled.maps.aegis_cands).map((e) => e.value.readUInt32LE(0))).toEqual([0, 0, 1]);
    expect(mapEntries(compiled.maps.aegis_v6_dst).map((e) => e.value.toString("hex"))).toEqual(["0000000001000000"]);
  });

  it("refuses rules whose candidate lists would pass MAX_CANDIDATES, counted before any list is built", () => {
    // 8,000 networks under 1,000 address-less rules: each network's list repeats all 1,000 (8,008,000 entries in all).
    const covering: Rule[] = Array.from({ length: 1000 }, (_, i) => ({ action: "drop", protocol: "tcp", ports: { from: i + 1, to: i + 1 } }));
    const networks: Rule[] = Array.from({ length: 8000 }, (_, i) => ({ action: "drop", dst: `10.${i >> 8}.${i & 255}.1/32`, protocol: "any" }));
    expect(() => compileRules([...covering, ...networks])).toThrow(expect.objectContaining({ code: "TOO_MANY_CANDIDATES", message: expect.stringMatching(/^the rules need up to 8010000 candidate entries, more than 8000000/) as string }));
    // 7,000 networks under the same rules fit (7,008,000 entries).
    expect(compileRules([...covering, ...networks.slice(0, 7000)]).sizes.cands, "7,000 networks").toBe(7000 * 1001 + 1000);
  });

  it("sizes every map from the policy, never below 1", () => {
    const compiled = compileRules([drop({ dst: "10.0.0.0/8" }), drop({ dst: "10.1.0.0/16" })]);
    expect(compiled.sizes).toEqual({ rules: 2, cands: 3, v4Dst: 2, v4Src: 1, v6Dst: 1, v6Src: 1 });
    expect(sizeDefines(compiled.sizes)).toEqual([
      "-DAEGIS_MAX_RULES=2",
      "-DAEGIS_MAX_CANDS=3",
      "-DAEGIS_V4_DST_ENTRIES=2",
      "-DAEGIS_V4_SRC_ENTRIES=1",
      "-DAEGIS_V6_DST_ENTRIES=1",
      "-DAEGIS_V6_SRC_ENTRIES=1",
    ]);
  });

  // How fast is bench/datapath's business; a timed assertion here failed under load.
  it("is deterministic at 100,000 CIDRs", () => {
    const rules = Array.from({ length: 100_000 }, (_, i) =>
      drop({ dst: `100.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32`, protocol: "tcp" }),
    );
    const a = compileRules(rules);
    const b = compileRules(rules);
    expect(a.sizes).toEqual({ rules: 100_000, cands: 100_000, v4Dst: 100_000, v4Src: 1, v6Dst: 1, v6Src: 1 });
    const bytes = (c: CompiledRules) => Buffer.concat(mapEntries(c.maps.aegis_v4_dst).flatMap((e) => [e.key, e.value]));
    expect(bytes(a).equals(bytes(b))).toBe(true);
  });
});
