// Importing a capsule into a site's registry: read and check the whole
// capsule (capsule.ts), verify each artifact's signatures with the site's
// pinned keys, and only then push. One artifact that does not verify refuses
// the whole capsule, so nothing is pushed from a capsule that was tampered with.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AegisError } from "../errors.js";
import { copy, type CopyEvent, type Descriptor, type ReadOnlyTarget, type Target } from "../registry/index.js";
import { SignatureError, SIGSTORE_BUNDLE_TYPE, verifyArtifact, type TrustPolicy } from "../signing/index.js";
import { readCapsule, type CapsuleLimits } from "./capsule.js";
import { MirrorError } from "./errors.js";

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
  /** The signatures that verified and were pushed with it. */
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
  const dir = await mkdtemp(join(options.workDir ?? tmpdir(), "aegis-capsule-"));
  try {
    const capsule = await readCapsule(path, join(dir, "layout"), { limits: options.limits, onEvent: options.onRead, signal: options.signal });
    const plan: { artifact: ImportedArtifact; root: Descriptor; signatures: Descriptor[] }[] = [];
    for (const { desc, source } of capsule.artifacts) {
      options.signal?.throwIfAborted();
      const artifact: ImportedArtifact = { digest: desc.digest, mediaType: desc.mediaType, size: desc.size, source, signatures: [], skipped: [] };
      const signatures: Descriptor[] = [];
      const failures: SignatureError[] = [];
      for (const referrer of await capsule.target.referrers(desc)) {
        if (referrer.artifactType !== SIGSTORE_BUNDLE_TYPE) {
          artifact.skipped.push({ digest: referrer.digest, reason: `not a signature (artifact type ${referrer.artifactType ?? "none"})` });
          continue;
        }
        try {
          // Each signature on its own: verifyArtifact stops at the first that verifies.
          const verified = await verifyArtifact(onlyReferrer(capsule.target, referrer), desc.digest, trust, { at: options.at });
          artifact.signatures.push({ digest: referrer.digest, key: verified.key.name, hint: verified.key.hint });
          signatures.push(referrer);
        } catch (err) {
          if (!(err instanceof AegisError)) throw err;
          const failure = err instanceof SignatureError ? err : new SignatureError("INVALID_BUNDLE", err.message, { cause: err });
          failures.push(failure);
          artifact.skipped.push({ digest: referrer.digest, reason: failure.message });
        }
      }
      if (signatures.length === 0) {
        const cause =
          failures.length === 0
            ? new SignatureError("NO_SIGNATURE", "it carries no signature")
            : failures.length === 1
              ? failures[0]!
              : new SignatureError("NO_VALID_SIGNATURE", `none of its ${failures.length} signatures verifies: ${failures.map((f) => f.message).join("; ")}`);
        const from = source ? ` (from ${source})` : "";
        throw new MirrorError("NOT_VERIFIED", `capsule refused: ${desc.digest}${from} has no signature that verifies with the pinned keys: ${cause.message}`, { cause });
      }
      plan.push({ artifact, root: desc, signatures });
    }
    for (const { root, signatures } of plan) {
      await copy(capsule.target, root.digest, dst, undefined, { onEvent: options.onPush, signal: options.signal });
      for (const signature of signatures) {
        await copy(capsule.target, signature.digest, dst, undefined, { onEvent: options.onPush, signal: options.signal });
        await dst.indexReferrer(root, signature);
      }
    }
    return plan.map((p) => p.artifact);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** `target` as a reader that sees one referrer only, so each signature is verified by itself. */
function onlyReferrer(target: ReadOnlyTarget, referrer: Descriptor): ReadOnlyTarget {
  return {
    name: target.name,
    fetch: (desc, options) => target.fetch(desc, options),
    exists: (desc, options) => target.exists(desc, options),
    resolve: (reference, options) => target.resolve(reference, options),
    tags: () => target.tags(),
    referrers: async (_subject, artifactType) => (artifactType === undefined || artifactType === referrer.artifactType ? [referrer] : []),
  };
}
