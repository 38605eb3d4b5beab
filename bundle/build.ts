// A policy directory → the deterministic bundle of DESIGN.md "Bundle":
// policy.json (normalized) + program.o, as a sorted ustar in zstd.
import type { Readable } from "node:stream";
import { compileProgram } from "../ebpf/compile.js";
import { loadPolicy, normalizePolicy, type Policy } from "../policy/index.js";
import { BUNDLE_LIMITS, readTar, writeTar } from "./tar.js";
import { compress, decompress } from "./zstd.js";
import { BundleError } from "./errors.js";

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

/**
 * Reads a bundle stream (already verified, or being verified as it flows)
 * within the size caps. Bad content is a BundleError; errors of the stream
 * itself (DIGEST_MISMATCH, an abort) pass through unchanged.
 */
export async function decodeBundle(source: Readable, where: string): Promise<Bundle> {
  const tar = await decompress(source, BUNDLE_LIMITS.maxTotalSize + 64 * 1024);
  const entries = readTar(tar);
  const find = (name: string) => {
    const entry = entries.find((e) => e.name === name);
    if (!entry) throw new BundleError("INVALID_BUNDLE", `${where}: bundle has no ${name}`);
    return entry.data;
  };
  const text = Buffer.from(find(POLICY_FILE)).toString("utf8");
  const program = find(PROGRAM_FILE);
  let policy: Policy;
  try {
    policy = normalizePolicy(JSON.parse(text), `${where}:${POLICY_FILE}`);
  } catch (err) {
    // normalizePolicy's message already names the file and the field; the cause keeps its INVALID_POLICY.
    const message = err instanceof SyntaxError ? `${where}:${POLICY_FILE} is not valid JSON: ${err.message}` : (err as Error).message;
    throw new BundleError("INVALID_BUNDLE", message, { cause: err });
  }
  return { policy, program };
}
