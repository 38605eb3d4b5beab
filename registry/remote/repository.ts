// A Target for one repository in a registry that speaks the OCI distribution
// spec. https://github.com/opencontainers/distribution-spec/blob/main/spec.md
import type { Readable } from "node:stream";
import { request } from "undici";
import { backoffDelay, sleep } from "../../util/index.js";
import { RegistryError } from "../errors.js";
import { checkDigest, isDigest, readAll, sha256, verifyBytes, verifyStream } from "../digest.js";
import { isManifestType, MANIFEST_MEDIA_TYPES, MAX_MANIFEST_SIZE, MediaType, referrerEntries, type Descriptor } from "../oci.js";
import { addFallbackReferrer, fallbackReferrers } from "../referrers.js";
import type { AbortOptions, Target } from "../storage.js";
import { RegistryClient, type ClientOptions, type Response } from "./client.js";
import type { CredentialLookup, Credentials } from "./credentials.js";

export interface RepositoryOptions extends Omit<ClientOptions, "credentials"> {
  /** Credentials for this registry, or a lookup by host (e.g. credentialsFromEnvironment) asked once here. */
  credentials?: Credentials | CredentialLookup;
  /** Blobs up to this size go up in one PUT; larger ones in PATCH chunks. Default 4 MiB. */
  monolithicLimit?: number;
  /** Size of each PATCH chunk. Default 8 MiB. */
  chunkSize?: number;
  /** Most tag-list pages followed (Link: rel="next"); default 1,000. A registry that links on forever is refused. */
  maxTagPages?: number;
  /** Most tags listed in all; default 100,000. */
  maxTags?: number;
}

const ACCEPT_MANIFESTS = MANIFEST_MEDIA_TYPES.join(", ");
/** Whether a repository's registry has the referrers API, learned once per process. */
const referrersSupport = new Map<string, Promise<boolean>>();
const clients = new Map<string, RegistryClient>();

export class RemoteRepository implements Target {
  readonly name: string;
  readonly client: RegistryClient;
  private readonly monolithicLimit: number;
  private readonly chunkSize: number;
  private readonly maxTagPages: number;
  private readonly maxTags: number;
  /** Manifest bytes this instance pushed or read, so tagging needs no re-fetch. */
  private readonly recentManifests = new Map<string, Buffer>();

  constructor(
    readonly registry: string,
    readonly repository: string,
    options: RepositoryOptions = {},
  ) {
    this.name = `${registry}/${repository}`;
    // One client per registry and settings shares its tokens across repositories.
    const credentials = typeof options.credentials === "function" ? options.credentials(registry) : options.credentials;
    const key = JSON.stringify([registry, options.plainHttp, credentials, options.maxAttempts, options.backoffMs, options.timeoutMs, options.deadlineMs]);
    let client = clients.get(key);
    if (!client) clients.set(key, (client = new RegistryClient(registry, { ...options, credentials })));
    this.client = client;
    this.monolithicLimit = options.monolithicLimit ?? 4 * 1024 * 1024;
    this.chunkSize = options.chunkSize ?? 8 * 1024 * 1024;
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
    checkDigest(desc.digest);
    if (isManifestType(desc.mediaType)) {
      const res = await this.client.send({
        method: "GET",
        url: this.path("manifests", desc.digest),
        headers: { accept: ACCEPT_MANIFESTS },
        scopes: this.scopes(false),
        expect: [200],
        signal: options.signal,
      });
      return verifyStream(desc, res.body, this.name);
    }
    return verifyStream(desc, await this.getBlob(desc.digest, options.signal), this.name);
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
    const target = new URL(location, this.client.baseUrl);
    const limited = this.client.deadline(`GET ${target.origin}${target.pathname}`, signal);
    const redirected = await request(target, { method: "GET", signal: limited }).catch((err: unknown) => {
      limited.throwIfAborted();
      throw new RegistryError("UNREACHABLE", `${this.name}: cannot fetch ${digest} from ${target.origin}`, { cause: err });
    });
    if (redirected.statusCode !== 200) {
      throw await this.client.errorFrom(redirected, { method: "GET", url: target.href });
    }
    return redirected.body;
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

  async push(desc: Descriptor, content: Readable, options: AbortOptions = {}): Promise<void> {
    const { signal } = options;
    if (isManifestType(desc.mediaType)) {
      const bytes = await readAll(content, MAX_MANIFEST_SIZE, `manifest ${desc.digest}`);
      await this.putManifest(desc, Buffer.from(verifyBytes(desc, bytes, "pushed content")), desc.digest, signal);
      return;
    }
    if (desc.size <= this.monolithicLimit) {
      const bytes = Buffer.from(verifyBytes(desc, await readAll(content, desc.size, desc.digest), "pushed content"));
      const location = await this.startUpload(signal);
      await this.finishUpload(location, desc.digest, bytes, signal);
      return;
    }
    await this.pushChunked(desc, content, signal);
  }

  /**
   * Streams a large blob in PATCH chunks and sends the closing PUT only once
   * the whole stream verified: a mismatch leaves no blob behind.
   * https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pushing-a-blob-in-chunks
   */
  private async pushChunked(desc: Descriptor, content: Readable, signal: AbortSignal | undefined): Promise<void> {
    let location = await this.startUpload(signal);
    let offset = 0;
    let pending: Buffer[] = [];
    let pendingSize = 0;
    const flush = async () => {
      const chunk = Buffer.concat(pending, pendingSize);
      pending = [];
      pendingSize = 0;
      const res = await this.client.send({
        method: "PATCH",
        url: location,
        headers: {
          "content-type": "application/octet-stream",
          "content-range": `${offset}-${offset + chunk.byteLength - 1}`,
          "content-length": String(chunk.byteLength),
        },
        body: chunk,
        scopes: this.scopes(true),
        expect: [202],
        signal,
      });
      await res.body.dump();
      location = uploadLocation(res, this.name);
      offset += chunk.byteLength;
    };
    for await (const piece of verifyStream(desc, content, "pushed content") as AsyncIterable<Buffer>) {
      pending.push(piece);
      pendingSize += piece.byteLength;
      if (pendingSize >= this.chunkSize) await flush();
    }
    if (pendingSize > 0) await flush();
    await this.finishUpload(location, desc.digest, Buffer.alloc(0), signal);
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

  private async finishUpload(location: string, digest: string, body: Buffer, signal: AbortSignal | undefined): Promise<void> {
    const url = new URL(location, this.client.baseUrl);
    url.searchParams.set("digest", digest);
    const res = await this.client.send({
      method: "PUT",
      url: url.href,
      headers: { "content-type": "application/octet-stream", "content-length": String(body.byteLength) },
      body,
      scopes: this.scopes(true),
      expect: [201],
      signal,
    });
    await res.body.dump();
  }

  /**
   * Asks the registry to link a blob from another repository on the same
   * host; false when it would rather have the bytes (202).
   * https://github.com/opencontainers/distribution-spec/blob/main/spec.md#mounting-a-blob-from-another-repository
   */
  async mount(desc: Descriptor, fromRepository: string): Promise<boolean> {
    const query = `?mount=${encodeURIComponent(desc.digest)}&from=${encodeURIComponent(fromRepository)}`;
    const res = await this.client.send({
      method: "POST",
      url: this.path("blobs", `uploads/${query}`),
      headers: { "content-length": "0" },
      scopes: this.scopes(true, `repository:${fromRepository}:pull`),
      expect: [201, 202],
    });
    await res.body.dump();
    if (res.statusCode === 201) return true;
    // The registry opened an ordinary upload instead; close it, push will open its own.
    const cancel = await this.client.send({ method: "DELETE", url: uploadLocation(res, this.name), scopes: this.scopes(true), expect: [204, 404] });
    await cancel.body.dump();
    return false;
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
    this.remember(desc.digest, bytes);
  }

  private remember(digest: string, bytes: Buffer): void {
    this.recentManifests.set(digest, bytes);
    if (this.recentManifests.size > 64) this.recentManifests.delete(this.recentManifests.keys().next().value!);
  }

  async resolve(reference: string, options: AbortOptions = {}): Promise<Descriptor> {
    const { signal } = options;
    const res = await this.client.send({
      method: "HEAD",
      url: this.path("manifests", reference),
      headers: { accept: ACCEPT_MANIFESTS },
      scopes: this.scopes(false),
      expect: [200, 404],
      signal,
    });
    await res.body.dump();
    if (res.statusCode === 404) {
      throw new RegistryError("MANIFEST_UNKNOWN", `${this.name}: manifest ${reference} not found`, { status: 404 });
    }
    const mediaType = String(res.headers["content-type"] ?? "").split(";")[0]!.trim();
    const size = Number(res.headers["content-length"]);
    if (!isManifestType(mediaType) || !Number.isSafeInteger(size)) {
      throw new RegistryError("INVALID_MANIFEST", `${this.name}: ${reference} is not an OCI or Docker v2 manifest (${mediaType || "no content type"})`);
    }
    // Never trust the registry's Docker-Content-Digest for a digest we were
    // given; for a tag it is only a name for bytes we verify when we fetch them.
    const header = res.headers["docker-content-digest"];
    if (isDigest(reference)) return { mediaType, digest: reference, size };
    if (typeof header === "string" && isDigest(header)) return { mediaType, digest: header, size };
    const get = await this.client.send({
      method: "GET",
      url: this.path("manifests", reference),
      headers: { accept: ACCEPT_MANIFESTS },
      scopes: this.scopes(false),
      expect: [200],
      signal,
    });
    const bytes = await readAll(get.body, MAX_MANIFEST_SIZE, `manifest ${reference}`);
    const digest = sha256(bytes);
    this.remember(digest, bytes);
    return { mediaType, digest, size: bytes.byteLength };
  }

  async tag(desc: Descriptor, tag: string): Promise<void> {
    const bytes = this.recentManifests.get(desc.digest) ?? (await readAll(await this.fetch(desc), MAX_MANIFEST_SIZE, desc.digest));
    await this.putManifest(desc, bytes, tag);
  }

  /** Follows the tag list's pages, within maxTagPages and maxTags, refusing a page link seen before (a loop). */
  async tags(): Promise<string[]> {
    const all: string[] = [];
    const seen = new Set<string>();
    let url: string | undefined = this.path("tags", "list?n=1000");
    while (url) {
      const key = new URL(url, this.client.baseUrl).href;
      if (seen.has(key)) throw new RegistryError("HTTP_ERROR", `${this.name}: tag list pages loop (next page ${key} was already read)`);
      if (seen.size >= this.maxTagPages) throw new RegistryError("SIZE_LIMIT", `${this.name}: tag list has more than ${this.maxTagPages} pages`);
      seen.add(key);
      const res: Response = await this.client.send({ method: "GET", url, scopes: this.scopes(false), expect: [200, 404] });
      if (res.statusCode === 404) {
        // A repository with nothing pushed yet is unknown to the registry (NAME_UNKNOWN): it has no tags.
        const error = await this.client.errorFrom(res, { method: "GET", url });
        if (error.code === "NAME_UNKNOWN" && all.length === 0) return [];
        throw error;
      }
      const body = parseJson<{ tags?: string[] | null }>(await readAll(res.body, MAX_MANIFEST_SIZE, "tags list"), `${this.name} tags list`);
      all.push(...(Array.isArray(body.tags) ? body.tags.filter((t) => typeof t === "string") : []));
      if (all.length > this.maxTags) throw new RegistryError("SIZE_LIMIT", `${this.name}: tag list has more than ${this.maxTags} tags`);
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
   */
  private hasReferrersApi(subject: Descriptor): Promise<boolean> {
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
      referrersSupport.set(key, known);
      known.catch(() => referrersSupport.delete(key));
    }
    return known;
  }

  async referrers(subject: Descriptor, artifactType?: string): Promise<Descriptor[]> {
    if (!(await this.hasReferrersApi(subject))) return fallbackReferrers(this, subject, artifactType);
    const query = artifactType ? `?artifactType=${encodeURIComponent(artifactType)}` : "";
    const res = await this.client.send({
      method: "GET",
      url: this.path("referrers", `${checkDigest(subject.digest)}${query}`),
      scopes: this.scopes(false),
      expect: [200],
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
