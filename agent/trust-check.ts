// Installed programs against the trust in force now. A program is verified
// when it is installed, but the trust it was verified under can change while
// it runs: a followed trust root that drops a key or an identity (a key
// revoked after a theft), a key's validUntil passing, or an agent started
// again with another --trust. So each installed program is verified again,
// from the cache and with no network (ArtifactCache.verifyHeld), once under
// each trust it runs under (trustBasis); the agent takes out at once one the
// trust refuses (agent.ts), unless a fresh fetch of its signatures finds one
// the trust accepts: a key rotation prepared ahead (each program signed again
// by the new key before the old one leaves the trust) takes no program out.
//
// Only a verdict of trust refuses a program: a key, chain, log, identity or
// requirement check that fails (isTrustVerdict). A cache that cannot give it,
// or gives bytes that fail their own checks (a blob gone, a signature
// unreadable), says nothing of whom the trust accepts: such a program is
// unchecked, fetched again from its registries if still assigned (which
// repairs the cache, or gives a verdict), else left in force, said once. A
// refusal stands until the program verifies again: pruning its blobs from
// the cache, once its removal was tried, cannot turn it into "unchecked".
import { describeError } from "../errors.js";
import { CHECK_OF, keyValidity, SignatureError, type TrustPolicy } from "../signing/index.js";
import type { ArtifactCache } from "./fetch.js";
import { FetchFailure } from "./fetch-failure.js";

/**
 * What names the trust in force, for TrustCheck: the followed root held
 * (`root`, its digest) and which of the keys are within their validity
 * windows now. The local --trust is read once, at the agent's start.
 */
export function trustBasis(trust: TrustPolicy, root: string | undefined, now = new Date()): string {
  return `${root ?? ""} ${trust.keys.map((key) => (keyValidity(key, now) ? "-" : "+")).join("")}`;
}

/** The checks whose failure says the trust refuses a signature, not that its bytes are damaged. */
const TRUST_CHECKS = new Set(["key", "chain", "log", "identity", "requirement"]);

/** Whether `err` is a verdict of trust (TRUST_CHECKS) on a signature. */
export function isTrustVerdict(err: unknown): err is SignatureError {
  return err instanceof SignatureError && TRUST_CHECKS.has(CHECK_OF[err.code]);
}

/** The verdict of trust a fetch failed with: the failure it reports (fetch-failure.ts), if isTrustVerdict. */
export function trustVerdictOf(err: unknown): SignatureError | undefined {
  const chosen = err instanceof FetchFailure ? err.cause : err;
  return isTrustVerdict(chosen) ? chosen : undefined;
}

export interface TrustCheckResult {
  /** Digests refused before, each with its verdict: refused until they verify again. */
  refused: Map<string, SignatureError>;
  /**
   * Digests whose cached signatures the trust refuses, found by this check,
   * each with its verdict: the caller refuses each (refuse), or fetches its
   * signatures again first (verified, if they verify).
   */
  verdicts: Map<string, SignatureError>;
  /** Digests the cache could not give verified for want of bytes, not of trust. */
  unchecked: Set<string>;
}

export class TrustCheck {
  /** Per installed digest, the trust (its basis) it last verified under. */
  private readonly checked = new Map<string, string>();
  /** Digests refused, until they verify again. */
  private readonly refusals = new Map<string, SignatureError>();
  /** Unchecked digests already said, once each until they verify. */
  private readonly saidUnchecked = new Set<string>();

  constructor(
    private readonly cache: ArtifactCache,
    private readonly log: (line: string) => void,
  ) {}

  /** `id` verified under the trust named `basis` (fetched, or loaded again from the cache): any refusal ends. */
  verified(id: string, basis: string): void {
    this.checked.set(id, basis);
    this.refusals.delete(id);
    this.saidUnchecked.delete(id);
  }

  /** `id` refused by a verdict of trust met elsewhere (its registries, on a fetch). */
  refuse(id: string, verdict: SignatureError): void {
    this.refusals.set(id, verdict);
    this.checked.delete(id);
  }

  /**
   * The installed `programs` under `trust`, named by `basis` (trustBasis,
   * taken before any check so that a window closing meanwhile is seen at the
   * next call): one already verified under it is not verified again, one
   * refused before is not checked again.
   */
  async check(programs: Iterable<[string, { name: string; version: string }]>, trust: TrustPolicy, basis: string, signal: AbortSignal): Promise<TrustCheckResult> {
    const result: TrustCheckResult = { refused: new Map(), verdicts: new Map(), unchecked: new Set() };
    for (const [id, { name, version }] of programs) {
      const refusal = this.refusals.get(id);
      if (refusal) {
        result.refused.set(id, refusal);
        continue;
      }
      if (this.checked.get(id) === basis) continue;
      const held = await this.cache.verifyHeld(id, { trust, signal });
      if ("artifact" in held) {
        this.verified(id, basis);
      } else if (isTrustVerdict(held.failure)) {
        result.verdicts.set(id, held.failure);
      } else {
        result.unchecked.add(id);
        if (!this.saidUnchecked.has(id)) this.log(`${name} ${version} ${id} cannot be verified again under the trust in force from the cache (${describeError(held.failure)}): fetched again if assigned, else left in force; checked again at every pass`);
        this.saidUnchecked.add(id);
      }
    }
    return result;
  }

  /** Drops what is remembered of digests not in `current` (neither installed nor assigned any more). */
  forget(current: ReadonlySet<string>): void {
    for (const byId of [this.checked, this.refusals]) for (const id of byId.keys()) if (!current.has(id)) byId.delete(id);
    for (const id of this.saidUnchecked) if (!current.has(id)) this.saidUnchecked.delete(id);
  }
}
