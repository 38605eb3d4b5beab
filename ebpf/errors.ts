import { AegisError } from "../errors.js";

export type EbpfErrorCode =
  | "UNKNOWN_PROGRAM"
  | "COMPILE_FAILED"
  | "LOAD_FAILED"
  | "BPFFS_FAILED"
  | "BPFTOOL_FAILED"
  | "LIBBPF_UNAVAILABLE"
  | "LIBBPF_FAILED"
  | "MAP_MISMATCH"
  /** The rules' candidate lists would pass MAX_CANDIDATES (rules.ts). */
  | "TOO_MANY_CANDIDATES"
  | "TC_FAILED"
  /** A tool (tc, ip, bpftool, clang) did not finish within its deadline (exec.ts). */
  | "TIMEOUT"
  | "INVALID_PIN_PATH"
  | "INVALID_PROGRAM_ID"
  | "INVALID_HOOK"
  | "NOT_LOADED"
  | "NOT_ATTACHED"
  | "STILL_ATTACHED";

/** Building, loading, filling, running or attaching an eBPF program failed. */
export class EbpfError extends AegisError<EbpfErrorCode> {}
