// Packet filtering as a host sees it, against the filters people would use
// instead (issue 10): two network namespaces joined by one veth pair
// (test/harness/netns.ts), small UDP datagrams (18-byte payload, a 64-byte
// frame) sent from namespace A to B with N = 10, 1k, 10k and 100k
// non-matching rules (distinct /32s in 100.64.0.0/10; the traffic goes to
// 10.200.x.2) installed in A by:
//  - nothing (the baseline);
//  - Aegis: compileRules + Datapath.load + attach at TC egress of veth-a
//    (what the agent does with a pulled bundle; the program is built first,
//    untimed, as `aegis policy build` would); one row per Datapath in DATAPATHS;
//  - nft, an interval set matched by `ip daddr @deny drop`, at the netdev
//    egress hook of veth-a and, separately, at the inet output hook;
//  - iptables (-d per rule in OUTPUT, through iptables-restore; up to 10k).
// Install time is the whole operation: the `ip netns exec A nft -f <file>` or
// `iptables-restore` process, or Aegis's compile-rules + load + attach.
//
// The sender is bench/udp-blast.c, compiled with clang into a temp dir at
// bench time: sendmmsg(2) in batches of 64 on one core for a fixed duration.
// Egress filters run in the sender's system call, so their cost shows as
// fewer datagrams sent; the rate reported is what B's veth counted received
// (rx_packets) over the sender's measured duration. After each install a
// probe to the first and last CIDR of the set must be dropped (nothing
// arrives at B; A routes everything to B), so every row filters for real.
//
// Repeats (AEGIS_BENCH_ROUNDS, default 3) go over every N; within one the
// configurations run in an order that rotates, and each is installed afresh
// and removed after. Reported: median pps, pps relative to the median of
// all no-filter runs, median install ms, and packets per CPU-second of the
// sender (its user + system time, where the egress filters run; steadier
// than the rate when other work shares the cores). `ratio` is Aegis's
// (the first Datapath's) pps relative to no filter at 100k. Needs root; only
// the bench's own namespaces are touched.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { BpftoolDatapath, LibbpfDatapath, compileProgram, compileRules, unpin, type Datapath, type Hook } from "../ebpf/index.js";
import type { Policy, Rule } from "../policy/index.js";
import { NetnsLab, type VethPair } from "../test/harness/netns.js";
import { makeTempDir, removeTempDir, requireBinary } from "../test/harness/process.js";
import { median, type BenchResult, type Row } from "./report.js";

const execFileAsync = promisify(execFile);

// ---- The Aegis datapaths measured, one row each: add an implementation here (one line). ----
const DATAPATHS: { name: string; make(netns: string, pinRoot: string): Datapath }[] = [
  // First: the agent's default, and `ratio` reads the first row.
  { name: "aegis (libbpf)", make: (netns, pinRoot) => new LibbpfDatapath({ netns, pinRoot }) },
  { name: "aegis (bpftool)", make: (netns, pinRoot) => new BpftoolDatapath({ netns, pinRoot }) },
];

const SIZES = [10, 1_000, 10_000, 100_000];
const LARGEST = SIZES[SIZES.length - 1]!;
/** iptables walks its rules one by one; past this it measures nothing useful. */
const IPTABLES_MAX = 10_000;
const ROUNDS = Number(process.env.AEGIS_BENCH_ROUNDS ?? 3);
const SEND_MS = Number(process.env.AEGIS_BENCH_SEND_MS ?? 2_000);
const PAYLOAD = 18;
const PORT = 9;
const HOOK_PREF = 1;
const BLAST_SOURCE = fileURLToPath(new URL("./udp-blast.c", import.meta.url));

/** The i-th distinct /32 in 100.64.0.0/10 (4M of them), outside the veth's 10.200.0.0/16. */
function cidr(i: number): string {
  return `100.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32`;
}

function cidrs(n: number): string[] {
  return Array.from({ length: n }, (_, i) => cidr(i));
}

/** A filter under test: install N rules in namespace A (timed), remove them (untimed). */
interface Filter {
  name: string;
  maxRules: number;
  install(n: number): Promise<void>;
  remove(): Promise<void>;
}

interface Lab {
  pair: VethPair;
  work: string;
  blast: string;
}

async function inA(lab: Lab, command: string, ...args: string[]): Promise<string> {
  return (await lab.pair.a.ns.exec(command, ...args)).stdout;
}

async function rxPackets(lab: Lab): Promise<number> {
  const { stdout } = await execFileAsync("ip", ["-n", lab.pair.b.ns.name, "-j", "-s", "link", "show", lab.pair.b.iface]);
  const [link] = JSON.parse(stdout) as { stats64: { rx: { packets: number } } }[];
  return link!.stats64.rx.packets;
}

/** Sends from A for `ms` to `dst`; the datagrams per second (and per sender CPU-second) B's veth received. */
async function send(lab: Lab, dst: string, ms: number): Promise<{ pps: number; perCpuSecond: number; received: number }> {
  const before = await rxPackets(lab);
  const out = await inA(lab, lab.blast, dst, String(PORT), String(ms), String(PAYLOAD));
  const received = (await rxPackets(lab)) - before;
  const [, seconds, , cpuSeconds] = out.trim().split(" ").map(Number) as [number, number, number, number];
  return { pps: received / seconds, perCpuSecond: received / cpuSeconds, received };
}

/** Every filter must drop what its set holds: a burst to the first and last CIDR reaches B not at all. */
async function checkDrops(lab: Lab, filter: Filter, n: number): Promise<void> {
  for (const dst of [cidr(0), cidr(n - 1)]) {
    const { received } = await send(lab, dst.replace(/\/32$/, ""), 50);
    // A few packets of other kinds (neighbour discovery) may cross meanwhile.
    if (received > 5) throw new Error(`bench netfilter: ${filter.name} with ${n} rules let ${received} packets to ${dst} through`);
  }
}

function nftFilter(lab: Lab, name: string, family: "netdev" | "inet"): Filter {
  const hook = family === "netdev" ? `type filter hook egress device "${lab.pair.a.iface}" priority 0;` : "type filter hook output priority 0;";
  return {
    name,
    maxRules: Infinity,
    async install(n) {
      const file = join(lab.work, `nft-${family}-${n}.nft`);
      writeFileSync(
        file,
        `table ${family} aegis_bench {\n` +
          `  set deny { type ipv4_addr; flags interval; elements = { ${cidrs(n).join(", ")} } }\n` +
          `  chain out { ${hook} policy accept; ip daddr @deny drop; }\n}\n`,
      );
      await inA(lab, "nft", "-f", file);
    },
    async remove() {
      await inA(lab, "nft", "delete", "table", family, "aegis_bench");
    },
  };
}

function iptablesFilter(lab: Lab): Filter {
  return {
    name: "iptables",
    maxRules: IPTABLES_MAX,
    async install(n) {
      const file = join(lab.work, `iptables-${n}.rules`);
      writeFileSync(file, `*filter\n:OUTPUT ACCEPT [0:0]\n${cidrs(n).map((c) => `-A OUTPUT -d ${c} -j DROP`).join("\n")}\nCOMMIT\n`);
      await inA(lab, "iptables-restore", file);
    },
    async remove() {
      await inA(lab, "iptables", "-F", "OUTPUT");
    },
  };
}

function policy(n: number): Policy {
  const rules: Rule[] = cidrs(n).map((dst) => ({ action: "drop", dst, protocol: "any" }));
  return { name: `bench-${n}`, version: "1.0.0", description: "", program: "aegis_net", attach: { hook: "tc", direction: "egress" }, rules };
}

function aegisFilter(lab: Lab, name: string, datapath: Datapath, objects: Map<number, Buffer>): Filter {
  const hook: Hook = { iface: lab.pair.a.iface, direction: "egress", pref: HOOK_PREF };
  let loaded: string | undefined;
  return {
    name,
    maxRules: Infinity,
    async install(n) {
      const object = objects.get(n)!;
      const id = `sha256:${createHash("sha256").update(object).update(String(n)).digest("hex")}`;
      // What the agent does with a pulled bundle's policy.json and program.o.
      const rules = compileRules(policy(n).rules);
      await datapath.load(id, object, rules);
      loaded = id;
      await datapath.attach(id, hook);
    },
    async remove() {
      await datapath.detach(hook);
      if (loaded) await datapath.unpin(loaded);
      loaded = undefined;
    },
  };
}

const NONE: Filter = { name: "no filter", maxRules: Infinity, install: async () => {}, remove: async () => {} };

interface Samples {
  pps: number[];
  perCpuSecond: number[];
  installMs: number[];
}

export default async function netfilterBench(): Promise<BenchResult> {
  if (process.getuid?.() !== 0) throw new Error("bench netfilter creates network namespaces and loads eBPF programs: run it as root");
  for (const [binary, pkg] of [["nft", "nftables"], ["iptables-restore", "iptables"], ["clang", "clang"], ["bpftool", "bpftool"]] as const) requireBinary(binary, pkg);
  const netns = new NetnsLab();
  const work = makeTempDir("aegis-bench-netfilter-");
  const pinRoot = `/sys/fs/bpf/aegis-bench-netfilter-${process.pid}`;
  try {
    const blast = join(work, "udp-blast");
    await execFileAsync("clang", ["-O2", "-Wall", "-o", blast, BLAST_SOURCE]);
    const pair = await netns.vethPair("nf");
    const lab: Lab = { pair, work, blast };
    // Everything from A goes to B, so a probe to a CIDR in the set would reach B unless dropped.
    await inA(lab, "ip", "route", "add", "default", "via", pair.b.v4);

    const objects = new Map<number, Buffer>();
    for (const n of SIZES) objects.set(n, await compileProgram(policy(n)));
    const filters: Filter[] = [
      NONE,
      ...DATAPATHS.map((d) => aegisFilter(lab, d.name, d.make(pair.a.ns.name, pinRoot), objects)),
      nftFilter(lab, "nft netdev egress", "netdev"),
      nftFilter(lab, "nft inet output", "inet"),
      iptablesFilter(lab),
    ];
    const samples = new Map<string, Samples>();
    const key = (filter: Filter, n: number) => `${filter.name}@${n}`;

    await send(lab, pair.b.v4, 200); // warm-up: neighbour entry, caches
    for (let round = 0; round < ROUNDS; round++) {
      for (const n of SIZES) {
        const here = filters.filter((f) => n <= f.maxRules);
        for (let i = 0; i < here.length; i++) {
          const filter = here[(round + i) % here.length]!;
          const start = performance.now();
          await filter.install(n);
          const installMs = performance.now() - start;
          try {
            if (filter !== NONE) await checkDrops(lab, filter, n);
            const { pps, perCpuSecond } = await send(lab, pair.b.v4, SEND_MS);
            const s = samples.get(key(filter, n)) ?? { pps: [], perCpuSecond: [], installMs: [] };
            s.pps.push(pps);
            s.perCpuSecond.push(perCpuSecond);
            s.installMs.push(installMs);
            samples.set(key(filter, n), s);
          } finally {
            await filter.remove();
          }
        }
      }
    }

    // "No filter" is the same at every N: its runs at all N make one baseline.
    const unfiltered = SIZES.flatMap((n) => samples.get(key(NONE, n))!);
    const baseline = median(unfiltered.flatMap((s) => s.pps));
    const baselinePerCpu = median(unfiltered.flatMap((s) => s.perCpuSecond));
    const rows: Row[] = [];
    for (const n of SIZES) {
      for (const filter of filters.filter((f) => n <= f.maxRules)) {
        const s = samples.get(key(filter, n))!;
        rows.push({
          rules: n,
          filter: filter.name,
          kpps: median(s.pps) / 1000,
          vs_no_filter: median(s.pps) / baseline,
          install_ms: filter === NONE ? "" : Math.round(median(s.installMs)),
          // Less sensitive to other load on the machine than the rate itself.
          kpkts_per_cpu_s: median(s.perCpuSecond) / 1000,
          per_cpu_vs_no_filter: median(s.perCpuSecond) / baselinePerCpu,
        });
      }
    }
    const at100k = (filter: string) => rows.find((r) => r.rules === LARGEST && r.filter === filter)!;
    const nft = at100k("nft netdev egress");
    return {
      name: "netfilter",
      rows,
      ratio: Number(at100k(DATAPATHS[0]!.name).vs_no_filter),
      ratioOf: `${DATAPATHS[0]!.name} pps / no filter pps, ${LARGEST} non-matching rules, UDP ${PAYLOAD}-byte payload over veth`,
      // The issue's install goal (≤ nft -f of the same set), and each further Datapath's rate.
      headlines: DATAPATHS.flatMap(({ name }, i) => [
        ...(i > 0 ? [{ ratio: Number(at100k(name).vs_no_filter), ratioOf: `${name} pps / no filter pps, ${LARGEST} rules` }] : []),
        { ratio: Number(at100k(name).install_ms) / Number(nft.install_ms), ratioOf: `${name} install / nft -f (netdev egress) install, ${LARGEST} rules (goal ≤ 1)` },
      ]),
      rounds: ROUNDS,
      sendMs: SEND_MS,
      payloadBytes: PAYLOAD,
      statistic: "median of rounds; vs_no_filter against the median of every no-filter run (all N); per CPU-second: the sender's user + system time",
    };
  } finally {
    await netns.destroy();
    await unpin(pinRoot);
    await removeTempDir(work);
  }
}
