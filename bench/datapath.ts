// Per-packet cost of aegis_net as its policy grows, against an empty
// classifier measured in the same run, both through BPF_PROG_TEST_RUN
// (kernel-timed, no NIC or stack in the way). The traffic matches no rule,
// so the program does all its lookups and returns TC_ACT_UNSPEC. Three
// probes, because an LPM lookup costs what the trie walk costs:
//   root    an address far from every rule: the walk stops at the root (best case);
//   near    the address just past the last rule: it shares the longest prefix
//           with the set without being in it, so the walk goes deep;
//   listed  the last rule's own address with another protocol: the walk reaches
//           the /32 and its candidate list is checked, yet nothing matches.
// Needs root.
import { release } from "node:os";
import type { Policy, Rule } from "../policy/index.js";
import { compileProgram, compileRules, compileSource, loadObject, loadProgram, TC_ACT, testRun, unpin, type Pinned } from "../ebpf/index.js";
import { packet } from "../test/ebpf/packet.js";
import type { BenchResult, Row } from "./report.js";

const LARGEST = 100_000;
const SIZES = [10, 1_000, 10_000, LARGEST];
const REPEAT = 1_000_000;
// Rounds alternate between programs so drift (frequency, noise) hits all alike.
const ROUNDS = 5;

const EMPTY = `
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
SEC("tc") int empty(struct __sk_buff *skb) { return TC_ACT_UNSPEC; }
char LICENSE[] SEC("license") = "GPL";
`;

const PROBES = ["root", "near", "listed"] as const;
type Probe = (typeof PROBES)[number];

interface Measured {
  rules: number | "empty";
  pinned: Pinned;
  loadMs: number;
  /** The frame per probe. */
  probes: Record<Probe, Buffer>;
  /** Kernel-reported ns per run, one per round, per probe. */
  samples: Record<Probe, number[]>;
}

/** The i-th rule's address: distinct /32s in 100.64.0.0/10. */
const address = (i: number) => `100.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;

function policy(size: number): Policy {
  const rules: Rule[] = Array.from({ length: size }, (_, i) => ({ action: "drop", dst: `${address(i)}/32`, protocol: "tcp" }));
  return { name: `bench-${size}`, version: "1.0.0", description: "", program: "aegis_net", attach: { hook: "tc", direction: "egress" }, rules };
}

export default async function datapath(): Promise<BenchResult> {
  if (process.getuid?.() !== 0) throw new Error("bench datapath loads eBPF programs: run it as root");
  const root = `/sys/fs/bpf/aegis-bench-${process.pid}`;
  const frame = (dst: string, protocol: "tcp" | "udp") => packet({ src: "192.0.2.1", dst, protocol, dport: 443 });
  const probesFor = (size: number): Record<Probe, Buffer> => ({
    root: frame("198.51.100.7", "tcp"),
    near: frame(address(size), "tcp"),
    listed: frame(address(size - 1), "udp"),
  });
  const noSamples = (): Record<Probe, number[]> => ({ root: [], near: [], listed: [] });
  try {
    const empty = await loadObject(await compileSource("empty", EMPTY), `${root}/empty`);
    const programs: Measured[] = [{ rules: "empty", pinned: empty, loadMs: 0, probes: probesFor(LARGEST), samples: noSamples() }];
    for (const size of SIZES) {
      const started = performance.now();
      const p = policy(size);
      const pinned = await loadProgram(await compileProgram(p), compileRules(p.rules), `${root}/rules-${size}`);
      programs.push({ rules: size, pinned, loadMs: performance.now() - started, probes: probesFor(size), samples: noSamples() });
    }

    for (let round = 0; round < ROUNDS; round++) {
      for (const { rules, pinned, probes, samples } of programs) {
        for (const probe of PROBES) {
          const { retval, durationNs } = await testRun(pinned.progPin, probes[probe], REPEAT);
          if (retval !== TC_ACT.UNSPEC) throw new Error(`bench probe ${probe} matched a rule of ${rules} (retval ${retval})`);
          samples[probe].push(durationNs);
        }
      }
    }
    const emptyNs = median(programs[0]?.samples.root ?? []);
    const rows: Row[] = programs.map(({ rules, loadMs, samples }) => ({
      rules,
      ns_root: median(samples.root),
      ns_near: median(samples.near),
      ns_listed: median(samples.listed),
      ratio_root: median(samples.root) / emptyNs,
      ratio_near: median(samples.near) / emptyNs,
      ratio_listed: median(samples.listed) / emptyNs,
      compile_load_fill_ms: Math.round(loadMs),
    }));
    const largest = rows.find((row) => row.rules === LARGEST);
    return {
      name: "datapath",
      rows,
      ratio: Number(largest?.ratio_root),
      ratioOf: `aegis_net with ${LARGEST} rules vs an empty TC classifier, ns per packet (BPF_PROG_TEST_RUN), probe far from every rule (the trie walk stops at the root)`,
      ratioNear: Number(largest?.ratio_near),
      ratioListed: Number(largest?.ratio_listed),
      probes: "root: 198.51.100.7 (best case); near: the address just past the last rule (longest shared prefix, no match); listed: the last rule's address over UDP (full walk, candidate checked, no match)",
      repeat: REPEAT,
      rounds: ROUNDS,
      statistic: "median of rounds; the kernel reports whole ns per run",
      kernel: release(),
    };
  } finally {
    await unpin(root);
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}
