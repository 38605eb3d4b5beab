// Why a signature did not verify, one code per reason, so callers (the
// agent's telemetry, the CLI's exit message) can tell them apart.
import { AegisError } from "../errors.js";

export type SignatureErrorCode =
  | "NO_SIGNATURE"
  | "UNTRUSTED_KEY"
  | "KEY_NOT_VALID"
  | "INVALID_SIGNATURE"
  | "SUBJECT_MISMATCH"
  | "WRONG_PAYLOAD"
  | "INVALID_BUNDLE"
  | "NO_VALID_SIGNATURE"
  | "KEY_ERROR";

export class SignatureError extends AegisError<SignatureErrorCode> {}
