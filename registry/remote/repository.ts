// A Target for one repository in a registry that speaks the OCI distribution
// spec. https://github.com/opencontainers/distribution-spec/blob/main/spec.md
import { pipeline, Readable } from "node:stream";
import { backoffDelay, setBounded, sleep } from "../../util/index.js";
import { RegistryError } from "../errors.js";
import { checkDigest, descriptorFor, DigestingStream, HeldBytes, isDigest, readAll, verifyBytes, verifyStream } from "../digest.js";
import { emptyConfigBytes } from "../empty.js";
import { EMPTY_CONFIG, isManifestType, MANIFEST_MEDIA_TYPES, MAX_MANIFEST_SIZE, MediaType, referrerEntries, type Descriptor } from "../oci.js";
import { isTag } from "../reference.js";
import { addFallbackReferrer, fallbackReferrers } from "../referrers.js";
import type { AbortOptions, Ingested, Mounter, ReadOnlyTarget, ReferencePusher, Target } from "../storage.js";
import { RegistryClient, type ClientOptions, type Response } from "./client.js";
import type { CredentialLookup, Credentials } from "./credentials.js";

export interface RepositoryOptions extends Omit<ClientOptions, "credentials"> {
  /** Credentials for this registry, or a lookup by host (e.g. credentialsFromEnvironment) asked once here. */
  credentials?: Credentials | CredentialLookup;
  /**
   * Blobs up to this size stream up in one PUT (two requests in all, as
   * oras-go does); larger ones in streamed PATCH chunks, for registries or
   * proxies that cap a request's body. Default 1 GiB.
   */
  monolithicLimit?: number;
  /** Size of each PATCH chunk. Default 64 MiB. */
  chunkSize?: number;
  /** Most tag-list pages followed (Link: rel="next"); default 1,000. A registry that links on forever is refused. */
  maxTagPages?: number;
  /** Most tags listed in all; default 100,000. */
  maxTags?: number;
}

/** An upload session: where its next request goes (the registry may move it on with each answer). */
interface Upload {
  location: string;
}

const ACCEPT_MANIFESTS = MANIFEST_MEDIA_TYPES.join(", ");
/** recentManifests' bounds: a hostile registry's 4 MiB manifests cannot pile up. */
const RECENT_LIMITS = { manifests: 64, bytes: 16 * 1024 * 1024 };
/** Whether a repository's registry has the referrers API, learned once per process (for the newest MAX_KNOWN repositories). */
const referrersSupport = new Map<string, Promise<boolean>>();
/** One client per registry and settings, for the newest MAX_KNOWN (a long-running agent may be named any number of registries). */
const clients = new Map<string, RegistryClient>();
const MAX_KNOWN = 1024;

export class RemoteRepository implements Target, Mounter, ReferencePusher {
  readonly name: string;
  readonly client: RegistryClient;
  private readonly monolithicLimit: number;
  private readonly chunkSize: number;
  private readonly maxTagPages: number;
  private readonly maxTags: number;
  /**
   * Manifests this instance pushed, resolved or read, by digest: tagging,
   * and a pull's resolve → read → copy of the same root, need no second
   * request. Content-addressed, so never stale; every read of them is still
   * verified (fetch) or handed to a verifying push (copy).
   */
  private readonly recentManifests = new Map<string, { mediaType: string; bytes: Buffer }>();
  private recentBytes = 0;

  constructor(
    readonly registry: string,
    readonly repository: string,
    options: RepositoryOptions = {},
  ) {
    this.name = `${registry}/${repository}`;
    // One client per registry and settings shares its tokens across repositories.
    const credentials = typeof options.credentials === "function" ? options.credentials(registry) : options.credentials;
    const key = JSON.stringify([registry, options.plainHttp, credentials, options.maxAttempts, options.backoffMs, options.timeoutMs, options.deadlineMs]);
    this.client = setBounded(clients, key, clients.get(key) ?? new RegistryClient(registry, { ...options, credentials }), MAX_KNOWN);
    this.monolithicLimit = options.monolithicLimit ?? 1024 * 1024 * 1024;
    this.chunkSize = options.chunkSize ?? 64 * 1024 * 1024;
    this.maxTagPages = options.maxTagPages ?? 1000;
    this.maxTags = options.maxTags ?? 100_000;
  }

  private scopes(push: boolean, ...extra: string[]): string[] {
    return [`repository:${this.repository}:${push ? "pull,push" : "pull"}`, ...extra];
  }

  private path(kind: "blobs" | "manifests" | "referrers" | "tags", rest: string): string {
    return `/v2/${this.repository}/${kind}/${rest}`;
  }

  async fetch(desc: Descriptor, options: AbortOptions = {}): Promise<Readable> {
    // A recent manifest's bytes were checked against its digest when they were read: its size is all that is left to check.
    if (this.recentManifests.get(desc.digest)?.bytes.byteLength === desc.size) return this.fetchUnverified(desc, options);
    return verifyStream(desc, await this.fetchUnverified(desc, options), this.name);
  }

  async fetchUnverified(desc: Descriptor, options: AbortOptions = {}): Promise<Readable> {
    checkDigest(desc.digest);
    options.signal?.throwIfAborted();
    // The empty descriptor's content is fixed by the spec (and by its digest): no request.
    if (desc.digest === EMPTY_CONFIG.digest) return Readable.from([emptyConfigBytes()]);
    const recent = this.recentManifests.get(desc.digest);
    if (recent) return new HeldBytes(recent.bytes);
    if (isManifestType(desc.mediaType)) {
      const res = await this.client.send({
        method: "GET",
        url: this.path("manifests", desc.digest),
        headers: { accept: ACCEPT_MANIFESTS },
        scopes: this.scopes(false),
        expect: [200],
        signal: options.signal,
      });
      return res.body;
    }
    return this.getBlob(desc.digest, options.signal);
  }

  /** GET a blob, following redirects to blob storage (without our credentials). */
  private async getBlob(digest: string, signal: AbortSignal | undefined): Promise<Readable> {
    const res = await this.client.send({
      method: "GET",
      url: this.path("blobs", digest),
      scopes: this.scopes(false),
      expect: [200, 301, 302, 303, 307, 308],
      signal,
    });
    if (res.statusCode === 200) return res.body;
    await res.body.dump();
    const location = res.headers.location;
    if (typeof location !== "string") throw new RegistryError("HTTP_ERROR", `${this.name}: redirect for ${digest} has no Location`);
    // One hop to blob storage (S3, a CDN): the URL is pre-signed, so no credentials go along.
    return (await this.client.getElsewhere(new URL(location, this.client.baseUrl), signal)).body;
  }

  async exists(desc: Descriptor, options: AbortOptions = {}): Promise<boolean> {
    const res = await this.client.send({
      method: "HEAD",
      url: this.path(isManifestType(desc.mediaType) ? "manifests" : "blobs", checkDigest(desc.digest)),
      headers: isManifestType(desc.mediaType) ? { accept: ACCEPT_MANIFESTS } : {},
      scopes: this.scopes(false),
      expect: [200, 404],
      signal: options.signal,
    });
    await res.body.dump();
    return res.statusCode === 200;
  }

  /** PUT /manifests/<tag>: the registry stores the manifest and tags it at once. The bytes are verified first. */
  async pushReference(desc: Descriptor, content: Readable, tag: string, options: AbortOptions = {}): Promise<void> {
    if (!isManifestType(desc.mediaType)) throw new RegistryError("INVALID_MANIFEST", `${desc.digest} is a ${desc.mediaType}, not a manifest: only manifests take a tag`);
    const bytes = await readAll(content, MAX_MANIFEST_SIZE, `manifest ${desc.digest}`);
    await this.putManifest(desc, Buffer.from(verifyBytes(desc, bytes, "pushed content")), tag, options.signal);
  }

  /**
   * Streams a blob up as it is read, with backpressure, hashing each byte
   * once on the way: one PUT with a Content-Length, or PATCH chunks past
   * monolithicLimit. The verifier holds back the last chunk until the
   * digest checks out, so a mismatch (or a failing source) breaks off the
   * request before the registry has every byte: nothing is committed under
   * the digest, and the upload session is cancelled.
   * https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pushing-blobs
   */
  async push(desc: Descriptor, content: Readable, options: AbortOptions = {}): Promise<void> {
    const { signal } = options;
    if (isManifestType(desc.mediaType)) return this.pushReference(desc, content, desc.digest, options);
    const verified = verifyStream(desc, content, "pushed content");
    let upload: Upload | undefined;
    try {
      upload = { location: await this.startUpload(signal) };
      if (desc.size <= this.monolithicLimit) {
        await this.finishUpload(upload, desc.digest, verified, desc.size, signal);
      } else {
        await this.pushChunks(upload, desc.size, verified, signal);
        await this.finishUpload(upload, desc.digest, Buffer.alloc(0), 0, signal);
      }
    } catch (err) {
      verified.destroy();
      if (upload) await this.cancelUpload(upload);
      throw err;
    }
  }

  /**
   * Sends `content`, which must be `size` bytes, in PATCH chunks of
   * chunkSize, each streamed as it is read, and reads on to the stream's
   * end, moving `upload` on to each Location the registry answers (where the
   * closing PUT, or a DELETE that cancels, goes). A stream that ends early, or
   * goes on past `size`, is a SIZE_MISMATCH: the PATCH it was in is broken
   * off, never sent short of its Content-Length.
   * https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pushing-a-blob-in-chunks
   */
  private async pushChunks(upload: Upload, size: number, content: Readable, signal: AbortSignal | undefined): Promise<void> {
    const iterator = (content as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    let carry: Buffer | undefined;
    const where = this.name;
    // Exactly `length` bytes of the stream (fewer only when it fails, which breaks off the request).
    async function* slice(length: number): AsyncGenerator<Buffer> {
      for (let left = length; left > 0; ) {
        let chunk = carry;
        carry = undefined;
        if (!chunk) {
          const next = await iterator.next();
          if (next.done) throw new RegistryError("SIZE_MISMATCH", `content for ${where} ended ${left} bytes short of ${size}`);
          chunk = next.value;
        }
        if (chunk.byteLength > left) {
          carry = chunk.subarray(left);
          chunk = chunk.subarray(0, left);
        }
        left -= chunk.byteLength;
        yield chunk;
      }
    }
    for (let offset = 0; offset < size; ) {
      const length = Math.min(this.chunkSize, size - offset);
      const res = await this.client.send({
        method: "PATCH",
        url: upload.location,
        headers: {
          "content-type": "application/octet-stream",
          "content-range": `${offset}-${offset + length - 1}`,
          "content-length": String(length),
        },
        body: Readable.from(slice(length), { objectMode: false }),
        scopes: this.scopes(true),
        expect: [202],
        signal,
      });
      await res.body.dump();
      upload.location = uploadLocation(res, this.name);
      offset += length;
    }
    // The end of the stream (where a digest is learned), or a byte too many.
    if (carry || !(await iterator.next()).done) {
      content.destroy();
      throw new RegistryError("SIZE_MISMATCH", `content for ${this.name} is larger than ${size} bytes`);
    }
  }

  /**
   * Uploads a blob whose digest is learned as it streams, as containers/image
   * does for a blob of unknown digest: POST opens the session, PATCH sends
   * the bytes with Content-Length and Content-Range (pieces of chunkSize),
   * hashed on the way, and only `commit` sends the closing PUT ?digest= with
   * the digest learned. Content of another size, a failing stream, a failed
   * commit or `abort` cancels the session: nothing is committed.
   * https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pushing-a-blob-in-chunks
   */
  async ingest(mediaType: string, size: number, content: Readable, options: AbortOptions = {}): Promise<Ingested> {
    const { signal } = options;
    const digesting = new DigestingStream();
    const hashed = pipeline(content, digesting, () => {});
    let upload: Upload | undefined;
    try {
      upload = { location: await this.startUpload(signal) };
      await this.pushChunks(upload, size, hashed, signal);
    } catch (err) {
      hashed.destroy();
      if (upload) await this.cancelUpload(upload);
      throw err;
    }
    const desc = digesting.described(mediaType);
    const session = upload;
    return {
      desc,
      commit: async () => {
        try {
          await this.finishUpload(session, desc.digest, Buffer.alloc(0), 0, signal);
        } catch (err) {
          await this.cancelUpload(session);
          throw err;
        }
      },
      abort: () => this.cancelUpload(session),
    };
  }

  private async startUpload(signal: AbortSignal | undefined): Promise<string> {
    const res = await this.client.send({
      method: "POST",
      url: this.path("blobs", "uploads/"),
      headers: { "content-length": "0" },
      scopes: this.scopes(true),
      expect: [202],
      signal,
    });
    await res.body.dump();
    return uploadLocation(res, this.name);
  }

  private async finishUpload(upload: Upload, digest: string, body: Buffer | Readable, size: number, signal: AbortSignal | undefined): Promise<void> {
    const url = new URL(upload.location, this.client.baseUrl);
    url.searchParams.set("digest", digest);
    const res = await this.client.send({
      method: "PUT",
      url: url.href,
      headers: { "content-type": "application/octet-stream", "content-length": String(size) },
      body,
      scopes: this.scopes(true),
      expect: [201],
      signal,
    });
    await res.body.dump();
  }

  /**
   * Best effort: the registry would purge an abandoned upload later anyway.
   * Registry 2.x refuses the DELETE of a session whose request broke off
   * after bytes had arrived (the session state in its Location, signed by
   * the registry, names an offset the upload has moved past, and no newer
   * one was ever answered), so those bytes wait for its upload purge.
   */
  private async cancelUpload(upload: Upload): Promise<void> {
    try {
      const res = await this.client.send({ method: "DELETE", url: upload.location, scopes: this.scopes(true), expect: [204, 404], signal: AbortSignal.timeout(5000) });
      await res.body.dump();
    } catch {
      // Nothing was committed either way.
    }
  }

  /**
   * Asks the registry to link a blob from another repository on the same
   * host; false when it would rather have the bytes (202).
   * https://github.com/opencontainers/distribution-spec/blob/main/spec.md#mounting-a-blob-from-another-repository
   */
  async mount(desc: Descriptor, fromRepository: string, options: AbortOptions = {}): Promise<boolean> {
    const query = `?mount=${encodeURIComponent(desc.digest)}&from=${encodeURIComponent(fromRepository)}`;
    const res = await this.client.send({
      method: "POST",
      url: this.path("blobs", `uploads/${query}`),
      headers: { "content-length": "0" },
      scopes: this.scopes(true, `repository:${fromRepository}:pull`),
      expect: [201, 202],
      signal: options.signal,
    });
    await res.body.dump();
    if (res.statusCode === 201) return true;
    // The registry opened an ordinary upload instead; close it, push will open its own.
    await this.cancelUpload({ location: uploadLocation(res, this.name) });
    return false;
  }

  /** Mounts from `source` when it is another repository on this registry (the same host and client). */
  async mountFrom(desc: Descriptor, source: ReadOnlyTarget, options: AbortOptions = {}): Promise<boolean> {
    if (!(source instanceof RemoteRepository) || source.client.baseUrl !== this.client.baseUrl || source.repository === this.repository) return false;
    return this.mount(desc, source.repository, options);
  }

  private async putManifest(desc: Descriptor, bytes: Buffer, reference: string, signal?: AbortSignal): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        const res = await this.client.send({
          method: "PUT",
          url: this.path("manifests", reference),
          headers: { "content-type": desc.mediaType },
          body: bytes,
          scopes: this.scopes(true),
          expect: [201],
          signal,
        });
        await res.body.dump();
        break;
      } catch (err) {
        // The bytes were verified here, so DIGEST_INVALID means the registry
        // tripped over a concurrent PUT of the same manifest (distribution's
        // filesystem driver writes the same blob path non-atomically): retry.
        if (!(err instanceof RegistryError && err.code === "DIGEST_INVALID" && attempt < 4)) throw err;
        await sleep(backoffDelay(attempt, { baseMs: 100, maxMs: 1000 }), signal);
      }
    }
    this.remember(desc.digest, desc.mediaType, bytes);
  }

  private remember(digest: string, mediaType: string, bytes: Buffer): void {
    if (this.recentManifests.has(digest)) return;
    this.recentManifests.set(digest, { mediaType, bytes });
    this.recentBytes += bytes.byteLength;
    // Oldest first, within RECENT_LIMITS.
    for (const [old, { bytes: dropped }] of this.recentManifests) {
      if (this.recentManifests.size <= RECENT_LIMITS.manifests && this.recentBytes <= RECENT_LIMITS.bytes) break;
      this.recentManifests.delete(old);
      this.recentBytes -= dropped.byteLength;
    }
  }

  /**
   * A digest resolves with one GET, not HEAD then GET: its bytes are what
   * nearly always comes next (pull, copy, verify read the manifest), they
   * are checked against the digest and kept (recentManifests), and a digest
   * already read resolves without a request. A tag resolves with a HEAD:
   * pollers (the agent following a trust root, the assigner's health check)
   * only compare digests, and a registry such as Docker Hub counts a GET,
   * not a HEAD, against its pull limits. Docker-Content-Digest is then only a
   * name for bytes verified when they are fetched.
   */
  async resolve(reference: string, options: AbortOptions = {}): Promise<Descriptor> {
    options.signal?.throwIfAborted();
    const byDigest = isDigest(reference);
    const recent = byDigest ? this.recentManifests.get(reference) : undefined;
    if (recent) return { mediaType: recent.mediaType, digest: reference, size: recent.bytes.byteLength };
    const res = await this.client.send({
      method: byDigest ? "GET" : "HEAD",
      url: this.path("manifests", reference),
      headers: { accept: ACCEPT_MANIFESTS },
      scopes: this.scopes(false),
      expect: [200, 404],
      signal: options.signal,
    });
    const mediaType = String(res.headers["content-type"] ?? "").split(";")[0]!.trim();
    if (res.statusCode === 404 || !isManifestType(mediaType)) {
      // Whatever the body is, it is not read: a hostile registry's endless one would hold the call to its deadline.
      res.body.destroy();
      if (res.statusCode === 404) throw new RegistryError("MANIFEST_UNKNOWN", `${this.name}: manifest ${reference} not found`, { status: 404 });
      throw new RegistryError("INVALID_MANIFEST", `${this.name}: ${reference} is not an OCI or Docker v2 manifest (${mediaType || "no content type"})`);
    }
    if (byDigest) {
      const bytes = await readAll(res.body, MAX_MANIFEST_SIZE, `manifest ${reference}`);
      const desc = { mediaType, digest: reference, size: bytes.byteLength };
      verifyBytes(desc, bytes, this.name);
      this.remember(reference, mediaType, bytes);
      return desc;
    }
    await res.body.dump();
    const size = Number(res.headers["content-length"]);
    const header = res.headers["docker-content-digest"];
    if (typeof header === "string" && isDigest(header) && Number.isSafeInteger(size)) return { mediaType, digest: header, size };
    // No usable digest header: the bytes name themselves.
    const get = await this.client.send({
      method: "GET",
      url: this.path("manifests", reference),
      headers: { accept: ACCEPT_MANIFESTS },
      scopes: this.scopes(false),
      expect: [200],
      signal: options.signal,
    });
    const bytes = await readAll(get.body, MAX_MANIFEST_SIZE, `manifest ${reference}`);
    const desc = descriptorFor(mediaType, bytes);
    this.remember(desc.digest, mediaType, bytes);
    return desc;
  }

  async tag(desc: Descriptor, tag: string): Promise<void> {
    const bytes = this.recentManifests.get(desc.digest)?.bytes ?? (await readAll(await this.fetch(desc), MAX_MANIFEST_SIZE, desc.digest));
    await this.putManifest(desc, bytes, tag);
  }

  /** Follows the tag list's pages, within maxTagPages and maxTags, refusing a page link seen before (a loop). */
  async tags(options: AbortOptions = {}): Promise<string[]> {
    const all: string[] = [];
    const seen = new Set<string>();
    let url: string | undefined = this.path("tags", "list?n=1000");
    while (url) {
      const key = new URL(url, this.client.baseUrl).href;
      if (seen.has(key)) throw new RegistryError("HTTP_ERROR", `${this.name}: tag list pages loop (next page ${key} was already read)`);
      if (seen.size >= this.maxTagPages) throw new RegistryError("SIZE_LIMIT", `${this.name}: tag list has more than ${this.maxTagPages} pages`);
      seen.add(key);
      const res: Response = await this.client.send({ method: "GET", url, scopes: this.scopes(false), expect: [200, 404], signal: options.signal });
      if (res.statusCode === 404) {
        // A repository with nothing pushed yet is unknown to the registry (NAME_UNKNOWN): it has no tags.
        const error = await this.client.errorFrom(res, { method: "GET", url });
        if (error.code === "NAME_UNKNOWN" && all.length === 0) return [];
        throw error;
      }
      const body = parseJson<{ tags?: unknown }>(await readAll(res.body, MAX_MANIFEST_SIZE, "tags list"), `${this.name} tags list`);
      const page: unknown[] = Array.isArray(body.tags) ? body.tags : [];
      // Counted before any is kept: a page is up to 4 MiB, some 10^6 short names.
      if (all.length + page.length > this.maxTags) throw new RegistryError("SIZE_LIMIT", `${this.name}: tag list has more than ${this.maxTags} tags`);
      // An entry that is not a tag (not a string, or outside the tag grammar, such as a 4 MiB "name") is skipped, as
      // a malformed referrers entry is: it names nothing a reference could select, and would only be kept in memory.
      // One by one, not push(...page): spreading ~10^5 arguments overflows the call stack.
      for (const tag of page) if (isTag(tag)) all.push(tag);
      // Pagination: Link: </v2/…/tags/list?n=…&last=…>; rel="next"
      const link = String(res.headers.link ?? "");
      url = /<([^>]+)>;\s*rel="?next"?/.exec(link)?.[1];
    }
    return all;
  }

  /**
   * Probes GET /v2/<repo>/referrers/<digest>: 200 with an index means the
   * API exists. Learned once per repository; a repository the registry does
   * not know yet (404 NAME_UNKNOWN) says nothing, so that is not remembered.
   * The probe is shared by every caller, so it runs without any caller's
   * signal: `signal` only stops this caller's wait for it.
   */
  private hasReferrersApi(subject: Descriptor, signal?: AbortSignal): Promise<boolean> {
    const key = `${this.client.baseUrl}/${this.repository}`;
    let known = referrersSupport.get(key);
    if (!known) {
      known = this.client
        .send({ method: "GET", url: this.path("referrers", subject.digest), scopes: this.scopes(false), expect: [200, 404] })
        .then(async (res) => {
          const type = String(res.headers["content-type"] ?? "");
          const body = (await readAll(res.body, MAX_MANIFEST_SIZE, "referrers probe")).toString("utf8");
          if (res.statusCode === 404 && body.includes("NAME_UNKNOWN")) referrersSupport.delete(key);
          return res.statusCode === 200 && type.startsWith(MediaType.ImageIndex);
        });
      setBounded(referrersSupport, key, known, MAX_KNOWN);
      known.catch(() => referrersSupport.delete(key));
    }
    return untilAborted(known, signal);
  }

  async referrers(subject: Descriptor, artifactType?: string, options: AbortOptions = {}): Promise<Descriptor[]> {
    if (!(await this.hasReferrersApi(subject, options.signal))) return fallbackReferrers(this, subject, artifactType, options);
    const query = artifactType ? `?artifactType=${encodeURIComponent(artifactType)}` : "";
    const res = await this.client.send({
      method: "GET",
      url: this.path("referrers", `${checkDigest(subject.digest)}${query}`),
      scopes: this.scopes(false),
      expect: [200],
      signal: options.signal,
    });
    const all = referrerEntries(parseJson<unknown>(await readAll(res.body, MAX_MANIFEST_SIZE, "referrers list"), `${this.name} referrers list`));
    // A registry may ignore the filter; it says so by omitting OCI-Filters-Applied.
    return artifactType ? all.filter((d) => d.artifactType === artifactType) : all;
  }

  async indexReferrer(subject: Descriptor, referrer: Descriptor): Promise<void> {
    if (await this.hasReferrersApi(subject)) return;
    await addFallbackReferrer(this, subject, referrer);
  }
}

/** `work`, or a rejection with `signal`'s reason once it aborts, whichever comes first (`work` itself runs on). */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return work;
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const stop = () => reject(signal.reason as Error);
    signal.addEventListener("abort", stop, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener("abort", stop));
  });
}

function parseJson<T>(bytes: Buffer, what: string): T {
  try {
    return JSON.parse(bytes.toString("utf8")) as T;
  } catch (err) {
    throw new RegistryError("INVALID_MANIFEST", `${what} is not valid JSON`, { cause: err });
  }
}

function uploadLocation(res: Response, name: string): string {
  const location = res.headers.location;
  if (typeof location !== "string" || !location) {
    throw new RegistryError("BLOB_UPLOAD_INVALID", `${name}: registry answered ${res.statusCode} without an upload Location`);
  }
  return location;
}
