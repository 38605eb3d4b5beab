// Why no source gave an artifact: each source's failure, named by source, in
// one error whose code is the one that says most. A verdict on content a
// source served (NOT_VERIFIED, UNTRUSTED_KEY, DIGEST_MISMATCH…) outranks any
// source that could not be read, whichever was tried last, so a stale or
// tampering mirror is reported as such and not hidden behind an unreachable
// reference. What the agent sends the assigner (reportedReason) carries no
// text a server wrote: the assigner chooses the references, and could point
// them at internal hosts to read their answers back from the reports.
import { AssignerError } from "../assigner/api/index.js";
import { AegisError, describeError, errorCode } from "../errors.js";
import { RegistryError } from "../registry/index.js";
import { clip } from "../util/index.js";

/** One source tried, and how it failed. */
export interface SourceFailure {
  /** The mirror, reference or assigner, as the reports name it. */
  source: string;
  error: unknown;
}

// A reference comes from the assigner, and an error's text may be long (a
// registry's body, a verifier's list): each is cut so a report stays small.
const MAX_SOURCE = 200;
const MAX_TEXT = 500;

/** Every source failed: the code and `cause` are those of the chosen failure, the message names each source's. */
export class FetchFailure extends AegisError {
  readonly failures: readonly SourceFailure[];

  constructor(id: string, failures: readonly SourceFailure[]) {
    const chosen = chooseFailure(failures);
    const each = failures.map((f) => `${clip(f.source, MAX_SOURCE)}: ${clip(describeError(f.error), MAX_TEXT)}`);
    super(errorCode(chosen.error), `no source gave ${id}: ${each.join("; ")}`, { cause: chosen.error });
    this.failures = failures;
  }
}

/**
 * The failure to report: the first verdict, in the order tried; else the
 * last source's (the assigner's, when it was asked and answered, else the
 * last registry asked's: an assigner that cannot answer says nothing of the
 * artifact; a reference not read, REFERENCE_REFUSED, was not asked, and is
 * the code only when nothing else was tried).
 */
function chooseFailure(failures: readonly SourceFailure[]): SourceFailure {
  const verdict = failures.find((f) => isVerdict(f.error));
  if (verdict) return verdict;
  const asked = failures.filter((f) => errorCode(f.error) !== "REFERENCE_REFUSED");
  const registries = asked.filter((f) => !(f.error instanceof AssignerError));
  return registries.at(-1) ?? asked.at(-1) ?? failures.at(-1)!;
}

/** Whether `err` is a verdict on what a source served, not a source that could not be read at all. */
export function isVerdict(err: unknown): boolean {
  return !(err instanceof AssignerError) && !isUnavailable(err);
}

/** Whether `err` says a registry could not be read at all (REGISTRY_UNAVAILABLE), not what it served. */
export function isUnavailable(err: unknown): boolean {
  return REGISTRY_UNAVAILABLE.has(errorCode(err));
}

/**
 * Failures to read a registry at all (down, refusing us, throttling, not
 * holding the artifact, or one this agent does not read from), as opposed
 * to verdicts on what it served.
 */
const REGISTRY_UNAVAILABLE = new Set([
  "REFERENCE_REFUSED",
  "UNREACHABLE",
  "TIMEOUT",
  "HTTP_ERROR",
  "TOOMANYREQUESTS",
  "UNAUTHORIZED",
  "DENIED",
  "NO_CREDENTIALS",
  "INSECURE",
  "NOT_FOUND",
  "NAME_UNKNOWN",
  "MANIFEST_UNKNOWN",
  "BLOB_UNKNOWN",
]);

/**
 * The reason to report for a failed fetch: each source with its code, and
 * for a registry's error only the HTTP status (the registry's host and
 * repository are in the source's name), never the text it answered with;
 * the agent's own log has the whole of it (describeError).
 */
export function reportedReason(err: unknown): string {
  const failures = err instanceof FetchFailure ? err.failures : [{ source: "", error: err }];
  return failures.map((f) => `${f.source ? `${clip(f.source, MAX_SOURCE)}: ` : ""}${summary(f.error)}`).join("; ");
}

/**
 * An error in a report: its messages down the cause chain, cut, up to a
 * registry's error, which is given by code and HTTP status alone (its
 * message quotes what the server answered).
 */
function summary(err: unknown): string {
  const parts: string[] = [];
  let current: unknown = err;
  for (let depth = 0; current !== undefined && depth < 5; depth++) {
    if (current instanceof RegistryError) {
      parts.push(`${current.code}${current.status === undefined ? "" : ` (HTTP ${current.status})`}`);
      break;
    }
    const message = current instanceof Error ? current.message : String(current);
    if (message && !parts.some((p) => p.includes(message))) parts.push(message);
    current = current instanceof Error ? current.cause : undefined;
  }
  return clip(parts.join(": "), MAX_TEXT);
}
