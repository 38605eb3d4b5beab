// Errors in bundle content: bytes that a registry, a cache or an upload gave
// us and that are not a valid Aegis bundle or policy artifact. They are not
// InputError (INVALID_ARGUMENT means the caller's flags or fields are wrong);
// whoever decodes bytes the user handed over directly may still report
// these as a bad request.
import { AegisError } from "../errors.js";

export type BundleErrorCode =
  /** Not zstd, not a safe Aegis tar, a member missing, or policy.json not a valid policy. */
  | "INVALID_BUNDLE"
  /** Decompresses, or holds entries, past the bundle size caps. */
  | "BUNDLE_TOO_LARGE"
  /** The manifest is not an Aegis policy artifact, or lacks its policy layer. */
  | "NOT_A_POLICY";

export class BundleError extends AegisError<BundleErrorCode> {}
