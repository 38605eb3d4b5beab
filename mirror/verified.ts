// The signature check a capsule's artifacts pass, the same at both ends: an
// export given --key/--trust checks the capsule as written, so an artifact
// whose signatures the capsule cannot carry (a cosign .sig tag alone) fails
// there, not at the site after the capsule was carried in; an import checks
// the capsule as read before anything is pushed.
import { explainArtifact, SignatureError, type Explanation, type TrustPolicy, type VerifyOptions } from "../signing/index.js";
import type { ReadOnlyTarget } from "../registry/index.js";
import { MirrorError } from "./errors.js";

/**
 * Every signature of `digest` in `target` checked against `trust` (none
 * skipped once one verifies, so the caller can take just those that do);
 * throws NOT_VERIFIED, with the SignatureError as its cause, naming `what`
 * when none meets the requirement.
 */
export async function checkSigned(target: ReadOnlyTarget, digest: string, what: string, trust: TrustPolicy, options: VerifyOptions = {}): Promise<Explanation> {
  const explained = await explainArtifact(target, digest, trust, options);
  if (explained.verified) return explained;
  const cause = new SignatureError(explained.error?.code ?? "NO_SIGNATURE", explained.signatures.length === 0 ? "it carries no signature" : (explained.error?.message ?? "no signature verifies"));
  throw new MirrorError("NOT_VERIFIED", `${what} has no signature that verifies with the pinned trust: ${cause.message}`, { cause });
}
