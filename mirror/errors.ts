// Why a capsule was refused, one code per reason, so scripts and tests can
// tell a tampered blob from a missing signature.
import { AegisError } from "../errors.js";

export type MirrorErrorCode =
  /** Not a tar, not an OCI layout, or an entry that has no place in one (a link, "../x", a second index.json). */
  | "INVALID_CAPSULE"
  /** More entries or bytes than a capsule's limits: read at import, or an artifact to export. */
  | "CAPSULE_TOO_LARGE"
  /** A blob whose bytes do not hash to the digest it is stored under. */
  | "DIGEST_MISMATCH"
  /** A blob that nothing index.json names reaches. */
  | "UNLISTED_CONTENT"
  /** A digest the capsule's manifests name but the capsule does not hold. */
  | "MISSING_CONTENT"
  /** An artifact with no signature that verifies with the pinned keys (the SignatureError is the cause). */
  | "NOT_VERIFIED"
  /** Some artifacts were pushed, then one's push failed (the registry's error is the cause): importing again finishes. */
  | "PARTLY_IMPORTED";

export class MirrorError extends AegisError<MirrorErrorCode> {}
