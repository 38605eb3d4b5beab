// A reverse proxy in front of a real registry that can misbehave on demand
// (tampered bytes, throttling, stalled bodies) or add the OCI 1.1 referrers API that
// distribution 2.8.2 lacks.
import { createHash } from "node:crypto";
import { Agent, createServer, request } from "node:http";
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Transform, pipeline } from "node:stream";
import type { TransformCallback } from "node:stream";

export interface ThrottleOptions {
  status: 429 | 503;
  /** How many of the next requests are refused. */
  times: number;
  /** Sent as `Retry-After`; default 0. */
  retryAfterSeconds?: number;
}

export interface ProxyOptions {
  /** Flip one byte of GET /v2/<name>/blobs/<digest> response bodies. */
  tamperBlobs?: boolean;
  /** Flip one byte of GET /v2/<name>/manifests/<ref> response bodies. */
  tamperManifests?: boolean;
  /**
   * Send the first `stallBlobsAfter` bytes of GET /v2/<name>/blobs/<digest>
   * response bodies, then nothing more until the client goes away: a
   * registry that trickles to a halt.
   */
  stallBlobsAfter?: number;
  /** Refuse the next `times` requests; setting it again restarts the count. */
  throttle?: ThrottleOptions;
  /** Serve GET /v2/<name>/referrers/<digest> from manifests pushed through this proxy. */
  referrersApi?: boolean;
  /**
   * Drop `mount` and `from` from POST /v2/<name>/blobs/uploads/: a registry
   * without cross-repository mounts, which opens an ordinary upload (202).
   */
  ignoreMounts?: boolean;
  /** Answer POST /v2/<name>/blobs/uploads/?mount=… with 500: a registry whose mounts fail. */
  failMounts?: boolean;
}

export interface ProxyRequestRecord {
  method: string;
  /** Path without the query string. */
  path: string;
  /** Query string including "?", or "". */
  query: string;
  /** Status sent to the client (0 if the proxy failed before answering). */
  status: number;
  /** The path of the response's Location header, if it had one (an upload session's, after a POST). */
  location?: string;
}

export interface RegistryProxy {
  /** "127.0.0.1:PORT" */
  host: string;
  /** "http://127.0.0.1:PORT" */
  url: string;
  /** Merges `options` into the current ones; takes effect for the next request. */
  set(options: ProxyOptions): void;
  /** Every request in arrival order; clear with `requests.length = 0`. */
  requests: ProxyRequestRecord[];
  stop(): Promise<void>;
}

export interface OciDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
// Digest grammar: https://github.com/opencontainers/image-spec/blob/main/descriptor.md#digests
const DIGEST_RE = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const BLOB_RE = /^\/v2\/(.+)\/blobs\/([^/]+)$/;
const MANIFEST_RE = /^\/v2\/(.+)\/manifests\/([^/]+)$/;
const REFERRERS_RE = /^\/v2\/(.+)\/referrers\/([^/]+)$/;
// RFC 9110 §7.6.1: never forwarded by a proxy.
const HOP_BY_HOP = new Set([
  "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
  "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
]);
const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]"]);

function endToEndHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const named = String(headers.connection ?? "")
    .split(",")
    .map((h) => h.trim().toLowerCase());
  const out: OutgoingHttpHeaders = {};
  for (const [key, value] of Object.entries(headers)) {
    if (value !== undefined && !HOP_BY_HOP.has(key) && !named.includes(key)) out[key] = value;
  }
  return out;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function stringRecord(value: unknown): Record<string, string> | undefined {
  if (!isObject(value)) return undefined;
  const entries = Object.entries(value);
  return entries.every(([, v]) => typeof v === "string") ? (value as Record<string, string>) : undefined;
}

/**
 * The descriptor a referrers list holds for a pushed manifest, per
 * https://github.com/opencontainers/distribution-spec/blob/main/spec.md#listing-referrers
 * (artifactType falls back to config.mediaType for image manifests).
 */
function referrerOf(body: Buffer, contentType: string | undefined): { subject: string; descriptor: OciDescriptor } | undefined {
  let manifest: unknown;
  try {
    manifest = JSON.parse(body.toString("utf8"));
  } catch {
    return undefined;
  }
  if (!isObject(manifest) || !isObject(manifest.subject) || typeof manifest.subject.digest !== "string") return undefined;
  const mediaType = typeof manifest.mediaType === "string" ? manifest.mediaType : contentType;
  if (mediaType === undefined) return undefined;
  const descriptor: OciDescriptor = {
    mediaType,
    digest: `sha256:${createHash("sha256").update(body).digest("hex")}`,
    size: body.length,
  };
  if (typeof manifest.artifactType === "string") descriptor.artifactType = manifest.artifactType;
  else if (isObject(manifest.config) && typeof manifest.config.mediaType === "string")
    descriptor.artifactType = manifest.config.mediaType;
  const annotations = stringRecord(manifest.annotations);
  if (annotations !== undefined) descriptor.annotations = annotations;
  return { subject: manifest.subject.digest, descriptor };
}

/** Flips the first body byte: same length, different digest. */
function flipFirstByte(): Transform {
  let flipped = false;
  return new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      if (flipped || chunk.length === 0) {
        callback(null, chunk);
        return;
      }
      flipped = true;
      const copy = Buffer.from(chunk);
      copy.writeUInt8(copy.readUInt8(0) ^ 0xff, 0);
      callback(null, copy);
    },
  });
}

function stallAfter(limit: number): Transform {
  let sent = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      // Past the limit the callback is never called: the body stops flowing
      // here until the client disconnects and the pipeline is destroyed.
      if (sent >= limit) return;
      const part = chunk.subarray(0, limit - sent);
      sent += part.length;
      callback(null, part);
    },
  });
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.once("end", () => resolve(Buffer.concat(chunks)));
    req.once("error", reject);
  });
}

export async function startRegistryProxy(upstreamUrl: string, options: ProxyOptions = {}): Promise<RegistryProxy> {
  const upstream = new URL(upstreamUrl);
  if (upstream.protocol !== "http:" || !LOOPBACK.has(upstream.hostname)) {
    throw new Error(`registry proxy: upstream must be http on loopback, got ${upstreamUrl}`);
  }
  const upstreamOrigin = upstream.origin;
  const agent = new Agent({ keepAlive: true });
  let current: ProxyOptions = { ...options };
  let throttleLeft = options.throttle?.times ?? 0;
  const requests: ProxyRequestRecord[] = [];
  // repository -> subject digest -> referrer descriptors
  const referrers = new Map<string, Map<string, OciDescriptor[]>>();
  let proxyOrigin = "";

  function sendUpstream(
    method: string,
    path: string,
    headers: IncomingHttpHeaders,
    body: Buffer | IncomingMessage | undefined,
  ): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const outHeaders = endToEndHeaders(headers);
      // The upstream builds absolute Location URLs from Host; they are
      // rewritten back to the proxy in relay().
      outHeaders.host = upstream.host;
      if (Buffer.isBuffer(body)) outHeaders["content-length"] = String(body.length);
      const upReq = request({ host: upstream.hostname, port: upstream.port, method, path, headers: outHeaders, agent });
      upReq.once("response", resolve);
      upReq.once("error", reject);
      if (body === undefined || Buffer.isBuffer(body)) upReq.end(body);
      else pipeline(body, upReq, () => undefined); // errors surface on upReq
    });
  }

  function relay(
    upRes: IncomingMessage,
    res: ServerResponse,
    record: ProxyRequestRecord,
    extra: { tamper?: boolean; stallAfter?: number; headers?: OutgoingHttpHeaders } = {},
  ): void {
    const headers = { ...endToEndHeaders(upRes.headers), ...extra.headers };
    const location = headers.location;
    if (typeof location === "string" && location.startsWith(upstreamOrigin)) {
      headers.location = proxyOrigin + location.slice(upstreamOrigin.length);
    }
    if (typeof location === "string") record.location = new URL(location, upstreamOrigin).pathname;
    const status = upRes.statusCode ?? 502;
    record.status = status;
    res.writeHead(status, headers);
    const tamper = extra.tamper === true && status >= 200 && status < 300;
    const done = (): void => undefined; // errors: the client sees a cut-off body
    const ok = status >= 200 && status < 300;
    if (tamper) pipeline(upRes, flipFirstByte(), res, done);
    else if (ok && extra.stallAfter !== undefined) pipeline(upRes, stallAfter(extra.stallAfter), res, done);
    else pipeline(upRes, res, done);
  }

  function sendJson(res: ServerResponse, record: ProxyRequestRecord, status: number, body: unknown, headers: OutgoingHttpHeaders = {}, headOnly = false): void {
    const text = JSON.stringify(body);
    record.status = status;
    res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text), ...headers });
    res.end(headOnly ? undefined : text);
  }

  async function serveReferrers(req: IncomingMessage, res: ServerResponse, record: ProxyRequestRecord, name: string, digest: string, url: URL): Promise<void> {
    req.resume();
    const headOnly = req.method === "HEAD";
    if (!DIGEST_RE.test(digest)) {
      // spec: an invalid digest is 400, never 404
      sendJson(res, record, 400, { errors: [{ code: "DIGEST_INVALID", message: "invalid digest" }] }, {}, headOnly);
      return;
    }
    // Respect upstream auth: the client must be allowed to pull this repository.
    const check = await sendUpstream("HEAD", `/v2/${name}/manifests/${digest}`, req.headers, undefined);
    check.resume();
    if (check.statusCode === 401 || check.statusCode === 403) {
      const challenge = check.headers["www-authenticate"];
      sendJson(res, record, check.statusCode, { errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] },
        challenge === undefined ? {} : { "www-authenticate": challenge }, headOnly);
      return;
    }
    const all = referrers.get(name)?.get(digest) ?? [];
    const artifactType = url.searchParams.get("artifactType");
    const manifests = artifactType === null ? all : all.filter((d) => d.artifactType === artifactType);
    const index = { schemaVersion: 2, mediaType: OCI_INDEX, manifests };
    const text = JSON.stringify(index);
    record.status = 200;
    res.writeHead(200, {
      "content-type": OCI_INDEX,
      "content-length": Buffer.byteLength(text),
      "docker-content-digest": `sha256:${createHash("sha256").update(text).digest("hex")}`,
      ...(artifactType === null ? {} : { "oci-filters-applied": "artifactType" }),
    });
    res.end(headOnly ? undefined : text);
  }

  async function putManifest(req: IncomingMessage, res: ServerResponse, record: ProxyRequestRecord, name: string): Promise<void> {
    const body = await readBody(req);
    const upRes = await sendUpstream("PUT", req.url ?? "/", req.headers, body);
    const status = upRes.statusCode ?? 0;
    const found = status >= 200 && status < 300 ? referrerOf(body, req.headers["content-type"]) : undefined;
    if (found !== undefined) {
      let bySubject = referrers.get(name);
      if (bySubject === undefined) referrers.set(name, (bySubject = new Map()));
      const list = (bySubject.get(found.subject) ?? []).filter((d) => d.digest !== found.descriptor.digest);
      bySubject.set(found.subject, [...list, found.descriptor]);
    }
    // spec "Pushing Manifests with Subject": registries that process the subject answer OCI-Subject
    relay(upRes, res, record, { headers: found === undefined ? {} : { "oci-subject": found.subject } });
  }

  async function deleteManifest(req: IncomingMessage, res: ServerResponse, record: ProxyRequestRecord, name: string, reference: string): Promise<void> {
    const upRes = await sendUpstream("DELETE", req.url ?? "/", req.headers, req);
    const status = upRes.statusCode ?? 0;
    // spec: a deleted manifest SHOULD leave the referrers lists
    if (status >= 200 && status < 300) {
      for (const [subject, list] of referrers.get(name) ?? []) {
        referrers.get(name)?.set(subject, list.filter((d) => d.digest !== reference));
      }
    }
    relay(upRes, res, record);
  }

  async function handle(req: IncomingMessage, res: ServerResponse, record: ProxyRequestRecord, url: URL): Promise<void> {
    const method = record.method;

    const throttle = current.throttle;
    if (throttle !== undefined && throttleLeft > 0) {
      throttleLeft--;
      req.resume();
      const code = throttle.status === 429 ? "TOOMANYREQUESTS" : "UNAVAILABLE";
      sendJson(res, record, throttle.status, { errors: [{ code, message: `throttled by test proxy (${throttle.status})` }] },
        { "retry-after": String(throttle.retryAfterSeconds ?? 0) }, method === "HEAD");
      return;
    }

    const referrersMatch = REFERRERS_RE.exec(url.pathname);
    if (current.referrersApi === true && referrersMatch?.[1] !== undefined && referrersMatch[2] !== undefined &&
        (method === "GET" || method === "HEAD")) {
      await serveReferrers(req, res, record, referrersMatch[1], referrersMatch[2], url);
      return;
    }
    const manifestMatch = MANIFEST_RE.exec(url.pathname);
    if (current.referrersApi === true && manifestMatch?.[1] !== undefined && manifestMatch[2] !== undefined) {
      if (method === "PUT") return putManifest(req, res, record, manifestMatch[1]);
      if (method === "DELETE") return deleteManifest(req, res, record, manifestMatch[1], manifestMatch[2]);
    }

    const tamper =
      method === "GET" &&
      ((current.tamperBlobs === true && BLOB_RE.test(url.pathname)) ||
        (current.tamperManifests === true && manifestMatch !== null));
    const stall = method === "GET" && BLOB_RE.test(url.pathname) ? current.stallBlobsAfter : undefined;
    if (current.failMounts === true && method === "POST" && url.searchParams.has("mount")) {
      req.resume();
      sendJson(res, record, 500, { errors: [{ code: "UNKNOWN", message: "mount failed (test proxy)" }] });
      return;
    }
    let forwarded = req.url ?? "/";
    if (current.ignoreMounts === true && method === "POST" && url.searchParams.has("mount")) {
      url.searchParams.delete("mount");
      url.searchParams.delete("from");
      forwarded = url.pathname + url.search;
    }
    const upRes = await sendUpstream(method, forwarded, req.headers, req);
    relay(upRes, res, record, { tamper, ...(stall === undefined ? {} : { stallAfter: stall }) });
  }

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://proxy.invalid");
    const record: ProxyRequestRecord = { method: req.method ?? "GET", path: url.pathname, query: url.search, status: 0 };
    requests.push(record);
    handle(req, res, record, url).catch((err: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const text = `registry proxy: upstream error: ${String(err)}`;
      record.status = 502;
      res.writeHead(502, { "content-type": "text/plain", "content-length": Buffer.byteLength(text) });
      res.end(text);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const host = `127.0.0.1:${port}`;
  proxyOrigin = `http://${host}`;

  let stopped = false;
  return {
    host,
    url: proxyOrigin,
    requests,
    set(patch: ProxyOptions) {
      current = { ...current, ...patch };
      if ("throttle" in patch) throttleLeft = patch.throttle?.times ?? 0;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      agent.destroy();
    },
  };
}

/**
 * The blob upload sessions among `requests`, each as "METHOD status" lines
 * ("PUT <digest> status" for a commit) in order, keyed by the session's
 * path: a POST that opened one (its Location), then every PATCH, PUT or
 * DELETE sent to that path. Requests of other
 * sessions, or of none, are left out, so two uploads side by side can each
 * be checked on its own.
 */
export function uploadSessions(requests: readonly ProxyRequestRecord[]): Map<string, string[]> {
  const sessions = new Map<string, string[]>();
  for (const r of requests) {
    const line = `${r.method}${r.method === "PUT" ? ` ${new URLSearchParams(r.query).get("digest") ?? ""}` : ""} ${r.status}`;
    if (r.method === "POST" && r.location?.includes("/blobs/uploads/")) sessions.set(r.location, [line]);
    else sessions.get(r.path)?.push(line);
  }
  return sessions;
}
