// A Target backed by an OCI image layout directory, readable by skopeo,
// oras and crane. https://github.com/opencontainers/image-spec/blob/main/image-layout.md
import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pipeline as pipe, Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { atomicWrite, isTempFor, openRegular, openWriteStream, quote, readRegular, removeStaleTemps, STALE_TEMP_MS } from "../util/index.js";
import { RegistryError } from "./errors.js";
import { checkDigest, DigestingStream, isDigest, readAll, verifyStream } from "./digest.js";
import { Annotation, isManifestType, isRecord, MAX_MANIFEST_SIZE, MediaType, parseManifest, type Descriptor, type Index } from "./oci.js";
import { lockFile } from "./lock-file.js";
import { addFallbackReferrer, fallbackReferrers } from "./referrers.js";
import type { AbortOptions, Deleter, Ingested, Target } from "./storage.js";

const LAYOUT_FILE = { imageLayoutVersion: "1.0.0" };

/**
 * Bytes a blob write may queue before it pushes back. At the default 16 KiB
 * each 64 KiB network chunk waited for its own write to land before the next
 * was read, so a download ran at the disk's latency (a 50 MiB pull spent half
 * its transfer idle); a queue of 1 MiB lets writes go out in batches
 * (writev) while the socket keeps reading.
 */
const WRITE_BUFFER = 1024 * 1024;

export class OciLayoutTarget implements Target, Deleter {
  readonly name: string;
  /** Serializes index.json updates within this process; a lock file guards across processes. */
  private indexQueue: Promise<unknown> = Promise.resolve();
  /** Creating the directories and oci-layout file once per instance, not on every write. */
  private initialized: Promise<void> | undefined;

  constructor(readonly dir: string) {
    this.name = `oci:${dir}`;
  }

  private blobPath(digest: string): string {
    return join(this.dir, "blobs", "sha256", checkDigest(digest).slice("sha256:".length));
  }

  async fetch(desc: Descriptor, options: AbortOptions = {}): Promise<Readable> {
    return verifyStream(desc, await this.fetchUnverified(desc, options), this.name);
  }

  async fetchUnverified(desc: Descriptor, options: AbortOptions = {}): Promise<Readable> {
    options.signal?.throwIfAborted();
    let handle;
    try {
      handle = await openRegular(this.blobPath(desc.digest));
    } catch (err) {
      throw new RegistryError("NOT_FOUND", `${desc.digest} not found in ${this.name}`, { cause: err });
    }
    return createReadStream("", { fd: handle, signal: options.signal });
  }

  /** An aborted `signal` (or a source stream that fails) leaves nothing behind, not even the temp file. */
  async push(desc: Descriptor, content: Readable, options: AbortOptions = {}): Promise<void> {
    // Written beside the final name and renamed only once the digest checked
    // out: a reader never sees a partial or unverified blob.
    const temp = await this.writeTemp(verifyStream(desc, content, "pushed content"), options);
    await this.commitTemp(temp, desc);
  }

  /**
   * Writes `content` to a temp file, hashing it as it goes; commit renames
   * it to the digest learned, abort removes it. Content of another size
   * leaves no file behind.
   */
  async ingest(mediaType: string, size: number, content: Readable, options: AbortOptions = {}): Promise<Ingested> {
    const digesting = new DigestingStream();
    const hashed = pipe(content, digesting, () => {});
    const where = this.name;
    let seen = 0;
    // Stopped at the first byte too many: a stream that runs on writes no more than `size`.
    async function* sized(): AsyncGenerator<Buffer> {
      for await (const chunk of hashed as AsyncIterable<Buffer>) {
        if ((seen += chunk.byteLength) > size) throw new RegistryError("SIZE_MISMATCH", `content ingested into ${where} is larger than ${size} bytes`);
        yield chunk;
      }
    }
    let temp: string;
    try {
      temp = await this.writeTemp(Readable.from(sized(), { objectMode: false }), options);
    } catch (err) {
      hashed.destroy();
      throw err;
    }
    if (seen !== size) {
      await rm(temp, { force: true });
      throw new RegistryError("SIZE_MISMATCH", `content ingested into ${where} is ${seen} bytes, not ${size}`);
    }
    const desc = digesting.described(mediaType);
    return { desc, commit: () => this.commitTemp(temp, desc), abort: () => rm(temp, { force: true }) };
  }

  /** Writes `content` to a temp file beside the blobs; any failure removes it. */
  private async writeTemp(content: Readable, options: AbortOptions): Promise<string> {
    options.signal?.throwIfAborted();
    await this.init();
    const temp = join(this.dir, "blobs", "sha256", `${TEMP_PREFIX}${randomBytes(8).toString("hex")}`);
    try {
      const file = await openWriteStream(temp, { mode: 0o644, highWaterMark: WRITE_BUFFER }).catch((err: unknown) => {
        // Not opened (EMFILE, ENOSPC): the content is let go as a failing pipeline would have.
        content.destroy();
        throw err;
      });
      await pipeline(content, file, { signal: options.signal });
    } catch (err) {
      await rm(temp, { force: true });
      throw err;
    }
    return temp;
  }

  /** Renames a written temp file to `desc`'s blob (removing it if that fails), and indexes a manifest. */
  private async commitTemp(temp: string, desc: Descriptor): Promise<void> {
    try {
      await rename(temp, this.blobPath(desc.digest));
    } catch (err) {
      await rm(temp, { force: true });
      throw err;
    }
    if (isManifestType(desc.mediaType)) {
      await this.updateIndex((manifests) =>
        // Untagged: a descriptor's annotations are its lister's word (a parent's), and a ref.name there would be a tag.
        manifests.some((m) => m.digest === desc.digest) ? manifests : [...manifests, { mediaType: desc.mediaType, digest: desc.digest, size: desc.size }],
      );
    }
  }

  /**
   * True only when the stored bytes still hash to `desc`'s digest. A blob
   * altered at rest (disk fault, a hand edit) of the same size would
   * otherwise count as present forever and `copy` would never repair it;
   * hashing costs little at policy-bundle sizes.
   */
  async exists(desc: Descriptor, options: AbortOptions = {}): Promise<boolean> {
    try {
      const handle = await openRegular(this.blobPath(desc.digest));
      if ((await handle.stat()).size !== desc.size) {
        await handle.close();
        return false;
      }
      const hash = createHash("sha256");
      await pipeline(createReadStream("", { fd: handle }), hash, { signal: options.signal });
      return `sha256:${hash.digest("hex")}` === desc.digest;
    } catch {
      // Missing, unreadable or not a digest: not there. An abort is not an answer.
      options.signal?.throwIfAborted();
      return false;
    }
  }

  /**
   * Removes the blob and every index.json entry (tags included) that names
   * it, under the index lock, so no writer sees the entry without the blob.
   */
  async delete(desc: Descriptor): Promise<void> {
    const path = this.blobPath(desc.digest);
    await this.updateIndex(async (manifests) => {
      const kept = manifests.filter((m) => m.digest !== desc.digest);
      const stored = await stat(path).then(() => true, () => false);
      if (!stored && kept.length === manifests.length) throw new RegistryError("NOT_FOUND", `${desc.digest} not found in ${this.name}`);
      await rm(path, { force: true });
      return kept;
    });
  }

  async resolve(reference: string, options: AbortOptions = {}): Promise<Descriptor> {
    options.signal?.throwIfAborted();
    const manifests = (await this.readIndex()).manifests;
    const found = isDigest(reference)
      ? manifests.find((m) => m.digest === reference)
      : manifests.find((m) => m.annotations?.[Annotation.RefName] === reference);
    if (found && !isDigest(found.digest)) {
      throw new RegistryError("UNSUPPORTED_DIGEST", `${reference} in ${this.name} names ${quote(found.digest)}, which cannot be verified here: only sha256 digests are`);
    }
    if (found) return plain(found);
    if (isDigest(reference)) {
      // A manifest stored only as a blob (say, a child of an index).
      const size = await stat(this.blobPath(reference)).then((s) => s.size, () => undefined);
      if (size !== undefined && size <= MAX_MANIFEST_SIZE) {
        const bytes = await readAll(await this.fetch({ mediaType: "", digest: reference, size }), size, reference);
        let mediaType: unknown;
        try {
          mediaType = (JSON.parse(bytes.toString("utf8")) as { mediaType?: unknown } | null)?.mediaType;
        } catch {
          // Not JSON: a layer, not a manifest.
        }
        if (typeof mediaType === "string" && isManifestType(mediaType)) return { mediaType, digest: reference, size };
      }
    }
    throw new RegistryError("NOT_FOUND", `${reference} not found in ${this.name}`);
  }

  tag(desc: Descriptor, tag: string): Promise<void> {
    return this.index([{ desc, tag }]);
  }

  /**
   * Records manifests the layout holds in index.json, in one update: each
   * under its tag (replacing what the tag named), or untagged, so that
   * resolve finds it by digest with its media type whatever its bytes say
   * (a manifest need not name its own).
   */
  async index(entries: readonly { desc: Descriptor; tag?: string }[]): Promise<void> {
    // Checked under the index lock, so a concurrent delete cannot leave an entry without its blob.
    await this.updateIndex(async (manifests) => {
      for (const { desc } of entries) if (!(await this.exists(desc))) throw new RegistryError("NOT_FOUND", `cannot index ${desc.digest}: not in ${this.name}`);
      const tags = new Set(entries.flatMap((e) => e.tag ?? []));
      const untagged = new Set(entries.map((e) => e.desc.digest));
      return [
        ...manifests.filter((m) => {
          const ref = m.annotations?.[Annotation.RefName];
          return ref ? !tags.has(ref) : !untagged.has(m.digest);
        }),
        // One entry per tag, and per untagged digest (the last given wins); an untagged entry carries no annotations.
        ...new Map(entries.map(({ desc, tag }) => [tag ?? `@${desc.digest}`, tag ? { ...plain(desc), annotations: { [Annotation.RefName]: tag } } : { mediaType: desc.mediaType, digest: desc.digest, size: desc.size }])).values(),
      ];
    });
  }

  async tags(options: AbortOptions = {}): Promise<string[]> {
    options.signal?.throwIfAborted();
    return (await this.readIndex()).manifests.flatMap((m) => m.annotations?.[Annotation.RefName] ?? []);
  }

  /** Every digest the layout holds: stored blobs and those index.json names (for pruning with delete()). */
  async digests(): Promise<string[]> {
    const stored = await readdir(join(this.dir, "blobs", "sha256")).catch(() => [] as string[]);
    const indexed = (await this.readIndex()).manifests.map((m) => m.digest).filter(isDigest);
    return [...new Set([...stored.filter((n) => /^[0-9a-f]{64}$/.test(n)).map((n) => `sha256:${n}`), ...indexed])];
  }

  /**
   * Removes the temp files of writes that ended without cleaning up (the
   * process was killed mid-download) and unchanged for `olderThanMs`: a
   * write under way changes its file as the bytes come. Done by the first
   * write of each run, and by an agent's prune.
   */
  async removeStaleTemps(olderThanMs = STALE_TEMP_MS): Promise<void> {
    await removeStaleTemps(join(this.dir, "blobs", "sha256"), { match: (name) => name.startsWith(TEMP_PREFIX), olderThanMs });
    // index.json's own: atomicWrite's temp files of a writer that died mid-write (no other file's: `oci:.` may be any folder).
    const index = join(this.dir, "index.json");
    await removeStaleTemps(this.dir, { match: (name) => isTempFor(index, name), olderThanMs });
  }

  referrers(subject: Descriptor, artifactType?: string, options: AbortOptions = {}): Promise<Descriptor[]> {
    return fallbackReferrers(this, subject, artifactType, options);
  }

  indexReferrer(subject: Descriptor, referrer: Descriptor): Promise<void> {
    return addFallbackReferrer(this, subject, referrer);
  }

  private init(): Promise<void> {
    this.initialized ??= this.createLayout();
    this.initialized.catch(() => (this.initialized = undefined));
    return this.initialized;
  }

  private async createLayout(): Promise<void> {
    await mkdir(join(this.dir, "blobs", "sha256"), { recursive: true });
    await writeFile(join(this.dir, "oci-layout"), JSON.stringify(LAYOUT_FILE), { flag: "wx" }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== "EEXIST") throw err;
    });
    // Whoever writes to a layout first in a run sweeps what killed writers left in it (a pull's cache, copy's or push's oci: layout).
    await this.removeStaleTemps();
  }

  private async readIndex(): Promise<Index> {
    const path = join(this.dir, "index.json");
    let bytes: Buffer;
    try {
      bytes = await readRegular(path, MAX_INDEX_SIZE);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return emptyIndex();
      if (code === "EFBIG") throw new RegistryError("SIZE_LIMIT", `${path} is over the ${MAX_INDEX_SIZE}-byte limit of an index`, { cause: err });
      if (code === "EINVAL") throw new RegistryError("INVALID_MANIFEST", (err as Error).message, { cause: err });
      throw err;
    }
    // index.json is an image index (image-layout spec; skopeo, oras and crane write schemaVersion 2, as
    // emptyIndex does): parseManifest checks that each entry is a descriptor, which resolve and tags rely on.
    // An entry of another digest algorithm is kept (another tool's: updateIndex writes it back) but never resolved.
    let index: Index;
    try {
      index = parseManifest(bytes, MediaType.ImageIndex, { otherAlgorithms: true }) as Index;
    } catch (err) {
      // Its message only, not its cause: V8's JSON.parse message quotes the file's first bytes, and index.json
      // may be a link to any file the reader can open (a planted one could carry a secret into the logs).
      throw new RegistryError("INVALID_MANIFEST", `${path} is not a valid image index: ${(err as Error).message}`);
    }
    // A descriptor's annotations are not checked by parseManifest; ref.name here is a tag, which must be a string.
    const bad = index.manifests.findIndex((m) => !hasStringRefName(m.annotations));
    if (bad >= 0) throw new RegistryError("INVALID_MANIFEST", `${path} is not a valid image index: manifests[${bad}] annotations are not an object with a string ${Annotation.RefName}`);
    return index;
  }

  /** Read-modify-write of index.json, atomic (atomicWrite) and serialized. */
  private updateIndex(change: (manifests: Descriptor[]) => Descriptor[] | Promise<Descriptor[]>): Promise<void> {
    const run = async () => {
      await this.init();
      const release = await lockFile(join(this.dir, "index.json.lock"));
      try {
        const index = await this.readIndex();
        const next: Index = { ...index, manifests: await change(index.manifests) };
        await atomicWrite(join(this.dir, "index.json"), JSON.stringify(next));
      } finally {
        await release();
      }
    };
    const result = this.indexQueue.then(run, run);
    this.indexQueue = result.catch(() => undefined);
    return result;
  }
}

/** The largest index.json read: some 100,000 entries. */
const MAX_INDEX_SIZE = 64 * 1024 * 1024;

/** The names of blobs being written (writeTemp), renamed to their digest once complete. */
const TEMP_PREFIX = ".tmp-";

function emptyIndex(): Index {
  return { schemaVersion: 2, mediaType: MediaType.ImageIndex, manifests: [] };
}

/** Whether `annotations`, when present, is an object whose ref.name, when present, is a string. */
function hasStringRefName(annotations: unknown): boolean {
  if (annotations === undefined) return true;
  const ref = isRecord(annotations) ? annotations[Annotation.RefName] : null;
  return ref === undefined || typeof ref === "string";
}

function plain(desc: Descriptor): Descriptor {
  return { mediaType: desc.mediaType, digest: desc.digest, size: desc.size, ...(desc.annotations ? { annotations: desc.annotations } : {}) };
}
