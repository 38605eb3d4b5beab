// A policy directory → the deterministic bundle of DESIGN.md "Bundle":
// policy.json (normalized) + program.o, as a sorted ustar in zstd.
import type { Readable } from "node:stream";
import { compileProgram } from "../ebpf/compile.js";
import { loadPolicy, normalizePolicy, type Policy } from "../policy/index.js";
import { BUNDLE_LIMITS, readTar, writeTar } from "./tar.js";
import { compress, decompress } from "./zstd.js";
import { InputError } from "../errors.js";

export const POLICY_FILE = "policy.json";
export const PROGRAM_FILE = "program.o";

export interface Bundle {
  policy: Policy;
  program: Uint8Array;
}

export async function buildBundle(policyDir: string): Promise<{ policy: Policy; bytes: Buffer }> {
  const policy = await loadPolicy(policyDir);
  const program = await compileProgram(policy);
  return { policy, bytes: encodeBundle({ policy, program }) };
}

export function encodeBundle(bundle: Bundle): Buffer {
  return compress(
    writeTar([
      { name: POLICY_FILE, data: Buffer.from(JSON.stringify(bundle.policy, null, 2) + "\n") },
      { name: PROGRAM_FILE, data: bundle.program },
    ]),
  );
}

/** Reads a bundle stream (already verified, or being verified as it flows) within the size caps. */
export async function decodeBundle(source: Readable, where: string): Promise<Bundle> {
  const tar = await decompress(source, BUNDLE_LIMITS.maxTotalSize + 64 * 1024);
  const entries = readTar(tar);
  const find = (name: string) => {
    const entry = entries.find((e) => e.name === name);
    if (!entry) throw new InputError("INVALID_ARGUMENT", `${where}: bundle has no ${name}`);
    return entry.data;
  };
  let document: unknown;
  try {
    document = JSON.parse(Buffer.from(find(POLICY_FILE)).toString("utf8"));
  } catch (err) {
    if (err instanceof InputError) throw err;
    throw new InputError("INVALID_POLICY", `${where}: ${POLICY_FILE} is not valid JSON`, { cause: err });
  }
  return { policy: normalizePolicy(document, `${where}:${POLICY_FILE}`), program: find(PROGRAM_FILE) };
}
