// Why a signature did not verify, one code per reason, so callers (the
// agent's telemetry, the CLI's exit message, `aegis verify --explain`) can
// tell them apart; CHECK_OF names the check each code belongs to.
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
  | "KEY_ERROR"
  // keyless
  | "KEYLESS_NOT_TRUSTED"
  | "UNTRUSTED_CHAIN"
  | "CERTIFICATE_NOT_VALID"
  | "MISSING_SCT"
  | "NO_LOG_ENTRY"
  | "LOG_ENTRY_UNTRUSTED"
  | "INCLUSION_PROOF_INVALID"
  | "LOG_ENTRY_MISMATCH"
  | "TIMESTAMP_INVALID"
  | "IDENTITY_MISMATCH"
  | "REQUIREMENT_NOT_MET"
  // the trusted root and its artifact
  | "TRUST_ROOT_INVALID"
  | "TRUST_ROOT_ROLLBACK";

export class SignatureError extends AegisError<SignatureErrorCode> {}

/** The verification checks, in the order a signature goes through them. */
export type SignatureCheck = "bundle" | "key" | "chain" | "log" | "identity" | "subject" | "requirement" | "trust";

export const CHECK_OF: Record<SignatureErrorCode, SignatureCheck> = {
  NO_SIGNATURE: "bundle",
  INVALID_BUNDLE: "bundle",
  NO_VALID_SIGNATURE: "bundle",
  UNTRUSTED_KEY: "key",
  KEY_NOT_VALID: "key",
  INVALID_SIGNATURE: "key",
  KEY_ERROR: "trust",
  KEYLESS_NOT_TRUSTED: "identity",
  UNTRUSTED_CHAIN: "chain",
  CERTIFICATE_NOT_VALID: "chain",
  MISSING_SCT: "chain",
  NO_LOG_ENTRY: "log",
  LOG_ENTRY_UNTRUSTED: "log",
  INCLUSION_PROOF_INVALID: "log",
  LOG_ENTRY_MISMATCH: "log",
  TIMESTAMP_INVALID: "log",
  IDENTITY_MISMATCH: "identity",
  SUBJECT_MISMATCH: "subject",
  WRONG_PAYLOAD: "subject",
  REQUIREMENT_NOT_MET: "requirement",
  TRUST_ROOT_INVALID: "trust",
  TRUST_ROOT_ROLLBACK: "trust",
};
