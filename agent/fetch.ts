// Fetch and verify, trusting neither the assigner nor the registry: the
// artifact is read by digest (mirrors first, in order, then the artifact's
// reference). At the source, before anything is stored, a signature by a
// pinned key must cover that digest, the manifest must be a policy within the
// bundle cap, and its layer must be the checksum the assigner announced; only
// then do the layer and the signatures that verified come into a
// content-addressed OCI layout under the state dir, where all of it is
// checked again and the bundle decoded with bundle/'s caps. When no registry
// can be read, the same chain comes from the assigner (source.ts) and is
// verified the same way. Every byte is checked against its descriptor on the
// way in and again when read from the cache. An artifact already cached is
// verified there first, in one pass, with no registry.
import { AssignerError } from "../assigner/api/index.js";
import { decodeBundle, readPolicyManifest, type Bundle } from "../bundle/index.js";
import {
  copy,
  isManifestType,
  MAX_MANIFEST_SIZE,
  OciLayoutTarget,
  openReference,
  parseManifest,
  parseReference,
  readAll,
  referrersTag,
  RegistryError,
  SLOW_UPLINK_BYTES_PER_S,
  successors,
  type Descriptor,
  type ReadOnlyTarget,
  type RepositoryOptions,
} from "../registry/index.js";
import { verifyArtifact, verifySignatures, type TrustPolicy, type VerifiedSignature } from "../signing/index.js";
import { AgentError } from "./errors.js";
import { FetchFailure, isVerdict, type SourceFailure } from "./fetch-failure.js";
import { withDeadline } from "./deadline.js";
import { AssignerSource, type ArtifactReader } from "./source.js";

// The trust root's fetch (trust-root.ts) tells the same failures apart.
export { isUnavailable } from "./fetch-failure.js";

/** What the assigner says about an assigned artifact (only id, checksum and reference are used, and all are checked). */
export interface Assigned {
  id: string;
  checksum: string;
  reference: string;
  name: string;
}

/** What the cache gave for an artifact held: the artifact verified, or why it cannot (ArtifactCache.verifyHeld). */
export type Held = { artifact: VerifiedArtifact } | { failure: unknown };

/** What a check in the cache compares with: the digest, and the checksum the assigner announced, if it was asked. */
type Announced = Pick<Assigned, "id"> & { checksum: string | undefined };

export interface VerifiedArtifact {
  id: string;
  layer: Descriptor;
  bundle: Bundle;
  signature: VerifiedSignature;
  /** Where it came from: the cache, a mirror, the reference or the assigner. */
  source: string;
}

export interface FetchOptions {
  /** Repositories (`host/repo` or `oci:<dir>`) tried in order before the artifact's reference. */
  mirrors: readonly string[];
  trust: TrustPolicy;
  /** The last source, after the mirrors and the reference: the assigner's copy of the chain (agent token). */
  assigner?: ArtifactReader;
  /**
   * How long the pull from the assigner may take (ms; default 30 s), on top
   * of the layer's size at 64 KiB/s once its manifest declares it
   * (assignerAllowanceMs): a bundle of tens of MiB comes through a slow
   * link, and an assigner that stalls before the manifest is given up soon.
   */
  assignerTimeoutMs?: number;
  /**
   * How long one mirror or the reference may take to serve the whole
   * artifact: manifest, signatures and layer (ms); default 5 minutes. Each
   * request has its own deadline, but a registry answering each just inside
   * it could hold the agent's pass for hours.
   */
  pullTimeoutMs?: number;
  /** Where the artifact's reference, the assigner's word, may point (the mirrors are the operator's own); default anywhere. */
  references?: ReferencePolicy;
  repository?: RepositoryOptions;
  signal?: AbortSignal;
}

/**
 * Where an artifact's reference may point, when a policy is given (the agent
 * gives one): never at a directory on this host (`oci:<dir>`), and only at
 * `registries` when they are listed. The assigner chooses references: one
 * that lies could point them at the agent's own directories or at hosts on
 * its network, and learn from the failures what is there.
 */
export interface ReferencePolicy {
  /** The registries a reference may name, `host[:port]` spelled as references spell it (any case); undefined: any. */
  registries?: readonly string[];
}

/** The pull timeout of a mirror or the reference when none is given (FetchOptions.pullTimeoutMs). */
export const DEFAULT_PULL_TIMEOUT_MS = 300_000;

/** How long the assigner may take to serve an artifact whose layer is `layerSize` bytes: `ms`, plus the layer at the slow link's pace (64 KiB/s) a registry upload is allowed. */
export function assignerAllowanceMs(ms: number, layerSize: number): number {
  return ms + (layerSize / SLOW_UPLINK_BYTES_PER_S) * 1000;
}

export class ArtifactCache {
  readonly layout: OciLayoutTarget;

  constructor(dir: string) {
    this.layout = new OciLayoutTarget(dir);
  }

  /**
   * Pulls (or finds in the cache) and verifies one assigned artifact from
   * the mirrors in order, then the reference; when none of them could be
   * read at all (each failed REGISTRY_UNAVAILABLE), from the assigner. A
   * registry that served content which failed verification is a verdict:
   * the assigner is not asked to overrule it. Throws a FetchFailure naming
   * every source tried and its failure, with the code of the first verdict
   * among them, else of the last registry's failure (fetch-failure.ts).
   */
  async fetchVerified(assigned: Assigned, options: FetchOptions): Promise<VerifiedArtifact> {
    const cached = await this.fromCache(assigned, options);
    if ("artifact" in cached) return cached.artifact;
    const failures: SourceFailure[] = [];
    // The reference is read (and refused, if malformed) in its turn: a mirror may serve the digest whatever the assigner says it is called.
    const pullMs = options.pullTimeoutMs ?? DEFAULT_PULL_TIMEOUT_MS;
    const sources = [...options.mirrors.map((m) => ({ name: m, ref: () => `${m}@${assigned.id}` })), { name: assigned.reference, ref: () => referenceOf(assigned, options.references) }];
    for (const source of sources) {
      options.signal?.throwIfAborted();
      // Held by a timer (deadline.ts), not an AbortSignal.timeout() that Node may collect before it fires.
      const { signal, deadline, clear } = withDeadline(options.signal, pullMs, () => new DOMException(`no answer within ${pullMs} ms`, "TimeoutError"));
      try {
        const ref = source.ref();
        try {
          return await this.pullAndVerify(ref, openReference(ref, options.repository ?? {}).target, assigned, { ...options, signal });
        } catch (err) {
          // Listed under the source's name (FetchFailure), so not named again here.
          throw deadline.aborted ? new RegistryError("TIMEOUT", `did not serve ${assigned.id} within ${pullMs} ms`, { cause: err }) : err;
        }
      } catch (err) {
        options.signal?.throwIfAborted();
        failures.push({ source: source.name, error: err });
      } finally {
        clear();
      }
    }
    const { assigner } = options;
    if (assigner && !failures.some((f) => isVerdict(f.error))) {
      const ms = options.assignerTimeoutMs ?? 30_000;
      const where = `the assigner at ${assigner.baseUrl}`;
      // Moved once the manifest declares the layer's size: the manifest and signatures are small, the layer may be
      // 64 MiB on a slow link.
      let allowed = ms;
      const { signal, deadline, moveTo, clear } = withDeadline(options.signal, ms, () => new DOMException(`no answer within ${Math.round(allowed)} ms`, "TimeoutError"));
      const allowLayer = (layer: Descriptor) => moveTo((allowed = assignerAllowanceMs(ms, layer.size)));
      try {
        return await this.pullAndVerify(where, new AssignerSource(assigner, assigned.id, signal), assigned, { ...options, signal }, allowLayer);
      } catch (err) {
        options.signal?.throwIfAborted();
        failures.push({ source: where, error: deadline.aborted ? new AssignerError("UNAVAILABLE", `${where} did not serve ${assigned.id} within ${Math.round(allowed)} ms`, { cause: err }) : err });
      } finally {
        clear();
      }
    }
    throw new FetchFailure(assigned.id, failures);
  }

  /**
   * An artifact the cache already holds is verified there, with no registry:
   * its signature by a pinned key, the announced checksum, and the layer,
   * hashed in the one pass that decodes it (nothing is trusted for being in
   * the cache, nor for its size or date). Anything missing or failing is
   * returned as the failure (a cancelled check throws): fetchVerified asks
   * the registries then, and their copy repairs the cache.
   */
  private async fromCache(assigned: Announced, options: Pick<FetchOptions, "trust" | "signal">): Promise<Held> {
    const { signal } = options;
    try {
      const root = await this.layout.resolve(assigned.id, signal ? { signal } : {});
      return { artifact: await this.verifyInCache("the cache", root, assigned, options) };
    } catch (failure) {
      signal?.throwIfAborted();
      return { failure };
    }
  }

  /**
   * An artifact installed before, verified in the cache alone: for a pass
   * that cannot ask the assigner, a program the kernel lost (a reboot) is
   * loaded again from what was verified when it was installed; and a program
   * that runs is verified again once the trust in force changes
   * (trust-check.ts). Its signature by a pinned key and its digests are
   * checked as on any pass; there is no announced checksum to compare, and
   * none is needed (the layer's digest is in the signed manifest). A failure
   * is returned, not thrown, for the caller to say why.
   */
  async verifyHeld(id: string, options: Pick<FetchOptions, "trust" | "signal">): Promise<Held> {
    return this.fromCache({ id, checksum: undefined }, options);
  }

  /**
   * Checks the artifact at `target` before storing any of it: whoever names a
   * digest (a lying assigner) or serves it (a hostile registry) could
   * otherwise fill the state dir with an unsigned 10 GB layer or with
   * referrers of any kind. The checks read the root manifest and at most
   * MAX_SIGNATURES small signatures. Then the artifact and only the
   * signatures the requirement rests on are copied into the cache (a cosign
   * `.sig` one with its tag), and checked there again. `onLayer` is told the
   * layer the manifest declares before any of it is read.
   */
  private async pullAndVerify(source: string, target: ReadOnlyTarget, assigned: Assigned, options: FetchOptions, onLayer?: (layer: Descriptor) => void): Promise<VerifiedArtifact> {
    const { signal } = options;
    const abort = signal ? { signal } : {};
    const root = await target.resolve(assigned.id, abort);
    const signatures = await verifySignatures(target, assigned.id, options.trust, abort);
    const { layer } = await readPolicyManifest(target, root, abort);
    checkChecksum(layer, assigned);
    onLayer?.(layer);
    // The signature check listed the referrers: copy takes those it verified, and lists none again.
    const referrers = signatures.filter((s) => s.format === "sigstore-bundle").map((s) => s.descriptor);
    await copy(target, assigned.id, this.layout, undefined, { referrers, ...abort });
    for (const legacy of signatures.filter((s) => s.format === "cosign-legacy")) await copy(target, legacy.signature, this.layout, `${referrersTag(root)}.sig`, abort);
    return this.verifyInCache(source, root, assigned, options);
  }

  /** Checks what the cache holds for `root`: the assigned digest, a trusted signature, the checksum, the bundle. */
  private async verifyInCache(source: string, root: Descriptor, assigned: Announced, options: Pick<FetchOptions, "trust" | "signal">): Promise<VerifiedArtifact> {
    const { signal } = options;
    if (root.digest !== assigned.id) throw new AgentError("BAD_ASSIGNMENT", `${source} resolved to ${root.digest}, not ${assigned.id}`);
    const signature = await verifyArtifact(this.layout, assigned.id, options.trust, signal ? { signal } : {});
    const { layer } = await readPolicyManifest(this.layout, root, signal ? { signal } : {});
    checkChecksum(layer, assigned);
    const bundle = await decodeBundle(await this.layout.fetch(layer, signal ? { signal } : {}), `${source}`);
    return { id: assigned.id, layer, bundle, signature, source };
  }

  /**
   * Deletes everything in the cache that is not reachable from `keep`
   * (each kept manifest, its blobs, its signature referrers and their
   * fallback tag index, and a cosign `.sig` signature under its tag), through
   * the layout's Deleter.
   */
  async prune(keep: Iterable<string>): Promise<string[]> {
    const reachable = new Set<string>();
    const visit = async (desc: Descriptor): Promise<void> => {
      if (reachable.has(desc.digest)) return;
      if (!(await this.layout.exists(desc))) return;
      reachable.add(desc.digest);
      if (!isManifestType(desc.mediaType)) return;
      const doc = parseManifest(await readAll(await this.layout.fetch(desc), MAX_MANIFEST_SIZE, desc.digest), desc.mediaType);
      for (const child of successors(doc)) await visit(child);
    };
    for (const id of keep) {
      let root: Descriptor;
      try {
        root = await this.layout.resolve(id);
      } catch {
        continue;
      }
      await visit(root);
      for (const referrer of await this.layout.referrers(root)) await visit(referrer);
      for (const tag of [referrersTag(root), `${referrersTag(root)}.sig`]) {
        const tagged = await this.layout.resolve(tag).catch(() => undefined);
        if (tagged) await visit(tagged);
      }
    }
    // A download killed mid-way (SIGKILL, a crash) leaves its temp file: gone once unchanged for an hour, as the
    // cache's first write after a start does too.
    await this.layout.removeStaleTemps();
    const removed: string[] = [];
    for (const digest of await this.layout.digests()) {
      if (reachable.has(digest)) continue;
      await this.layout.delete({ mediaType: "application/octet-stream", digest, size: 0 });
      removed.push(digest);
    }
    return removed;
  }
}

/** The policy layer must be the checksum the assigner announced. */
function checkChecksum(layer: Descriptor, assigned: Announced): void {
  if (assigned.checksum === undefined) return;
  const expected = `sha256:${assigned.checksum.replace(/^sha256-/, "")}`;
  if (layer.digest !== expected) {
    throw new AgentError("CHECKSUM_MISMATCH", `${assigned.id}: the layer is ${layer.digest}, the assigner announced checksum ${assigned.checksum}`);
  }
}

/**
 * The artifact's reference pinned to its id: a reference naming another
 * digest is refused (a verdict on the assignment), and one pointing where
 * `policy` does not allow is not read (not a verdict: the assigner's copy
 * is asked next).
 */
function referenceOf(assigned: Assigned, policy: ReferencePolicy | undefined): string {
  const ref = parseReference(assigned.reference);
  if (ref.digest && ref.digest !== assigned.id) throw new AgentError("BAD_ASSIGNMENT", `reference ${assigned.reference} names another digest than ${assigned.id}`);
  // The messages name no allowed registry: what the agent reports goes to the assigner, whom this guards against.
  if (policy && ref.kind === "layout") {
    throw new AgentError("REFERENCE_REFUSED", "not read: references from the assigner must name a registry, not a directory on this host (a local layout is given with --registry-mirror)");
  }
  if (policy?.registries && ref.kind === "remote" && !policy.registries.some((r) => r.toLowerCase() === ref.registry.toLowerCase())) {
    throw new AgentError("REFERENCE_REFUSED", `not read: ${ref.registry} is not among the registries allowed (--registry-allow)`);
  }
  const base = assigned.reference.replace(/@sha256:[0-9a-f]{64}$/, "");
  return `${base}@${assigned.id}`;
}
