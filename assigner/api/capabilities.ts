// A host's kernel capabilities between the wire (snake_case, as agents send
// them in RegisterInitBody and GET /agents/{uid} shows them) and the
// KernelFeatures that ebpf/requirements.ts checks programs against; and the
// check itself, shared by the assigner and the fleet's commands.
import type { z } from "zod";
// The table alone, not ebpf/index.js: that would load every datapath (bpftool, tc, libbpf) into each command that talks to the assigner.
import { unmetNeeds, type KernelFeatures } from "../../ebpf/requirements.js";
import { AssignerError } from "./errors.js";
import type { Capabilities } from "./schemas.js";

/** The wire's capabilities as the agent record keeps them. */
export function featuresOf(c: z.infer<typeof Capabilities>): KernelFeatures {
  return {
    ...(c.kernel_version !== undefined ? { kernelVersion: c.kernel_version } : {}),
    ...(c.btf !== undefined ? { btf: c.btf } : {}),
    ...(c.bpf_loop !== undefined ? { bpfLoop: c.bpf_loop } : {}),
    ...(c.clsact !== undefined ? { clsact: c.clsact } : {}),
  };
}

/** The record's features as the wire shows them. */
export function capabilitiesJson(f: KernelFeatures): z.infer<typeof Capabilities> {
  return {
    ...(f.kernelVersion !== undefined ? { kernel_version: f.kernelVersion } : {}),
    ...(f.btf !== undefined ? { btf: f.btf } : {}),
    ...(f.bpfLoop !== undefined ? { bpf_loop: f.bpfLoop } : {}),
    ...(f.clsact !== undefined ? { clsact: f.clsact } : {}),
  };
}

/** A host's agent as the kernel check reads it: its reported capabilities, else its kernel's version alone. */
interface ReportedKernel {
  capabilities?: KernelFeatures | undefined;
  kernel?: string | undefined;
}

/**
 * The kernel check: each addition of a program to a host whose agent
 * reported a kernel that cannot run it, as `host "h" cannot run sha256:…:
 * reasons`. A host without an agent, an artifact without a program, or
 * an agent that reported nothing is not refused. The assigner's check
 * (POST /assign, POST /assignments) and the fleet's, made before anything is
 * changed, are this one.
 */
export function unrunnable(adds: readonly { artifactId: string; hostId: string }[], programOf: (artifactId: string) => string | undefined, agentOf: (hostId: string) => ReportedKernel | undefined): string[] {
  return adds.flatMap(({ artifactId, hostId }) => {
    const program = programOf(artifactId);
    const agent = agentOf(hostId);
    if (!program || !agent) return [];
    const reasons = unmetNeeds(program, agent.capabilities ?? (agent.kernel ? { kernelVersion: agent.kernel } : {}));
    return reasons.length > 0 ? [`host "${hostId}" cannot run ${artifactId}: ${reasons.join("; ")}`] : [];
  });
}

/** The refusal (CONFLICT) of what unrunnable() found: the first three, how many more, and how to override. */
export function unrunnableError(refused: readonly string[], override: string): AssignerError {
  const more = refused.length > 3 ? `; and ${refused.length - 3} more` : "";
  return new AssignerError("CONFLICT", `${refused.slice(0, 3).join("; ")}${more} (${override} overrides)`);
}
