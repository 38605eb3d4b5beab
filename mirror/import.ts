// Importing a capsule into a site's registry: read and check the whole
// capsule (capsule.ts), verify each artifact's signatures with the site's
// pinned keys, and only then push. One artifact that does not verify refuses
// the whole capsule, so nothing is pushed from a capsule that was tampered with.
import { tmpdir } from "node:os";
import { join } from "node:path";
import { copy, MAX_MANIFEST_SIZE, parseManifest, readAll, referrerDescriptor, type CopyEvent, type Descriptor, type Target } from "../registry/index.js";
import type { TrustPolicy } from "../signing/index.js";
import { readCapsule, type CapsuleLimits } from "./capsule.js";
import { checkSigned } from "./verified.js";
import { describeError, InputError } from "../errors.js";
import { MirrorError } from "./errors.js";
import { makeTempDir } from "../util/index.js";

export interface ImportOptions {
  limits?: CapsuleLimits;
  /** Where the capsule is unpacked while it is checked; default the system's temp directory. */
  workDir?: string;
  /** The time keys must be valid at; default now. */
  at?: Date;
  /** Progress reading the capsule. */
  onRead?: (event: CopyEvent) => void;
  /** Progress pushing to the destination. */
  onPush?: (event: CopyEvent) => void;
  signal?: AbortSignal;
}

export interface ImportedArtifact {
  digest: string;
  mediaType: string;
  size: number;
  /** Where the capsule says it was exported from. */
  source: string | undefined;
  /** The signatures that verified and were pushed with it: the trusted key, or for a keyless one the identity, that accepted each. */
  signatures: { digest: string; key: string; hint: string }[];
  /** Referrers left out: signatures that do not verify with the pinned keys, and anything that is not a signature. */
  skipped: { digest: string; reason: string }[];
}

/**
 * Imports the capsule at `path` into `dst`. Every blob is checked against
 * its digest and every signature against `trust` before anything is pushed;
 * an artifact with no signature that verifies refuses the capsule (a
 * MirrorError naming the digest, its cause the SignatureError). Only the
 * signatures that verify are pushed.
 */
export async function importCapsule(path: string, dst: Target, trust: TrustPolicy, options: ImportOptions = {}): Promise<ImportedArtifact[]> {
  const work = options.workDir ?? tmpdir();
  // Only read once the capsule is in, while pushes may take long; what an import killed mid-way left goes first
  // (this user's alone: work may be shared, as /tmp is).
  const { dir, release } = await makeTempDir(work, "aegis-capsule-").catch((err: unknown) => {
    throw new InputError("FILE_NOT_FOUND", `cannot unpack the capsule in ${work}: ${describeError(err)}`, { cause: err });
  });
  try {
    const capsule = await readCapsule(path, join(dir, "layout"), { limits: options.limits, onEvent: options.onRead, signal: options.signal });
    const plan: { artifact: ImportedArtifact; root: Descriptor; signatures: Descriptor[] }[] = [];
    for (const { desc, source } of capsule.artifacts) {
      options.signal?.throwIfAborted();
      const artifact: ImportedArtifact = { digest: desc.digest, mediaType: desc.mediaType, size: desc.size, source, signatures: [], skipped: [] };
      // Every signature is checked (checkSigned does not stop at the first that verifies), so only those that verify are pushed.
      const explained = await checkSigned(capsule.target, desc.digest, `capsule refused: ${desc.digest}${source ? ` (from ${source})` : ""}`, trust, { ...(options.at ? { at: options.at } : {}), ...(options.signal ? { signal: options.signal } : {}) });
      const verdicts = new Map(explained.signatures.map((v) => [v.signature, v]));
      const signatures: Descriptor[] = [];
      // The capsule's referrers index is unsigned: each digest once, and indexed at the site as its verified manifest describes it.
      for (const referrer of new Map((await capsule.target.referrers(desc)).map((r) => [r.digest, r])).values()) {
        const verdict = verdicts.get(referrer.digest);
        if (verdict?.accepted && verdict.verified) {
          artifact.signatures.push({ digest: referrer.digest, key: verdict.verified.key.name, hint: verdict.verified.key.hint });
          const manifest = await readAll(await capsule.target.fetch(referrer), MAX_MANIFEST_SIZE, `signature ${referrer.digest}`);
          signatures.push(referrerDescriptor(referrer, parseManifest(manifest, referrer.mediaType)));
        } else {
          artifact.skipped.push({ digest: referrer.digest, reason: verdict ? verdict.reason : `not a signature (artifact type ${JSON.stringify(referrer.artifactType ?? "none")})` });
        }
      }
      plan.push({ artifact, root: desc, signatures });
    }
    // Each signature is copied by digest, as the listing gives its media type (a manifest need not name its own).
    await capsule.target.index(plan.flatMap((p) => p.signatures.map((desc) => ({ desc }))));
    // Every artifact's signatures (and referrers index) go first, the artifacts last: a push that fails part-way
    // never leaves an artifact in the site registry without the signatures that verified it, and fails before
    // any artifact landed, unless an artifact's own push fails (then the error says which landed).
    for (const { root, signatures } of plan) {
      for (const signature of signatures) {
        await copy(capsule.target, signature.digest, dst, undefined, { onEvent: options.onPush, signal: options.signal });
        await dst.indexReferrer(root, signature);
      }
    }
    const landed: string[] = [];
    for (const { root } of plan) {
      try {
        await copy(capsule.target, root.digest, dst, undefined, { onEvent: options.onPush, signal: options.signal });
      } catch (err) {
        // Nothing landed, or Ctrl-C: the error as it is (INTERRUPTED says what happened).
        if (landed.length === 0 || options.signal?.aborted) throw err;
        const rest = plan.length - landed.length;
        throw new MirrorError("PARTLY_IMPORTED", `imported ${landed.length} of ${plan.length} artifacts (${landed.join(", ")}), then ${root.digest} failed: ${describeError(err)}; ${rest} not imported: import the capsule again`, { cause: err });
      }
      landed.push(root.digest);
    }
    return plan.map((p) => p.artifact);
  } finally {
    await release();
  }
}
