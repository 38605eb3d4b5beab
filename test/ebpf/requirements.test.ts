// The program requirements table and the kernel probe (ebpf/requirements.ts),
// without root: versions and a BTF path given.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { probeKernelFeatures, unmetNeeds } from "../../ebpf/index.js";

const dir = mkdtempSync(join(tmpdir(), "aegis-btf-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("kernel requirements", () => {
  it("probes the version, bpf_loop and clsact from uname -r, and BTF from the file", () => {
    writeFileSync(join(dir, "vmlinux"), "");
    expect(probeKernelFeatures("6.8.0-45-generic", join(dir, "vmlinux")), "a current kernel with BTF").toEqual({ kernelVersion: "6.8.0", btf: true, bpfLoop: true, clsact: true });
    expect(probeKernelFeatures("5.15.0-91-generic", join(dir, "absent")), "5.15 without BTF").toEqual({ kernelVersion: "5.15.0", btf: false, bpfLoop: false, clsact: true });
    expect(probeKernelFeatures("5.17", join(dir, "absent")).bpfLoop, "5.17 has bpf_loop").toBe(true);
    expect(probeKernelFeatures("weird", join(dir, "absent")), "an unreadable version claims nothing").toEqual({ btf: false });
  });

  it("names every unmet need of aegis_net, and counts only what is known", () => {
    expect(unmetNeeds("aegis_net", { kernelVersion: "6.8.0", btf: true, bpfLoop: true, clsact: true }), "a capable host").toEqual([]);
    expect(unmetNeeds("aegis_net", { kernelVersion: "5.10.0", btf: false, bpfLoop: false, clsact: false }), "an old host").toEqual([
      "aegis_net needs Linux >= 5.17, the host runs 5.10.0",
      "aegis_net needs kernel BTF (/sys/kernel/btf/vmlinux), the host has none",
      "aegis_net needs the bpf_loop helper, the host lacks it",
      "aegis_net needs the clsact qdisc, the host lacks it",
    ]);
    expect(unmetNeeds("aegis_net", { kernelVersion: "5.16.20" }), "5.16 is too old").toHaveLength(1);
    expect(unmetNeeds("aegis_net", { kernelVersion: "10.0" }), "10.0 is newer than 5.17").toEqual([]);
    expect(unmetNeeds("aegis_net", {}), "nothing known: nothing refused").toEqual([]);
    expect(unmetNeeds("other_program", { kernelVersion: "4.0" }), "a program with no entry").toEqual([]);
  });
});
