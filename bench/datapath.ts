// Per-packet cost of aegis_net as its policy grows, against an empty
// classifier measured in the same run, both through BPF_PROG_TEST_RUN
// (kernel-timed, no NIC or stack in the way). The traffic matches no rule,
// so the program does all its lookups and returns TC_ACT_UNSPEC. Needs root.
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

interface Measured {
  rules: number | "empty";
  pinned: Pinned;
  loadMs: number;
  /** Kernel-reported ns per run, one per round. */
  samples: number[];
}

/** Distinct /32s in 100.64.0.0/10; the probe below is outside it. */
function policy(size: number): Policy {
  const rules: Rule[] = Array.from({ length: size }, (_, i) => ({
    action: "drop",
    dst: `100.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32`,
    protocol: "tcp",
  }));
  return { name: `bench-${size}`, version: "1.0.0", description: "", program: "aegis_net", attach: { hook: "tc", direction: "egress" }, rules };
}

export default async function datapath(): Promise<BenchResult> {
  if (process.getuid?.() !== 0) throw new Error("bench datapath loads eBPF programs: run it as root");
  const root = `/sys/fs/bpf/aegis-bench-${process.pid}`;
  const probe = packet({ src: "192.0.2.1", dst: "198.51.100.7", protocol: "tcp", dport: 443 });
  try {
    const empty = await loadObject(await compileSource("empty", EMPTY), `${root}/empty`);
    const programs: Measured[] = [{ rules: "empty", pinned: empty, loadMs: 0, samples: [] }];
    for (const size of SIZES) {
      const started = performance.now();
      const p = policy(size);
      const pinned = await loadProgram(await compileProgram(p), compileRules(p.rules), `${root}/rules-${size}`);
      programs.push({ rules: size, pinned, loadMs: performance.now() - started, samples: [] });
    }

    for (let round = 0; round < ROUNDS; round++) {
      for (const { pinned, samples } of programs) {
        const { retval, durationNs } = await testRun(pinned.progPin, probe, REPEAT);
        if (retval !== TC_ACT.UNSPEC) throw new Error(`bench probe matched a rule (retval ${retval})`);
        samples.push(durationNs);
      }
    }
    const emptyNs = median(programs[0]?.samples ?? []);
    const rows: Row[] = programs.map(({ rules, loadMs, samples }) => ({
      rules,
      ns_per_packet: median(samples),
      ratio_vs_empty: median(samples) / emptyNs,
      compile_load_fill_ms: Math.round(loadMs),
    }));
    return {
      name: "datapath",
      rows,
      ratio: Number(rows.find((row) => row.rules === LARGEST)?.ratio_vs_empty),
      ratioOf: `aegis_net with ${LARGEST} rules vs an empty TC classifier, ns per packet (BPF_PROG_TEST_RUN)`,
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
