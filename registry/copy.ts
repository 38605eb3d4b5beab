// One copy routine for push (memory → registry/layout), pull (registry →
// memory/layout) and mirror (registry ↔ registry/layout), after oras-go's
// oras.Copy: children before parents, skip what the destination has, mount
// across repositories of one registry, digests never change. A blob streams
// from the source's unverified read straight into the destination's push,
// which verifies it: each byte is hashed once, and backpressure holds the
// download to the upload's pace, so memory stays bounded whatever the size.
// https://pkg.go.dev/oras.land/oras-go/v2#Copy
import { pipeline, Transform } from "node:stream";
import { InputError } from "../errors.js";
import { isContentFault, RegistryError } from "./errors.js";
import { HeldBytes, isDigest, readAll } from "./digest.js";
import { isManifestType, MAX_MANIFEST_SIZE, parseManifest, successors, type Descriptor } from "./oci.js";
import type { ReadOnlyTarget, Target } from "./storage.js";

export type CopyEvent =
  | { kind: "start"; desc: Descriptor }
  | { kind: "bytes"; desc: Descriptor; bytes: number }
  | { kind: "skip"; desc: Descriptor; reason: "exists" | "mounted" }
  | { kind: "done"; desc: Descriptor };

/** copy()'s default bounds on a graph: nodes walked and nesting depth. */
export const COPY_LIMITS = { maxNodes: 10_000, maxDepth: 8 } as const;

export interface CopyOptions {
  /**
   * Also copy the manifests that refer to the root (signatures), recursively.
   * Given descriptors, just these referrers of the root, as the caller
   * listed them, and none of theirs; the root's referrers are not listed
   * again (the agent copies the signatures its check found and verified: a
   * registry can attach anything to a digest). Each is still copied only if
   * its manifest names the root.
   */
  referrers?: boolean | readonly Descriptor[];
  /** Nodes (manifests and blobs) fetched or copied at once; default 8. An index with thousands of children opens no more sockets than this. */
  concurrency?: number;
  /** Most nodes in the graph (root, manifests, blobs, referrers); default 10,000. */
  maxNodes?: number;
  /** Deepest nesting of manifests below the root (an index of indexes…); default 8. */
  maxDepth?: number;
  /** Largest node (blob or manifest) copied, by its descriptor's size, refused before it is fetched; default none. */
  maxBlobSize?: number;
  /** Most bytes of all nodes of the graph together (those `dst` has or mounts included), refused before the node past it is fetched; default none. */
  maxTotalSize?: number;
  /**
   * Blobs the caller has itself just stored in `dst` (an Ingester's commit):
   * skipped as there without asking `dst`, whose check costs a request, or
   * for a layout hashing the blob again. The source need not hold them.
   */
  stored?: readonly Descriptor[];
  onEvent?: (event: CopyEvent) => void;
  /**
   * Bytes copied so far (blobs and manifests the destination already had,
   * or mounted, count as done) of the bytes in the graph found so far: the
   * total grows as manifests are read.
   */
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
  /**
   * Cancels the copy: requests and streams in flight stop, and the copy
   * rejects with the signal's reason once every started write has been
   * undone (a layout keeps no partial blob).
   */
  signal?: AbortSignal;
}

/** How deep referrers of referrers are followed (a signature of an attestation…). */
const MAX_REFERRER_DEPTH = 3;
/** Entries all referrers listings of one copy may name together, per node the graph may have. */
const LISTED_PER_NODE = 10;

/**
 * Copies the graph that `srcRef` (a tag or digest) names from `src` to `dst`,
 * then tags it `dstRef` when that is a tag (with the root's own write, where
 * `dst` is a ReferencePusher). Returns the root descriptor.
 */
export async function copy(src: ReadOnlyTarget, srcRef: string, dst: Target, dstRef?: string, options: CopyOptions = {}): Promise<Descriptor> {
  const { signal } = options;
  try {
    const root = await src.resolve(srcRef, { signal });
    if (dstRef && isDigest(dstRef) && dstRef !== root.digest) {
      throw new InputError("INVALID_REFERENCE", `destination digest ${dstRef} differs from the source's ${root.digest}`);
    }
    const tag = dstRef && !isDigest(dstRef) ? dstRef : undefined;
    // A ReferencePusher takes the root with its tag in one write; any other destination is tagged after.
    const byReference = tag !== undefined && dst.pushReference !== undefined;
    const copier = new GraphCopier(src, dst, options, byReference ? { root: root.digest, tag } : undefined);
    // The root's referrers (unless the caller names them) are listed while its graph is copied (a request or two, off the critical path), and copied after it.
    const { referrers } = options;
    const listed = isDescriptorList(referrers) ? Promise.resolve([...referrers]) : referrers === true ? copier.listReferrers(root) : undefined;
    listed?.catch(() => {}); // awaited below, unless the graph's copy fails first
    await copier.copyGraph(root, 0);
    signal?.throwIfAborted();
    if (tag && !byReference) await dst.tag(root, tag);
    if (listed) await copier.copyReferrers(root, 1, listed);
    return root;
  } catch (err) {
    // Whatever broke first when the signal fired (a stream, a socket), the caller asked for the signal's reason.
    signal?.throwIfAborted();
    throw err;
  }
}

/** Whether CopyOptions.referrers names the referrers to copy. */
function isDescriptorList(referrers: CopyOptions["referrers"]): referrers is readonly Descriptor[] {
  return Array.isArray(referrers);
}

/**
 * Blob bytes in pieces of at least PIECE bytes (the last may be less); a socket gives
 * 64 KiB chunks. Every stage after this one (the destination's hashing, a
 * pull's tee, zstd and tar reader, file writes) costs per chunk more than per
 * byte: 128 KiB pieces make a 50 MiB `aegis pull` ~10% faster. Larger ones
 * outlive the minor GCs that free spent buffers (util/spent-buffers.ts):
 * 512 KiB raised that pull's peak RSS from 64 to 107 MiB.
 */
const PIECE = 128 * 1024;

/** A pass-through that counts each chunk as it arrives (`counted`) and passes the bytes on in pieces of PIECE. */
function countingPieces(counted: (bytes: number) => void): Transform {
  let held: Buffer[] = [];
  let heldBytes = 0;
  const release = (stream: Transform) => {
    if (heldBytes === 0) return;
    stream.push(held.length === 1 ? held[0] : Buffer.concat(held, heldBytes));
    held = [];
    heldBytes = 0;
  };
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      counted(chunk.byteLength);
      held.push(chunk);
      heldBytes += chunk.byteLength;
      if (heldBytes >= PIECE) release(this);
      callback();
    },
    flush(callback) {
      release(this);
      callback();
    },
  });
}

class GraphCopier {
  private readonly done = new Map<string, Promise<void>>();
  /** The subject each manifest copied names (read from its verified bytes), to check a referrers listing against. */
  private readonly subjectOf = new Map<string, string | undefined>();
  /** Listed referrers read to check their subject before anything of theirs is copied: copyNode takes their bytes from here. */
  private readonly checked = new Map<string, Buffer>();
  /**
   * Listed referrers not copied (so far), with the subject their manifest
   * names (undefined: none, not a manifest, or unreadable): each is read
   * once and counts as a node, and may still be copied when listed under
   * the subject it names.
   */
  private readonly refused = new Map<string, string | undefined>();
  /** Subjects whose referrers were walked: each is walked once, however often it is listed. */
  private readonly walked = new Set<string>();
  /** Entries of the referrers listings walked so far (LISTED_PER_NODE). */
  private listedEntries = 0;
  private readonly limit: number;
  private readonly maxNodes: number;
  private readonly maxDepth: number;
  private readonly maxBlobSize: number;
  private readonly maxTotalSize: number;
  /** Whether blobs are mounted from the source: until a mount does not take (reuse()). */
  private mounting = true;
  private active = 0;
  private bytesDone = 0;
  private bytesTotal = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly src: ReadOnlyTarget,
    private readonly dst: Target,
    private readonly options: CopyOptions,
    /** The root to push with its tag, when the destination is a ReferencePusher. */
    private readonly rootTag?: { root: string; tag: string },
  ) {
    this.limit = options.concurrency ?? 8;
    this.maxNodes = options.maxNodes ?? COPY_LIMITS.maxNodes;
    this.maxDepth = options.maxDepth ?? COPY_LIMITS.maxDepth;
    this.maxBlobSize = options.maxBlobSize ?? Infinity;
    this.maxTotalSize = options.maxTotalSize ?? Infinity;
  }

  /** Copies `desc` (at `depth` below the root) and everything below it, each node once. */
  copyGraph(desc: Descriptor, depth: number): Promise<void> {
    let pending = this.done.get(desc.digest);
    if (!pending) {
      if (depth > this.maxDepth) {
        return Promise.reject(new RegistryError("SIZE_LIMIT", `${desc.digest} is nested ${depth} levels deep in ${this.src.name}, past the limit of ${this.maxDepth}`));
      }
      if (this.nodes() >= this.maxNodes) return Promise.reject(this.tooManyNodes());
      if (desc.size > this.maxBlobSize) {
        return Promise.reject(new RegistryError("SIZE_LIMIT", `${desc.digest} in ${this.src.name} is ${desc.size} bytes, over the limit of ${this.maxBlobSize}`));
      }
      if (this.bytesTotal + desc.size > this.maxTotalSize) {
        return Promise.reject(new RegistryError("SIZE_LIMIT", `the graph in ${this.src.name} is over ${this.maxTotalSize} bytes (at ${desc.digest})`));
      }
      // Registered before copyNode runs (it starts on the next microtask), so its limit check counts this node.
      pending = Promise.resolve().then(() => this.copyNode(desc, depth));
      this.done.set(desc.digest, pending);
      this.refused.delete(desc.digest); // a referrer refused under one subject, met in a graph: one node
      this.progress(0, desc.size);
    }
    return pending;
  }

  /** The referrers of `subject` in the source, asked for in one of the `concurrency` slots. */
  listReferrers(subject: Descriptor): Promise<Descriptor[]> {
    return this.limited(() => this.src.referrers(subject, undefined, { signal: this.options.signal }));
  }

  /**
   * Copies the referrers of `subject` (`listed`, when already asked for) and
   * theirs, to MAX_REFERRER_DEPTH (none of theirs when the caller named the
   * root's). The listing is the source's word: a referrer is copied, indexed
   * and followed only when its own manifest names `subject` (read first, so
   * nothing of a referrer that does not is copied), and each subject is
   * walked once, so a source listing one referrer many times, or under many
   * subjects, costs one walk (not N² listings and N³ index writes).
   */
  async copyReferrers(subject: Descriptor, depth: number, listed = this.listReferrers(subject)): Promise<void> {
    if (this.walked.has(subject.digest)) return;
    this.walked.add(subject.digest);
    const followed = !isDescriptorList(this.options.referrers);
    const all = await listed;
    // Every subject's listing is walked, and a listing may repeat what was refused: their entries, together, are bounded too.
    this.listedEntries += all.length;
    if (this.listedEntries > LISTED_PER_NODE * this.maxNodes) {
      throw new RegistryError("SIZE_LIMIT", `the referrers listings in ${this.src.name} name more than ${LISTED_PER_NODE * this.maxNodes} entries`);
    }
    const referrers = new Map(all.map((r) => [r.digest, r]));
    for (const referrer of referrers.values()) {
      this.options.signal?.throwIfAborted();
      if (!(await this.namesSubject(referrer, subject))) continue;
      // A referrer's own graph is bounded like the root's, and copied whole or the copy fails, as the root's is.
      await this.copyGraph(referrer, 0);
      await this.dst.indexReferrer(subject, referrer);
      if (depth < MAX_REFERRER_DEPTH && followed) await this.copyReferrers(referrer, depth + 1);
    }
  }

  /**
   * Whether the listed `referrer` is a manifest whose subject is `subject`.
   * One not yet copied is read (verified against its digest) and kept for
   * copyNode; one already refused, or copied as part of a graph, is known.
   */
  private async namesSubject(referrer: Descriptor, subject: Descriptor): Promise<boolean> {
    const { digest } = referrer;
    if (this.done.has(digest)) {
      await this.done.get(digest);
      return this.subjectOf.get(digest) === subject.digest;
    }
    if (this.refused.has(digest)) {
      if (this.refused.get(digest) !== subject.digest) return false;
      this.refused.delete(digest); // copied now: a node of the graph (read again by copyNode)
      return true;
    }
    if (this.nodes() >= this.maxNodes) throw this.tooManyNodes();
    let names: string | undefined;
    if (isManifestType(referrer.mediaType)) {
      try {
        const bytes = await this.readManifest(referrer);
        names = parseManifest(bytes, referrer.mediaType).subject?.digest;
        if (names === subject.digest) this.checked.set(digest, bytes);
      } catch (err) {
        // A listed referrer whose manifest is absent, malformed or not its digest's bytes is skipped; a registry that cannot be read fails the copy.
        if (!isContentFault(err)) throw err;
      }
    }
    if (names === subject.digest) return true;
    this.refused.set(digest, names);
    return false;
  }

  /** Nodes walked so far: those copied or under way, and referrers refused. */
  private nodes(): number {
    return this.done.size + this.refused.size;
  }

  private tooManyNodes(): RegistryError {
    return new RegistryError("SIZE_LIMIT", `the graph in ${this.src.name} has more than ${this.maxNodes} nodes`);
  }

  /** A manifest's exact bytes from the source, verified by fetch and within MAX_MANIFEST_SIZE. */
  private readManifest(desc: Descriptor): Promise<Buffer> {
    const { signal } = this.options;
    return this.limited(async () => readAll(await this.src.fetch(desc, { signal }), MAX_MANIFEST_SIZE, `manifest ${desc.digest}`));
  }

  private async copyNode(desc: Descriptor, depth: number): Promise<void> {
    const emit = this.options.onEvent ?? (() => {});
    const { signal } = this.options;
    if (isManifestType(desc.mediaType)) {
      // Manifests are copied as the exact bytes read (verified by fetch), never re-serialized.
      const bytes = this.checked.get(desc.digest) ?? (await this.readManifest(desc));
      this.checked.delete(desc.digest);
      const doc = parseManifest(bytes, desc.mediaType);
      this.subjectOf.set(desc.digest, doc.subject?.digest);
      const children = successors(doc);
      // Refused before any child is fetched: a huge index writes nothing.
      const fresh = new Set(children.map((c) => c.digest).filter((d) => !this.done.has(d)));
      if (this.nodes() + fresh.size > this.maxNodes) {
        throw new RegistryError("SIZE_LIMIT", `${desc.digest} in ${this.src.name} has ${children.length} children: the graph would pass the limit of ${this.maxNodes} nodes`);
      }
      // Every child settles before this fails, so no write is still under way when copy rejects.
      const settled = await Promise.allSettled(children.map((child) => this.copyGraph(child, depth + 1)));
      const failed = settled.find((c) => c.status === "rejected");
      if (failed) throw failed.reason;
      await this.limited(async () => {
        const { rootTag } = this;
        if (rootTag?.root === desc.digest && this.dst.pushReference) {
          // Stored and tagged in one request, whether or not the destination had it.
          await this.dst.pushReference(desc, new HeldBytes(bytes), rootTag.tag, { signal });
        } else {
          if (await this.dst.exists(desc, { signal })) return this.skipped(desc, "exists");
          await this.dst.push(desc, new HeldBytes(bytes), { signal });
        }
        this.progress(desc.size, 0);
        emit({ kind: "done", desc });
      });
      return;
    }
    await this.limited(async () => {
      const reused = await this.reuse(desc);
      if (reused) return this.skipped(desc, reused);
      emit({ kind: "start", desc });
      const counter = countingPieces((bytes) => {
        emit({ kind: "bytes", desc, bytes });
        this.progress(bytes, 0);
      });
      // Unverified on the way out: the destination's push verifies (its contract), so each byte is hashed once.
      const source = this.src.fetchUnverified ? await this.src.fetchUnverified(desc, { signal }) : await this.src.fetch(desc, { signal });
      const content = pipeline(source, counter, () => {});
      try {
        await this.dst.push(desc, content, { signal });
      } finally {
        // Whatever the push left unread (it failed, or had no need of it) frees its socket or file now.
        content.destroy();
      }
      emit({ kind: "done", desc });
    });
  }

  /**
   * Whether the blob `desc` need not be copied: the caller stored it, `dst`
   * mounted it from the source, or `dst` has it. A mount is asked first, not
   * after a HEAD (oras-go's order): on one registry it is then the one
   * request whether or not `dst` already had the blob, where HEAD then mount
   * were two in a row on the copy's critical path. Once a mount does not take
   * (another registry, which costs no request; a registry that declines, for
   * which mount() closes the upload it opened; or one whose mount fails: a
   * POST is not retried, where the HEAD after it is), the blobs asked for
   * after it only ask HEAD, so a registry without mounts costs a POST and a
   * DELETE only for the blobs asked for at once (`concurrency`) at the start.
   * https://github.com/opencontainers/distribution-spec/blob/main/spec.md#mounting-a-blob-from-another-repository
   */
  private async reuse(desc: Descriptor): Promise<"exists" | "mounted" | undefined> {
    const { signal } = this.options;
    if (this.options.stored?.some((d) => d.digest === desc.digest)) return "exists";
    if (this.mounting && this.dst.mountFrom) {
      const mounted = await this.dst.mountFrom(desc, this.src, { signal }).catch((err: unknown) => {
        signal?.throwIfAborted();
        if (!(err instanceof RegistryError)) throw err;
        return false;
      });
      if (mounted) return "mounted";
      this.mounting = false;
    }
    return (await this.dst.exists(desc, { signal })) ? "exists" : undefined;
  }

  private skipped(desc: Descriptor, reason: "exists" | "mounted"): void {
    this.progress(desc.size, 0);
    this.options.onEvent?.({ kind: "skip", desc, reason });
  }

  private progress(done: number, total: number): void {
    this.bytesDone += done;
    this.bytesTotal += total;
    this.options.onProgress?.(this.bytesDone, this.bytesTotal);
  }

  /** Runs `work` in one of the `concurrency` slots. */
  private async limited<T>(work: () => Promise<T>): Promise<T> {
    await this.slot();
    try {
      this.options.signal?.throwIfAborted();
      return await work();
    } finally {
      this.release();
    }
  }

  private async slot(): Promise<void> {
    if (this.active >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.active++;
  }

  private release(): void {
    this.active--;
    this.waiting.shift()?.();
  }
}
