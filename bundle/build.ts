// A policy directory → the deterministic bundle of docs/architecture.md "Formats and media types":
// policy.json (normalized) + program.o, as a sorted ustar in zstd.
import { compileProgram } from "../ebpf/compile.js";
import { loadPolicy, type Policy } from "../policy/index.js";
import { POLICY_FILE, PROGRAM_FILE, type Bundle } from "./read.js";
import { writeTar } from "./tar.js";
import { compress } from "./zstd.js";

/** Builds a policy directory's bundle; `warnings` are the loader's (a CIDR with host bits set…). */
export async function buildBundle(policyDir: string): Promise<{ policy: Policy; bytes: Buffer; warnings: string[] }> {
  const { policy, warnings } = await loadPolicy(policyDir);
  const program = await compileProgram(policy);
  return { policy, bytes: await encodeBundle({ policy, program }), warnings };
}

export async function encodeBundle(bundle: Bundle): Promise<Buffer> {
  return compress(
    await writeTar([
      { name: POLICY_FILE, data: Buffer.from(JSON.stringify(bundle.policy, null, 2) + "\n") },
      { name: PROGRAM_FILE, data: bundle.program },
    ]),
  );
}
