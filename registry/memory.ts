// An in-memory Target: for tests, and as the staging store of `push`.
import { addAbortSignal, Readable } from "node:stream";
import { RegistryError } from "./errors.js";
import { descriptorFor, readAll, verifyBytes, isDigest } from "./digest.js";
import { isManifestType, type Descriptor } from "./oci.js";
import { addFallbackReferrer, fallbackReferrers } from "./referrers.js";
import type { AbortOptions, Deleter, Ingested, Target } from "./storage.js";

export class MemoryTarget implements Target, Deleter {
  readonly name: string;
  private readonly blobs = new Map<string, Buffer>();
  private readonly descriptors = new Map<string, Descriptor>();
  private readonly tagged = new Map<string, Descriptor>();

  constructor(name = "memory") {
    this.name = name;
  }

  async fetch(desc: Descriptor, options: AbortOptions = {}): Promise<Readable> {
    const data = this.blobs.get(desc.digest);
    if (data) verifyBytes(desc, data, this.name);
    return this.fetchUnverified(desc, options);
  }

  async fetchUnverified(desc: Descriptor, options: AbortOptions = {}): Promise<Readable> {
    options.signal?.throwIfAborted();
    const data = this.blobs.get(desc.digest);
    if (!data) throw new RegistryError("NOT_FOUND", `${desc.digest} not found in ${this.name}`);
    const stream = Readable.from([data]);
    return options.signal ? addAbortSignal(options.signal, stream) : stream;
  }

  async push(desc: Descriptor, content: Readable, options: AbortOptions = {}): Promise<void> {
    options.signal?.throwIfAborted();
    const data = await readAll(content, desc.size, desc.digest);
    verifyBytes(desc, data, "pushed content");
    this.store(desc, data);
  }

  /** Reads `content` into memory and names it; commit keeps it. */
  async ingest(mediaType: string, size: number, content: Readable, options: AbortOptions = {}): Promise<Ingested> {
    options.signal?.throwIfAborted();
    // One byte past `size` is enough to know it is the wrong size.
    const data = await readAll(options.signal ? addAbortSignal(options.signal, content) : content, size + 1, `content ingested into ${this.name}`).catch((err: unknown) => {
      throw err instanceof RegistryError && err.code === "SIZE_LIMIT" ? new RegistryError("SIZE_MISMATCH", `content ingested into ${this.name} is larger than ${size} bytes`) : err;
    });
    if (data.byteLength !== size) throw new RegistryError("SIZE_MISMATCH", `content ingested into ${this.name} is ${data.byteLength} bytes, not ${size}`);
    const desc = descriptorFor(mediaType, data);
    return { desc, commit: async () => this.store(desc, data), abort: async () => {} };
  }

  private store(desc: Descriptor, data: Buffer): void {
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

  async tags(options: AbortOptions = {}): Promise<string[]> {
    options.signal?.throwIfAborted();
    return [...this.tagged.keys()];
  }

  referrers(subject: Descriptor, artifactType?: string, options: AbortOptions = {}): Promise<Descriptor[]> {
    return fallbackReferrers(this, subject, artifactType, options);
  }

  indexReferrer(subject: Descriptor, referrer: Descriptor): Promise<void> {
    return addFallbackReferrer(this, subject, referrer);
  }
}
