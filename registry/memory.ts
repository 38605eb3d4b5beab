// An in-memory Target: for tests, and as the staging store of `push` (where
// a large layer stays in its file: see `link`).
import { addAbortSignal, Readable } from "node:stream";
import { RegistryError } from "./errors.js";
import { readAll, verifyBytes, verifyStream, isDigest } from "./digest.js";
import { isManifestType, type Descriptor } from "./oci.js";
import { addFallbackReferrer, fallbackReferrers } from "./referrers.js";
import type { AbortOptions, Deleter, Target } from "./storage.js";

export class MemoryTarget implements Target, Deleter {
  readonly name: string;
  /** Bytes held here, or a way to open bytes held elsewhere (link). */
  private readonly blobs = new Map<string, Buffer | (() => Readable)>();
  private readonly descriptors = new Map<string, Descriptor>();
  private readonly tagged = new Map<string, Descriptor>();

  constructor(name = "memory") {
    this.name = name;
  }

  async fetch(desc: Descriptor, options: AbortOptions = {}): Promise<Readable> {
    const stream = await this.fetchUnverified(desc, options);
    const data = this.blobs.get(desc.digest);
    if (Buffer.isBuffer(data)) {
      verifyBytes(desc, data, this.name);
      return stream;
    }
    return verifyStream(desc, stream, this.name);
  }

  async fetchUnverified(desc: Descriptor, options: AbortOptions = {}): Promise<Readable> {
    options.signal?.throwIfAborted();
    const data = this.blobs.get(desc.digest);
    if (!data) throw new RegistryError("NOT_FOUND", `${desc.digest} not found in ${this.name}`);
    const stream = Buffer.isBuffer(data) ? Readable.from([data]) : data();
    return options.signal ? addAbortSignal(options.signal, stream) : stream;
  }

  /**
   * Holds `desc` without its bytes: `open` gives them (a file on disk) each
   * time they are read, so staging a large layer to copy from costs no
   * memory. Nothing is checked here; every read is, by `fetch` or by the
   * pusher that `copy` hands `fetchUnverified`'s stream to.
   */
  link(desc: Descriptor, open: () => Readable): void {
    this.blobs.set(desc.digest, open);
    this.descriptors.set(desc.digest, { mediaType: desc.mediaType, digest: desc.digest, size: desc.size });
  }

  async push(desc: Descriptor, content: Readable, options: AbortOptions = {}): Promise<void> {
    options.signal?.throwIfAborted();
    const data = await readAll(content, desc.size, desc.digest);
    verifyBytes(desc, data, "pushed content");
    this.blobs.set(desc.digest, data);
    this.descriptors.set(desc.digest, { mediaType: desc.mediaType, digest: desc.digest, size: desc.size });
  }

  async exists(desc: Descriptor, options: AbortOptions = {}): Promise<boolean> {
    options.signal?.throwIfAborted();
    return this.blobs.has(desc.digest);
  }

  async delete(desc: Descriptor): Promise<void> {
    if (!this.blobs.delete(desc.digest)) throw new RegistryError("NOT_FOUND", `${desc.digest} not found in ${this.name}`);
    this.descriptors.delete(desc.digest);
    for (const [tag, tagged] of this.tagged) if (tagged.digest === desc.digest) this.tagged.delete(tag);
  }

  async resolve(reference: string, options: AbortOptions = {}): Promise<Descriptor> {
    options.signal?.throwIfAborted();
    const desc = isDigest(reference) ? this.descriptors.get(reference) : this.tagged.get(reference);
    if (!desc || !isManifestType(desc.mediaType)) {
      throw new RegistryError("NOT_FOUND", `${reference} not found in ${this.name}`);
    }
    return desc;
  }

  async tag(desc: Descriptor, tag: string): Promise<void> {
    if (!this.blobs.has(desc.digest)) throw new RegistryError("NOT_FOUND", `cannot tag ${desc.digest}: not in ${this.name}`);
    this.tagged.set(tag, { mediaType: desc.mediaType, digest: desc.digest, size: desc.size });
  }

  async tags(): Promise<string[]> {
    return [...this.tagged.keys()];
  }

  referrers(subject: Descriptor, artifactType?: string): Promise<Descriptor[]> {
    return fallbackReferrers(this, subject, artifactType);
  }

  indexReferrer(subject: Descriptor, referrer: Descriptor): Promise<void> {
    return addFallbackReferrer(this, subject, referrer);
  }
}
