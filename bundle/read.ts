// Reading bundles as they stream: zstd, then the strict tar reader, into
// memory (decodeBundle: the agent and the assigner need the policy and the
// program; readBundlePolicy: the policy alone, for push) or into files in a directory (unpackBundle: `aegis pull`, whose
// memory stays bounded whatever the bundle's size).
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Policy } from "../policy/index.js";
import { computing, openWriteStream } from "../util/index.js";
import { BundleError } from "./errors.js";
import { BUNDLE_LIMITS, readTar, type TarLimits, type TarMember } from "./tar.js";
import { inflate } from "./zstd.js";

export const POLICY_FILE = "policy.json";
export const PROGRAM_FILE = "program.o";

/** A bundle's content: the normalized policy and its compiled program. */
export interface Bundle {
  policy: Policy;
  program: Uint8Array;
}

/**
 * Streams a bundle (tar.zst) from `source` through zstd and the strict tar
 * reader, handing each member to `visit`. When the content is bad, the rest
 * of `source` is still read, so that a failure of the source itself is what
 * is reported: bytes that do not match their digest (found at the end of a
 * verifying stream) are not a bad bundle, they are not the bundle. Errors of
 * the source (DIGEST_MISMATCH, an abort) pass through unchanged; the bundle's
 * own are prefixed with `where` (a file, a reference).
 */
async function readBundle(
  source: Readable,
  where: string,
  visit: (member: TarMember, data: AsyncIterable<Buffer>) => Promise<void>,
  limits: TarLimits = BUNDLE_LIMITS,
  /** Read the rest of `source` on bad content (see above); false where nothing verifies it, so nothing is gained by reading on. */
  drain = true,
): Promise<void> {
  try {
    await readTar(inflate(source.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>), visit, limits);
  } catch (err) {
    if (drain && !source.destroyed) {
      // Bounded: the source is a descriptor's bytes, whose size was checked against the cap before fetching.
      for await (const chunk of source) void chunk;
    }
    throw err instanceof BundleError ? new BundleError(err.code, `${where}: ${err.message}`, { cause: err.cause }) : err;
  }
}

/** Reads a member whose size the header gave into one buffer. */
async function collect(data: AsyncIterable<Buffer>, size: number): Promise<Buffer> {
  const buffer = Buffer.allocUnsafe(size);
  let at = 0;
  for await (const chunk of data) at += chunk.copy(buffer, at);
  return buffer.subarray(0, at);
}

async function skip(data: AsyncIterable<Buffer>): Promise<void> {
  for await (const chunk of data) void chunk;
}

function missing(where: string, name: string): never {
  throw new BundleError("INVALID_BUNDLE", `${where}: bundle has no ${name}`);
}

/**
 * A policy.json this large (~2,800 rules) is validated with V8's optimizing
 * compiler even inside a command that turned it off to move bytes
 * (util/jit.ts): 100,000 rules take half the time with it. A smaller one is
 * done before optimizing would pay, and leaves the compiler off.
 */
const LARGE_POLICY = 256 * 1024;

/** policy.json's bytes → a validated Policy; anything else is INVALID_BUNDLE (its cause keeps INVALID_POLICY). */
async function parsePolicyJson(bytes: Buffer, where: string): Promise<Policy> {
  // Loaded once the bundle has streamed: the schema library (zod's core, ~7 ms to load) is not resident while the bulk of a pull flows.
  const { normalizePolicy } = await import("../policy/policy.js");
  const parse = () => normalizePolicy(JSON.parse(bytes.toString("utf8")), `${where}:${POLICY_FILE}`);
  try {
    return bytes.byteLength >= LARGE_POLICY ? computing(parse) : parse();
  } catch (err) {
    // normalizePolicy's message already names the file and the field.
    const message = err instanceof SyntaxError ? `${where}:${POLICY_FILE} is not valid JSON: ${err.message}` : (err as Error).message;
    throw new BundleError("INVALID_BUNDLE", message, { cause: err });
  }
}

/**
 * Reads a bundle stream (already verified, or being verified as it flows)
 * into memory within the size caps. Bad content is a BundleError; errors of
 * the stream itself (DIGEST_MISMATCH, an abort) pass through unchanged.
 */
export async function decodeBundle(source: Readable, where: string): Promise<Bundle> {
  const files = new Map<string, Buffer>();
  await readBundle(source, where, async ({ name, size }, data) => {
    if (name === POLICY_FILE || name === PROGRAM_FILE) files.set(name, await collect(data, size));
    else await skip(data);
  });
  const policy = files.get(POLICY_FILE) ?? missing(where, POLICY_FILE);
  const program = files.get(PROGRAM_FILE) ?? missing(where, PROGRAM_FILE);
  return { policy: await parsePolicyJson(policy, where), program };
}

/**
 * Reads a bundle stream through (zstd, the strict tar reader, the caps) and
 * gives its validated policy, holding only policy.json in memory: `aegis
 * push` learns what it sends from a file without holding the program or the
 * rest of the bundle. Bad content fails at once, the rest unread: the push
 * then stops its upload instead of sending the rest of a bad file.
 */
export async function readBundlePolicy(source: Readable, where: string): Promise<Policy> {
  let policy: Buffer | undefined;
  let program = false;
  await readBundle(source, where, async ({ name, size }, data) => {
    if (name === POLICY_FILE) policy = await collect(data, size);
    else {
      program ||= name === PROGRAM_FILE;
      await skip(data);
    }
  }, BUNDLE_LIMITS, false);
  const bytes = policy ?? missing(where, POLICY_FILE);
  if (!program) missing(where, PROGRAM_FILE);
  return parsePolicyJson(bytes, where);
}

export interface Unpacked {
  policy: Policy;
  /** The files written, by name: policy.json (the bundle's bytes as they are) and program.o. */
  files: string[];
}

/**
 * Streams a bundle's policy.json and program.o into files in `dir` (which
 * must hold neither), other members are read and dropped. Only policy.json
 * is held in memory, to validate it. The caller decides what the files are
 * worth: written from a stream still being verified, they are not to be used
 * until that stream has ended cleanly.
 */
export async function unpackBundle(source: Readable, dir: string, where: string): Promise<Unpacked> {
  let policy: Buffer | undefined;
  const files: string[] = [];
  await readBundle(source, where, async ({ name, size }, data) => {
    if (name === POLICY_FILE) {
      policy = await collect(data, size);
      await writeFile(join(dir, name), policy, { flag: "wx" });
    } else if (name === PROGRAM_FILE) {
      await pipeline(data, await openWriteStream(join(dir, name), { flags: "wx" }));
    } else {
      return skip(data);
    }
    files.push(name);
  });
  if (!files.includes(PROGRAM_FILE)) missing(where, PROGRAM_FILE);
  return { policy: await parsePolicyJson(policy ?? missing(where, POLICY_FILE), where), files };
}
