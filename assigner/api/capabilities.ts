// A host's kernel capabilities between the wire (snake_case, as agents send
// them in RegisterInitBody and GET /agents/{uid} shows them) and the
// KernelFeatures that ebpf/requirements.ts checks programs against.
import type { z } from "zod";
import type { KernelFeatures } from "../../ebpf/index.js";
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
