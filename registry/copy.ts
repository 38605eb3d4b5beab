// One copy routine for push (memory → registry/layout), pull (registry →
// memory/layout) and mirror (registry ↔ registry/layout), after oras-go's
// oras.Copy: children before parents, skip what the destination has, mount
// across repositories of one registry, digests never change.
// https://pkg.go.dev/oras.land/oras-go/v2#Copy
import { pipeline, Readable, Transform } from "node:stream";
import { InputError } from "../errors.js";
import { isDigest, readAll } from "./digest.js";
import { isManifestType, MAX_MANIFEST_SIZE, parseManifest, successors, type Descriptor } from "./oci.js";
import { RemoteRepository } from "./remote/repository.js";
import type { ReadOnlyTarget, Target } from "./storage.js";

export type CopyEvent =
  | { kind: "start"; desc: Descriptor }
  | { kind: "bytes"; desc: Descriptor; bytes: number }
  | { kind: "skip"; desc: Descriptor; reason: "exists" | "mounted" }
  | { kind: "done"; desc: Descriptor };

export interface CopyOptions {
  /** Also copy the manifests that refer to the root (signatures), recursively. */
  referrers?: boolean;
  /** Blobs copied at once; default 3. */
  concurrency?: number;
  onEvent?: (event: CopyEvent) => void;
  /**
   * Cancels the copy: requests and streams in flight stop, and the copy
   * rejects with the signal's reason once every started write has been
   * undone (a layout keeps no partial blob).
   */
  signal?: AbortSignal;
}

/** How deep referrers of referrers are followed (a signature of an attestation…). */
const MAX_REFERRER_DEPTH = 3;

/**
 * Copies the graph that `srcRef` (a tag or digest) names from `src` to `dst`,
 * then tags it `dstRef` when that is a tag. Returns the root descriptor.
 */
export async function copy(src: ReadOnlyTarget, srcRef: string, dst: Target, dstRef?: string, options: CopyOptions = {}): Promise<Descriptor> {
  const { signal } = options;
  try {
    const root = await src.resolve(srcRef, { signal });
    if (dstRef && isDigest(dstRef) && dstRef !== root.digest) {
      throw new InputError("INVALID_REFERENCE", `destination digest ${dstRef} differs from the source's ${root.digest}`);
    }
    const copier = new GraphCopier(src, dst, options);
    await copier.copyGraph(root);
    signal?.throwIfAborted();
    if (dstRef && !isDigest(dstRef)) await dst.tag(root, dstRef);
    if (options.referrers) await copier.copyReferrers(root, 1);
    return root;
  } catch (err) {
    // Whatever broke first when the signal fired (a stream, a socket), the caller asked for the signal's reason.
    signal?.throwIfAborted();
    throw err;
  }
}

class GraphCopier {
  private readonly done = new Map<string, Promise<void>>();
  private readonly limit: number;
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly src: ReadOnlyTarget,
    private readonly dst: Target,
    private readonly options: CopyOptions,
  ) {
    this.limit = options.concurrency ?? 3;
  }

  /** Copies `desc` and everything below it, each node once. */
  copyGraph(desc: Descriptor): Promise<void> {
    let pending = this.done.get(desc.digest);
    if (!pending) {
      pending = this.copyNode(desc);
      this.done.set(desc.digest, pending);
    }
    return pending;
  }

  async copyReferrers(subject: Descriptor, depth: number): Promise<void> {
    for (const referrer of await this.src.referrers(subject)) {
      this.options.signal?.throwIfAborted();
      await this.copyGraph(referrer);
      await this.dst.indexReferrer(subject, referrer);
      if (depth < MAX_REFERRER_DEPTH) await this.copyReferrers(referrer, depth + 1);
    }
  }

  private async copyNode(desc: Descriptor): Promise<void> {
    const emit = this.options.onEvent ?? (() => {});
    const { signal } = this.options;
    if (isManifestType(desc.mediaType)) {
      // Manifests are copied as the exact bytes read (verified by fetch), never re-serialized.
      const bytes = await readAll(await this.src.fetch(desc, { signal }), MAX_MANIFEST_SIZE, `manifest ${desc.digest}`);
      // Every child settles before this fails, so no write is still under way when copy rejects.
      const children = await Promise.allSettled(successors(parseManifest(bytes, desc.mediaType)).map((child) => this.copyGraph(child)));
      const failed = children.find((c) => c.status === "rejected");
      if (failed) throw failed.reason;
      if (await this.dst.exists(desc, { signal })) return emit({ kind: "skip", desc, reason: "exists" });
      await this.dst.push(desc, Readable.from([bytes]), { signal });
      return emit({ kind: "done", desc });
    }
    await this.slot();
    try {
      signal?.throwIfAborted();
      if (await this.dst.exists(desc, { signal })) return emit({ kind: "skip", desc, reason: "exists" });
      if (await this.tryMount(desc)) return emit({ kind: "skip", desc, reason: "mounted" });
      emit({ kind: "start", desc });
      const counter = new Transform({
        transform(chunk: Buffer, _encoding, callback) {
          emit({ kind: "bytes", desc, bytes: chunk.byteLength });
          callback(null, chunk);
        },
      });
      await this.dst.push(desc, pipeline(await this.src.fetch(desc, { signal }), counter, () => {}), { signal });
      emit({ kind: "done", desc });
    } finally {
      this.release();
    }
  }

  /** Cross-repository mount when both ends are repositories of the same registry. */
  private async tryMount(desc: Descriptor): Promise<boolean> {
    const { src, dst } = this;
    if (!(src instanceof RemoteRepository && dst instanceof RemoteRepository)) return false;
    if (src.client.baseUrl !== dst.client.baseUrl || src.repository === dst.repository) return false;
    return dst.mount(desc, src.repository);
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
