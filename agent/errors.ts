// The agent's own error codes; failures from below (a SignatureError's
// NO_SIGNATURE, a RegistryError's DIGEST_MISMATCH, an EbpfError's
// LOAD_FAILED) keep theirs and are reported with them.
import { AegisError } from "../errors.js";

export type AgentErrorCode =
  /** The layer digest is not the checksum the assigner announced. */
  | "CHECKSUM_MISMATCH"
  /** No mirror and not the artifact's reference could be read. */
  | "UNAVAILABLE"
  /** The assigner sent something unusable (a bad reference, say). */
  | "BAD_ASSIGNMENT"
  /**
   * The assigner's reference names a place this agent does not read from: a
   * directory on this host (`oci:`), or a registry outside --registry-allow.
   * Not a verdict: the assigner's own copy is asked instead.
   */
  | "REFERENCE_REFUSED"
  /** Another agent runs on the state dir (StateDir.lock). */
  | "STATE_DIR_IN_USE";

export class AgentError extends AegisError<AgentErrorCode> {}

