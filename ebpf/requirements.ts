// What a host's kernel offers the TC programs, and what each program needs
// of it: the agent probes its kernel and sends the answer at registration;
// the assigner refuses (409) to assign a program the host cannot run. One
// table, so the two sides cannot disagree.
import { existsSync } from "node:fs";
import { release } from "node:os";

/** A host's kernel, as far as Aegis' programs care. An absent field is unknown and never counts against the host. */
export interface KernelFeatures {
  /** major.minor[.patch] from uname -r. */
  kernelVersion?: string;
  /** /sys/kernel/btf/vmlinux exists (the kernel's own BTF, for CO-RE). */
  btf?: boolean;
  /** The bpf_loop helper (Linux 5.17). */
  bpfLoop?: boolean;
  /** The clsact qdisc TC attaches to (Linux 4.5). */
  clsact?: boolean;
}

interface ProgramNeeds {
  /** major.minor */
  minKernel: string;
  btf: boolean;
  bpfLoop: boolean;
  clsact: boolean;
}

/** Per program (the policy's `program`, the artifact's `program` metadata): aegis_net walks its rules with bpf_loop and is built with BTF. */
export const PROGRAM_NEEDS: Readonly<Record<string, ProgramNeeds>> = {
  aegis_net: { minKernel: "5.17", btf: true, bpfLoop: true, clsact: true },
};

/** [major, minor] of "6.8.0-45-generic", or undefined. */
function majorMinor(version: string): [number, number] | undefined {
  const match = /^(\d+)\.(\d+)/.exec(version);
  return match ? [Number(match[1]), Number(match[2])] : undefined;
}

function atLeast(version: string, min: string): boolean | undefined {
  const have = majorMinor(version);
  const need = majorMinor(min)!;
  if (!have) return undefined;
  return have[0] > need[0] || (have[0] === need[0] && have[1] >= need[1]);
}

/** Why `features` cannot run `program`: one reason per unmet need; empty when it can, or when the program or the facts are unknown. */
export function unmetNeeds(program: string, features: KernelFeatures): string[] {
  const needs = PROGRAM_NEEDS[program];
  if (!needs) return [];
  const reasons: string[] = [];
  if (features.kernelVersion && atLeast(features.kernelVersion, needs.minKernel) === false) reasons.push(`${program} needs Linux >= ${needs.minKernel}, the host runs ${features.kernelVersion}`);
  if (needs.btf && features.btf === false) reasons.push(`${program} needs kernel BTF (/sys/kernel/btf/vmlinux), the host has none`);
  if (needs.bpfLoop && features.bpfLoop === false) reasons.push(`${program} needs the bpf_loop helper, the host lacks it`);
  if (needs.clsact && features.clsact === false) reasons.push(`${program} needs the clsact qdisc, the host lacks it`);
  return reasons;
}

/**
 * This host's kernel. bpf_loop and clsact are inferred from the version
 * (a distribution may backport the one or compile out the other; loading
 * or attaching then fails and is reported with its code), BTF is looked up.
 */
export function probeKernelFeatures(kernel = release(), btfPath = "/sys/kernel/btf/vmlinux"): KernelFeatures {
  const version = /^\d+\.\d+(\.\d+)?/.exec(kernel)?.[0];
  return {
    ...(version ? { kernelVersion: version } : {}),
    btf: existsSync(btfPath),
    ...(version ? { bpfLoop: atLeast(version, "5.17")!, clsact: atLeast(version, "4.5")! } : {}),
  };
}
