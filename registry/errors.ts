// Errors of the registry client. Registry error bodies
// ({"errors":[{code,message,detail}]}) keep the distribution spec's codes:
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#error-codes
import { AegisError } from "../errors.js";

export type DistributionErrorCode =
  | "BLOB_UNKNOWN"
  | "BLOB_UPLOAD_INVALID"
  | "BLOB_UPLOAD_UNKNOWN"
  | "DIGEST_INVALID"
  | "MANIFEST_BLOB_UNKNOWN"
  | "MANIFEST_INVALID"
  | "MANIFEST_UNKNOWN"
  | "NAME_INVALID"
  | "NAME_UNKNOWN"
  | "SIZE_INVALID"
  | "UNAUTHORIZED"
  | "DENIED"
  | "UNSUPPORTED"
  | "TOOMANYREQUESTS";

export type ContentErrorCode =
  | "DIGEST_MISMATCH"
  | "SIZE_MISMATCH"
  | "SIZE_LIMIT"
  | "NOT_FOUND"
  | "INVALID_MANIFEST"
  | "UNSUPPORTED_DIGEST"
  | "NO_CREDENTIALS"
  | "INSECURE"
  | "UNREACHABLE"
  | "HTTP_ERROR"
  | "LOCK_TIMEOUT"
  /** A request (its body included) took longer than the client's deadline. */
  | "TIMEOUT";

export type RegistryErrorCode = DistributionErrorCode | ContentErrorCode;

export class RegistryError extends AegisError<RegistryErrorCode> {
  /** HTTP status the registry answered with, when there was one. */
  readonly status: number | undefined;

  constructor(code: RegistryErrorCode, message: string, options?: { cause?: unknown; status?: number }) {
    super(code, message, options);
    this.status = options?.status;
  }
}

export function isNotFound(err: unknown): boolean {
  return (
    err instanceof RegistryError &&
    (err.code === "NOT_FOUND" || err.code === "MANIFEST_UNKNOWN" || err.code === "BLOB_UNKNOWN" || err.code === "NAME_UNKNOWN")
  );
}

/**
 * Faults of the content read (bytes that do not match their descriptor, over
 * a cap, malformed, or not there), as opposed to a registry that cannot be
 * read (UNREACHABLE, TIMEOUT, DENIED…): a verdict on one item, so a caller
 * walking a list it was given (signatures, referrers) skips that item.
 */
const CONTENT_FAULTS = new Set<RegistryErrorCode>(["DIGEST_MISMATCH", "SIZE_MISMATCH", "SIZE_LIMIT", "INVALID_MANIFEST", "UNSUPPORTED_DIGEST", "NOT_FOUND", "BLOB_UNKNOWN", "MANIFEST_UNKNOWN"]);

export function isContentFault(err: unknown): err is RegistryError {
  return err instanceof RegistryError && CONTENT_FAULTS.has(err.code);
}
