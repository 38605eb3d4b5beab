// aegis_net in the real kernel: decisions through BPF_PROG_TEST_RUN on
// crafted frames (and which rule's counter moved), a 100,000-CIDR policy,
// and real traffic between two network namespaces. Needs root.
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Policy, Rule } from "../../policy/index.js";
import {
  attachTc,
  compileProgram,
  compileRules,
  detachTc,
  filtersAt,
  loadProgram,
  readCounters,
  TC_ACT,
  testRun,
  unpin,
  type Pinned,
  type TcHook,
} from "../../ebpf/index.js";
import { NetnsLab, type VethPair } from "../harness/netns.js";
import { arpFrame, packet, type PacketSpec } from "./packet.js";

const PIN_ROOT = `/sys/fs/bpf/aegis-test-${process.pid}`;

beforeAll(() => {
  if (process.getuid?.() !== 0) {
    throw new Error("test/ebpf/datapath.test.ts loads eBPF programs and creates network namespaces: run it as root");
  }
});
afterAll(() => unpin(PIN_ROOT));

function policyOf(rules: Rule[]): Policy {
  return { name: "test", version: "1.0.0", description: "", program: "aegis_net", attach: { hook: "tc", direction: "egress" }, rules };
}

async function load(name: string, rules: Rule[]): Promise<Pinned> {
  const object = await compileProgram(policyOf(rules));
  return loadProgram(object, compileRules(rules), `${PIN_ROOT}/${name}`);
}

const ports = (from: number, to = from) => ({ from, to });

describe("aegis_net decisions (BPF_PROG_TEST_RUN)", () => {
  const rules: Rule[] = [
    /* 0 */ { action: "allow", dst: "10.1.2.3/32", protocol: "tcp" },
    /* 1 */ { action: "drop", dst: "10.1.0.0/16", protocol: "any" },
    /* 2 */ { action: "drop", dst: "10.2.0.0/16", protocol: "tcp", ports: ports(8000, 8080) },
    /* 3 */ { action: "drop", dst: "10.2.0.0/16", protocol: "udp", ports: ports(53) },
    /* 4 */ { action: "allow", dst: "10.2.3.0/24", protocol: "any" },
    /* 5 */ { action: "drop", dst: "10.3.0.0/16", protocol: "icmp" },
    /* 6 */ { action: "drop", src: "192.168.50.0/24", protocol: "any" },
    /* 7 */ { action: "drop", dst: "10.4.0.0/16", src: "192.168.60.0/24", protocol: "udp" },
    /* 8 */ { action: "drop", dst: "2001:db8:1::/48", protocol: "icmp" },
    /* 9 */ { action: "allow", dst: "2001:db8:1:2::/64", protocol: "tcp" },
    /* 10 */ { action: "drop", dst: "2001:db8:1::/48", protocol: "tcp", ports: ports(443) },
    /* 11 */ { action: "drop", src: "fd00:bad::/32", protocol: "udp" },
    /* 12 */ { action: "drop", dst: "2001:db8:2::/48", protocol: "udp", ports: ports(1000, 2000) },
    /* 13 */ { action: "drop", protocol: "tcp", ports: ports(6666) },
    /* 14 */ { action: "drop", dst: "10.5.0.0/16", protocol: "any" },
  ];
  const v4 = (dst: string, protocol: PacketSpec["protocol"], dport?: number, src = "172.31.0.1"): PacketSpec => ({ src, dst, protocol, dport });
  const v6 = (dst: string, protocol: PacketSpec["protocol"], dport?: number, src = "fd00:1::1"): PacketSpec => ({ src, dst, protocol, dport });
  const NONE = undefined;
  // [what, packet, verdict, index of the rule that decided (NONE: no rule)]; an allow hands the packet on (UNSPEC), its counter moved
  const cases: [string, PacketSpec | Buffer, number, number | undefined][] = [
    ["allow before a covering drop", v4("10.1.2.3", "tcp", 80), TC_ACT.UNSPEC, 0],
    ["covering drop when the allow's protocol differs", v4("10.1.2.3", "udp", 80), TC_ACT.SHOT, 1],
    ["covering drop, any protocol, icmp", v4("10.1.9.9", "icmp"), TC_ACT.SHOT, 1],
    ["tcp range, low edge", v4("10.2.9.9", "tcp", 8000), TC_ACT.SHOT, 2],
    ["tcp range, high edge", v4("10.2.9.9", "tcp", 8080), TC_ACT.SHOT, 2],
    ["tcp range, below", v4("10.2.9.9", "tcp", 7999), TC_ACT.UNSPEC, NONE],
    ["tcp range, above", v4("10.2.9.9", "tcp", 8081), TC_ACT.UNSPEC, NONE],
    ["tcp range does not match udp", v4("10.2.9.9", "udp", 8000), TC_ACT.UNSPEC, NONE],
    ["udp single port", v4("10.2.9.9", "udp", 53), TC_ACT.SHOT, 3],
    ["udp single port, below", v4("10.2.9.9", "udp", 52), TC_ACT.UNSPEC, NONE],
    ["udp single port, above", v4("10.2.9.9", "udp", 54), TC_ACT.UNSPEC, NONE],
    ["earlier shorter prefix beats later longer one", v4("10.2.3.4", "tcp", 8000), TC_ACT.SHOT, 2],
    ["longer prefix decides what earlier rules leave", v4("10.2.3.4", "tcp", 9000), TC_ACT.UNSPEC, 4],
    ["icmp rule", v4("10.3.1.1", "icmp"), TC_ACT.SHOT, 5],
    ["icmp rule does not match tcp", v4("10.3.1.1", "tcp", 80), TC_ACT.UNSPEC, NONE],
    ["v4 src rule", v4("172.16.0.1", "udp", 9, "192.168.50.7"), TC_ACT.SHOT, 6],
    ["dst + src rule", v4("10.4.1.1", "udp", 9, "192.168.60.1"), TC_ACT.SHOT, 7],
    ["dst + src rule, src outside", v4("10.4.1.1", "udp", 9, "192.168.61.1"), TC_ACT.UNSPEC, NONE],
    ["dst + src rule, other protocol", v4("10.4.1.1", "tcp", 9, "192.168.60.1"), TC_ACT.UNSPEC, NONE],
    ["ICMPv6 rule", v6("2001:db8:1:5::1", "icmp"), TC_ACT.SHOT, 8],
    ["ICMPv4 protocol number inside IPv6 is not ICMPv6", v6("2001:db8:1:5::1", 1), TC_ACT.UNSPEC, NONE],
    ["v6 allow before a covering drop", v6("2001:db8:1:2::1", "tcp", 443), TC_ACT.UNSPEC, 9],
    ["v6 tcp port", v6("2001:db8:1:3::1", "tcp", 443), TC_ACT.SHOT, 10],
    ["v6 tcp port, other port", v6("2001:db8:1:3::1", "tcp", 444), TC_ACT.UNSPEC, NONE],
    ["v6 src rule", v6("2001:db8:9::1", "udp", 9, "fd00:bad:1::5"), TC_ACT.SHOT, 11],
    ["v6 udp range, low edge", v6("2001:db8:2::9", "udp", 1000), TC_ACT.SHOT, 12],
    ["v6 udp range, high edge", v6("2001:db8:2::9", "udp", 2000), TC_ACT.SHOT, 12],
    ["v6 udp range, below", v6("2001:db8:2::9", "udp", 999), TC_ACT.UNSPEC, NONE],
    ["v6 udp range, above", v6("2001:db8:2::9", "udp", 2001), TC_ACT.UNSPEC, NONE],
    ["address-less rule, v4", v4("8.8.8.8", "tcp", 6666), TC_ACT.SHOT, 13],
    ["address-less rule, v6", v6("2001:db8:9::1", "tcp", 6666), TC_ACT.SHOT, 13],
    ["address-less rule, other protocol", v4("8.8.8.8", "udp", 6666), TC_ACT.UNSPEC, NONE],
    ["last rule", v4("10.5.1.1", "udp", 9), TC_ACT.SHOT, 14],
    ["no match, v4", v4("172.16.0.1", "udp", 9), TC_ACT.UNSPEC, NONE],
    ["no match, v6", v6("2001:db8:ffff::1", "tcp", 443), TC_ACT.UNSPEC, NONE],
    ["not IP (ARP)", arpFrame(), TC_ACT.UNSPEC, NONE],
    ["IPv6 extension headers are skipped", { ...v6("2001:db8:1:3::1", "tcp", 443), extensions: ["hopopts", "dstopts"] }, TC_ACT.SHOT, 10],
    ["six IPv6 extension headers (the walk's bound) are skipped", { ...v6("2001:db8:1:3::1", "tcp", 443), extensions: Array(6).fill("dstopts") }, TC_ACT.SHOT, 10],
    ["seven IPv6 extension headers: dropped, not let past the port rules", { ...v6("2001:db8:ffff::1", "tcp", 80), extensions: Array(7).fill("dstopts") }, TC_ACT.SHOT, NONE],
    ["v6 later fragment has no ports", { ...v6("2001:db8:1:3::1", "tcp", 443), laterFragment: true }, TC_ACT.UNSPEC, NONE],
    ["v4 later fragment has no ports", { ...v4("10.2.9.9", "tcp", 8000), laterFragment: true }, TC_ACT.UNSPEC, NONE],
    ["truncated L4 header has no ports", packet(v4("10.2.9.9", "tcp", 8000)).subarray(0, 34), TC_ACT.UNSPEC, NONE],
    ["truncated L4 header still matches a port-less rule", packet(v4("10.1.2.3", "tcp", 80)).subarray(0, 34), TC_ACT.UNSPEC, 0],
    ["v4 later fragment still matches a port-less rule", { ...v4("10.1.2.3", "tcp", 80), laterFragment: true }, TC_ACT.UNSPEC, 0],
  ];

  let pinned: Pinned;
  beforeAll(async () => {
    pinned = await load("decisions", rules);
  }, 30_000);

  it.each(cases)("%s", async (_what, spec, verdict, ruleIndex) => {
    const before = await readCounters(pinned.mapsDir);
    const { retval } = await testRun(pinned.progPin, Buffer.isBuffer(spec) ? spec : packet(spec));
    expect(retval).toBe(verdict);
    // Exactly the deciding rule's counter moved, by one.
    const after = await readCounters(pinned.mapsDir);
    const expected = before.map((n, i) => (i === ruleIndex ? n + 1 : n));
    expect(after).toEqual(expected);
  });

  it("walks a long candidate list to its first and last rule", async () => {
    // 500 rules on one prefix: the lookup yields one slice of 500 candidates.
    const long: Rule[] = Array.from({ length: 499 }, (_, i) => ({
      action: "drop" as const, dst: "10.9.0.0/16", protocol: "udp" as const, ports: ports(i + 1),
    }));
    long.push({ action: "allow", dst: "10.9.0.0/16", protocol: "any" });
    const big = await load("long", long);
    const run = (spec: PacketSpec) => testRun(big.progPin, packet(spec)).then((r) => r.retval);
    expect(await run(v4("10.9.1.1", "udp", 1))).toBe(TC_ACT.SHOT);
    expect(await run(v4("10.9.1.1", "udp", 499))).toBe(TC_ACT.SHOT);
    expect(await run(v4("10.9.1.1", "udp", 500))).toBe(TC_ACT.UNSPEC);
    expect(await readCounters(big.mapsDir, [0, 498, 499])).toEqual([1, 1, 1]);
  }, 30_000);

  it("loads a policy of 100,000 CIDRs and decides for the first and the last", async () => {
    const address = (i: number) => `100.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
    const many: Rule[] = Array.from({ length: 100_000 }, (_, i) => ({ action: "drop", dst: `${address(i)}/32`, protocol: "tcp" }));
    const big = await load("many", many);
    const run = (dst: string) => testRun(big.progPin, packet(v4(dst, "tcp", 80))).then((r) => r.retval);
    expect(await run(address(0))).toBe(TC_ACT.SHOT);
    expect(await run(address(99_999))).toBe(TC_ACT.SHOT);
    expect(await run(address(100_000))).toBe(TC_ACT.UNSPEC);
    expect(await readCounters(big.mapsDir, [0, 1, 99_998, 99_999])).toEqual([1, 0, 0, 1]);
    // All of them, read in several bpftool processes (one answer for all would pass V8's longest string on a many-CPU host).
    const all = await readCounters(big.mapsDir);
    expect([all.length, all[0], all[99_999], all.reduce((a, b) => a + b, 0)], "length, first, last, sum").toEqual([100_000, 1, 1, 2]);
    await unpin(big.pinDir);
  }, 120_000);
});

describe("loading", () => {
  const rules: Rule[] = [{ action: "drop", dst: "8.8.8.8/32", protocol: "icmp" }];

  it("never loads over existing pins, and leaves them in place", async () => {
    const first = await load("twice", rules);
    await expect(load("twice", rules)).rejects.toMatchObject({ code: "LOAD_FAILED" });
    const { retval } = await testRun(first.progPin, packet({ src: "10.0.0.1", dst: "8.8.8.8", protocol: "icmp" }));
    expect(retval).toBe(TC_ACT.SHOT);
  });

  it("attaches no pin whose path would end a tc -batch line: a second command cannot ride along", async () => {
    const hook: TcHook = { iface: "aegis-none0", direction: "egress", pref: 1 }; // no such device: even a broken check would change nothing
    for (const pin of [`${PIN_ROOT}/x/prog/aegis_net\nqdisc del dev aegis-none0 clsact`, `${PIN_ROOT}/x/prog/a b`, `${PIN_ROOT}/x/prog/a\x1b`, `${PIN_ROOT}/x/prog/a#b`, `${PIN_ROOT}/x/prog/a\\`]) {
      await expect(attachTc(hook, pin), JSON.stringify(pin)).rejects.toMatchObject({ code: "INVALID_PIN_PATH" });
    }
  });

  it("refuses pin paths bpffs or bpftool batch cannot hold", async () => {
    const object = await compileProgram(policyOf(rules));
    for (const dir of [`${PIN_ROOT}/sha256:a.b`, "/tmp/aegis", `${PIN_ROOT}/with space`]) {
      await expect(loadProgram(object, compileRules(rules), dir)).rejects.toMatchObject({ code: "INVALID_PIN_PATH" });
    }
  });
});

describe("aegis_net on real traffic between network namespaces", () => {
  const lab = new NetnsLab();
  let pair: VethPair;
  let hook: TcHook;
  let v4B: string;
  let v6B: string;
  let server: ChildProcess | undefined;
  let received = "";

  const inA = (command: string, ...args: string[]) => pair.a.ns.exec(command, ...args);
  const ping = (address: string) => inA("ping", "-c1", "-W1", address).then(() => true, () => false);
  const tcpConnects = (port: number) =>
    inA("timeout", "2", "bash", "-c", `exec 3<>/dev/tcp/${v4B}/${port}`).then(() => true, () => false);
  const udpArrives = async (port: number) => {
    const marker = `datagram-${port}-${Date.now()}`;
    await inA("bash", "-c", `echo ${marker} > /dev/udp/${v6B}/${port}`);
    await new Promise((resolve) => setTimeout(resolve, 500));
    return received.includes(marker);
  };

  beforeAll(async () => {
    pair = await lab.vethPair("dp");
    ({ v4: v4B, v6: v6B } = pair.b);
    hook = { iface: pair.a.iface, direction: "egress", pref: 1, netns: pair.a.ns.name };
    // Listeners in B: TCP 9001/9002 accept, UDP datagrams are echoed to stdout.
    const script = `
      const net = require("node:net"), dgram = require("node:dgram");
      for (const port of [9001, 9002]) net.createServer((s) => s.destroy()).listen(port, "0.0.0.0");
      for (const port of [9003, 9004]) dgram.createSocket("udp6").on("message", (m) => process.stdout.write(m)).bind(port, "::");
      setTimeout(() => console.log("ready"), 200);`;
    const child = pair.b.ns.spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    server = child;
    child.stdout?.on("data", (chunk: Buffer) => (received += chunk.toString()));
    if (child.stdout) await once(child.stdout, "data");
  }, 30_000);

  afterAll(async () => {
    server?.kill();
    await lab.destroy();
  });

  it("drops what the rules name at egress and lets the rest through", async () => {
    // Without the program everything flows.
    expect(await ping(v4B)).toBe(true);
    expect(await tcpConnects(9001)).toBe(true);
    expect(await udpArrives(9003)).toBe(true);

    const pinned = await load("netns", [
      { action: "drop", dst: `${v4B}/32`, protocol: "icmp" },
      { action: "drop", dst: `${v4B}/32`, protocol: "tcp", ports: ports(9001) },
      { action: "drop", dst: `${v6B}/128`, protocol: "udp", ports: ports(9003) },
    ]);
    await attachTc(hook, pinned.progPin);

    expect(await ping(v4B)).toBe(false);
    expect(await tcpConnects(9001)).toBe(false);
    expect(await udpArrives(9003)).toBe(false);
    // Traffic no rule names passes (TC_ACT_UNSPEC).
    expect(await ping(v6B)).toBe(true);
    expect(await tcpConnects(9002)).toBe(true);
    expect(await udpArrives(9004)).toBe(true);
    expect(await filtersAt(hook.netns, hook.iface), "the filter, listed").toEqual([expect.objectContaining({ iface: hook.iface, direction: "egress", pref: 1 })]);
    const [icmp = 0, tcp = 0, udp = 0] = await readCounters(pinned.mapsDir);
    // A drop at egress fails ping's send (ENOBUFS) and ping retries it; TCP
    // retransmits its SYN: both may count more than once.
    expect(icmp).toBeGreaterThanOrEqual(1);
    expect(tcp).toBeGreaterThanOrEqual(1);
    expect(udp).toBe(1);

    await detachTc(hook);
    expect(await ping(v4B)).toBe(true);
  }, 60_000);

  it("two policies on one hook: an allow in the first spares nothing from the second's drops", async () => {
    // Prefs come from a hash of each policy's name: an allow must not decide for whichever policy runs after it.
    const allowing = await load("compose-allow", [{ action: "allow", dst: `${v6B}/128`, protocol: "udp" }]);
    const dropping = await load("compose-drop", [{ action: "drop", dst: `${v6B}/128`, protocol: "udp", ports: ports(9003) }]);
    const first = { ...hook, pref: 1 };
    const second = { ...hook, pref: 2 };
    await attachTc(first, allowing.progPin);
    await attachTc(second, dropping.progPin);
    try {
      expect(await udpArrives(9003), "udp 9003: allowed by the first policy, dropped by the second").toBe(false);
      expect(await udpArrives(9004), "udp 9004: allowed by the first, named by no drop").toBe(true);
      expect(await readCounters(allowing.mapsDir), "the allow's counter: both datagrams").toEqual([2]);
    } finally {
      await detachTc(second);
      await detachTc(first);
      await unpin(allowing.pinDir);
      await unpin(dropping.pinDir);
    }
  }, 60_000);

  it("lists no filters for a device that is gone (removed while the hooks are listed), and still fails on a real fault", async () => {
    // The agent lists every device's filters each pass; a container's veth may go between the qdisc listing and its own.
    expect(await filtersAt(pair.a.ns.name, "aegis-gone0"), "a device that does not exist").toEqual([]);
    await expect(filtersAt("aegis-no-such-netns", pair.a.iface), "a namespace that does not exist").rejects.toMatchObject({ code: "TC_FAILED" });
  });
});
