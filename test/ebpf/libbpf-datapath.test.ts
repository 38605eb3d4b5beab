// LibbpfDatapath as root: the kernel Datapath suite (conformance, crash
// recovery, real traffic) on a veth pair this file creates, and what only
// the libbpf loader has: errors carrying errno names and libbpf's log, the
// bounds it checks before filling, 100,000 rules read back in batches,
// pins bpftool adopts (and the other way round), and the fallback to
// bpftool when the library cannot be loaded.
import { execFileSync } from "node:child_process";
import { mkdtemp, readdir, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  BpftoolDatapath,
  compileProgram,
  compileRules,
  compileSource,
  LibbpfDatapath,
  openKernelDatapath,
  TC_ACT,
  testRun,
  type CompiledRules,
  type EbpfError,
} from "../../ebpf/index.js";
import type { Rule } from "../../policy/index.js";
import { idOf, RULES } from "./datapath-conformance.js";
import { kernelDatapathSuite, kernelLab, policyOf } from "./kernel-datapath.js";
import { packet } from "./packet.js";

const lab = kernelLab("dpl");

kernelDatapathSuite("libbpf", lab, (options) => new LibbpfDatapath(options));

/** The pins left under a pin root (none after a refused load). */
const pins = (root: string) => readdir(root).catch(() => []);

describe("LibbpfDatapath errors", () => {
  it("refuses an object the verifier rejects with LOAD_FAILED, EACCES and the verifier's reason, pinning nothing", async () => {
    // Reads packet data with no bounds check: a valid object the verifier refuses.
    const unsafe = await compileSource("unsafe", `
#include <linux/bpf.h>
__attribute__((section("tc"), used)) int aegis_net(struct __sk_buff *skb) {
  return *(volatile unsigned char *)(long)skb->data;
}
char _license[] __attribute__((section("license"), used)) = "GPL";
`);
    const pinRoot = lab.freshPinRoot();
    const datapath = new LibbpfDatapath({ pinRoot });
    const err = (await datapath.load(idOf("unsafe"), unsafe, compileRules(RULES)).catch((e: unknown) => e)) as EbpfError;
    expect(err.code, String(err)).toBe("LOAD_FAILED");
    expect(err.message, "names the program and the errno").toMatch(/program aegis_net\).*EACCES/);
    expect(err.message, "carries the verifier's log").toContain("invalid access to packet");
    expect((err.cause as NodeJS.ErrnoException).code).toBe("EACCES");
    expect(await pins(pinRoot), "nothing pinned").toEqual([]);
    expect(await datapath.loaded()).toEqual([]);
  });

  it("both loaders refuse a program whose name is not a plain identifier (its pin's name goes into tc -batch lines), pinning nothing", async () => {
    // The kernel checks the 15 characters of a name it keeps; the pin takes the whole ELF symbol.
    const object = await compileSource("named", `
#include <linux/bpf.h>
__attribute__((section("tc"), used)) int aegis_net_0123456789_x(struct __sk_buff *skb) { return -1; }
char _license[] __attribute__((section("license"), used)) = "GPL";
`);
    const crafted = Buffer.from(object.toString("latin1").replaceAll("0123456789_x", "0123456789\nx"), "latin1");
    expect(crafted.equals(object), "the symbol was rewritten").toBe(false);
    for (const [name, datapath] of [["libbpf", LibbpfDatapath], ["bpftool", BpftoolDatapath]] as const) {
      const pinRoot = lab.freshPinRoot();
      await expect(new datapath({ pinRoot }).load(idOf("named"), crafted, compileRules(RULES)), name).rejects.toMatchObject({
        code: "LOAD_FAILED",
        message: expect.stringContaining('program is named "aegis_net_0123456789\\nx"') as string,
      });
      expect(await pins(pinRoot), `${name}: nothing pinned`).toEqual([]);
    }
  });

  it("names libbpf's own errno for an object that is not ELF", async () => {
    const datapath = new LibbpfDatapath({ pinRoot: lab.freshPinRoot() });
    const err = (await datapath.load(idOf("garbage"), Buffer.from("not an ELF object"), compileRules(RULES)).catch((e: unknown) => e)) as EbpfError;
    expect(err.code).toBe("LOAD_FAILED");
    expect(err.message).toContain("LIBBPF_ERRNO__FORMAT");
    expect(err.message, "libbpf's explanation").toContain("not a proper ELF object");
  });

  it("refuses rules the object's maps cannot hold, before filling, with the map named", async () => {
    const small = await compileProgram(policyOf(RULES.slice(0, 1)));
    const pinRoot = lab.freshPinRoot();
    const datapath = new LibbpfDatapath({ pinRoot });
    await expect(datapath.load(idOf("small"), small, compileRules(RULES)), "3 rules into maps sized for 1").rejects.toMatchObject({
      code: "MAP_MISMATCH",
      message: expect.stringMatching(/map aegis_v4_dst holds 1 entries, the rules need 3/) as string,
    });
    // Contents whose byte length disagrees with their count would make the kernel read past the buffer.
    const rules = compileRules(RULES);
    const short: CompiledRules = { ...rules, maps: { ...rules.maps, aegis_rules: { ...rules.maps.aegis_rules, values: rules.maps.aegis_rules.values.subarray(1) } } };
    const object = await compileProgram(policyOf(RULES));
    await expect(datapath.load(idOf("short"), object, short), "values one byte short").rejects.toMatchObject({ code: "MAP_MISMATCH", message: expect.stringContaining("aegis_rules") as string });
    const wide: CompiledRules = { ...rules, maps: { ...rules.maps, aegis_cands: { ...rules.maps.aegis_cands, keySize: 8, keys: Buffer.alloc(rules.maps.aegis_cands.count * 8) } } };
    await expect(datapath.load(idOf("wide"), object, wide), "8-byte keys for a 4-byte-key map").rejects.toMatchObject({ code: "MAP_MISMATCH", message: expect.stringContaining("aegis_cands has 4-byte keys") as string });
    expect(await pins(pinRoot), "nothing pinned").toEqual([]);
  });

  it("turns a kernel refusal while filling into LIBBPF_FAILED with the map, the entry and the errno name", async () => {
    const rules = compileRules(RULES);
    // An LPM key with prefixlen 40 in an IPv4 trie: the kernel refuses it (EINVAL).
    const keys = Buffer.from(rules.maps.aegis_v4_dst.keys);
    keys.writeUInt32LE(40, 8);
    const bad: CompiledRules = { ...rules, maps: { ...rules.maps, aegis_v4_dst: { ...rules.maps.aegis_v4_dst, keys } } };
    const pinRoot = lab.freshPinRoot();
    const err = (await new LibbpfDatapath({ pinRoot }).load(idOf("bad-key"), await compileProgram(policyOf(RULES)), bad).catch((e: unknown) => e)) as EbpfError;
    expect(err.code, String(err)).toBe("LIBBPF_FAILED");
    expect(err.message).toMatch(/cannot update map aegis_v4_dst \(entry 1 of 3\): EINVAL/);
    expect((err.cause as NodeJS.ErrnoException).code).toBe("EINVAL");
    expect(await pins(pinRoot), "nothing pinned").toEqual([]);
  });
});

describe("LibbpfDatapath at 100,000 rules", () => {
  it("fills them, decides for the first and the last, and reads all counters back in batches", async () => {
    const address = (i: number) => `100.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
    const many: Rule[] = Array.from({ length: 100_000 }, (_, i) => ({ action: "drop", dst: `${address(i)}/32`, protocol: "tcp" }));
    const datapath = new LibbpfDatapath({ pinRoot: lab.freshPinRoot() });
    const id = idOf("many");
    await datapath.load(id, await compileProgram(policyOf(many)), compileRules(many));
    const { progPin } = await datapath.pinned(id);
    const run = (dst: string) => testRun(progPin, packet({ src: "172.31.0.1", dst, protocol: "tcp", dport: 80 })).then((r) => r.retval);
    expect(await run(address(0)), "first").toBe(TC_ACT.SHOT);
    expect(await run(address(99_999)), "last").toBe(TC_ACT.SHOT);
    expect(await run(address(100_000)), "one past the last").toBe(TC_ACT.UNSPEC);
    expect(await datapath.counters(id, [0, 1, 99_998, 99_999])).toEqual([1, 0, 0, 1]);
    const all = await datapath.counters(id);
    expect(all, "one counter per rule, across more than one lookup batch").toHaveLength(100_000);
    expect([all[0], all[99_999], all.reduce((a, b) => a + b, 0)]).toEqual([1, 1, 2]);
    expect(await datapath.unpin(id)).toBe(true);
  }, 120_000);
});

describe("LibbpfDatapath and BpftoolDatapath share their pins", () => {
  it("each adopts what the other loaded: ids, program ids and counters", async () => {
    const pinRoot = lab.freshPinRoot();
    const libbpf = new LibbpfDatapath({ pinRoot });
    const bpftool = new BpftoolDatapath({ pinRoot });
    const object = await compileProgram(policyOf(RULES));
    const [a, b] = [idOf("by-libbpf"), idOf("by-bpftool")];
    await libbpf.load(a, object, compileRules(RULES));
    await bpftool.load(b, object, compileRules(RULES));
    expect(await bpftool.loaded(), "bpftool's view").toEqual(await libbpf.loaded());
    for (const id of [a, b]) {
      await testRun((await libbpf.pinned(id)).progPin, packet({ src: "10.98.0.1", dst: "10.99.0.2", protocol: "tcp", dport: 80 }));
      expect(await libbpf.counters(id), `counters of ${id} read by libbpf`).toEqual([0, 1, 0]);
      expect(await bpftool.counters(id), `counters of ${id} read by bpftool`).toEqual([0, 1, 0]);
      expect(await libbpf.counters(id, [1, 2])).toEqual(await bpftool.counters(id, [1, 2]));
    }
    expect(await readdir(`${pinRoot}/${(await readdir(pinRoot))[0]}`), "the same layout").toEqual(["maps", "prog"]);
    expect(await bpftool.unpin(a)).toBe(true);
    expect(await libbpf.unpin(b)).toBe(true);
  });
});

describe("LibbpfDatapath needs no compiler and no bpftool", () => {
  it("loads, attaches, reads back, counts, detaches and unpins with only tc, ip, nsenter and mount on PATH", async () => {
    const object = await compileProgram(policyOf(RULES)); // the bundle's job, before
    const bin = await mkdtemp(join(tmpdir(), "aegis-path-"));
    const path = process.env.PATH;
    try {
      for (const tool of ["tc", "ip", "nsenter", "mount"]) await symlink(execFileSync("which", [tool], { encoding: "utf8" }).trim(), join(bin, tool));
      process.env.PATH = bin;
      const onPath = (tool: string) => execFileSync("/bin/sh", ["-c", `command -v ${tool} || true`], { encoding: "utf8" }).trim();
      expect(onPath("tc"), "tc stays on PATH").not.toBe("");
      for (const missing of ["clang", "bpftool"]) expect(onPath(missing), `${missing} is off PATH`).toBe("");
      const pair = lab.pair();
      const datapath = new LibbpfDatapath({ pinRoot: lab.freshPinRoot(), netns: pair.a.ns.name });
      const id = idOf("no-toolchain");
      const hook = { iface: pair.a.iface, direction: "ingress" as const, pref: 40 };
      const { programId } = await datapath.load(id, object, compileRules(RULES));
      await datapath.attach(id, hook);
      // Other cases in this file share the namespace: look at this hook only.
      expect((await datapath.attached()).filter((a) => a.pref === hook.pref)).toEqual([{ ...hook, programId, id }]);
      expect(await datapath.loaded()).toEqual([{ id, programId }]);
      expect(await datapath.counters(id)).toEqual([0, 0, 0]);
      await datapath.detach(hook);
      expect(await datapath.unpin(id)).toBe(true);
    } finally {
      process.env.PATH = path;
      await rm(bin, { recursive: true, force: true });
    }
  });
});

describe("openKernelDatapath", () => {
  it("picks libbpf when it loads, bpftool when told, and falls back to bpftool (with the reason) only on auto", () => {
    const pinRoot = lab.freshPinRoot();
    const auto = openKernelDatapath("auto", { pinRoot });
    expect([auto.kind, auto.fallback], "auto with libbpf.so.1 here").toEqual(["libbpf", undefined]);
    expect(auto.datapath).toBeInstanceOf(LibbpfDatapath);
    expect(openKernelDatapath("bpftool", { pinRoot }).datapath).toBeInstanceOf(BpftoolDatapath);
    const missing = { pinRoot, library: "libbpf-aegis-missing.so.1" };
    const opened = openKernelDatapath("auto", missing);
    expect(opened.kind).toBe("bpftool");
    expect(opened.datapath).toBeInstanceOf(BpftoolDatapath);
    expect(opened.fallback).toContain("libbpf-aegis-missing.so.1");
    expect(() => openKernelDatapath("libbpf", missing), "libbpf insists").toThrow(expect.objectContaining({ code: "LIBBPF_UNAVAILABLE" }) as Error);
  });
});
