// A registry double that misbehaves on purpose, for the client's defences
// against hostile or broken registries. It serves manifests and blobs from a
// store the test fills (any ReadOnlyTarget), and each mode breaks one thing:
// endless or looping tag pages, one tag page of whatever entries the test
// gives, a trickling blob, a referrers list with a null entry, a Basic
// challenge, or a Bearer one naming whatever token realm the test gives,
// that records what credentials it got, or listings (tags, referrers) that
// are never answered. It
// counts requests in flight so a test can see how many a client opens at once.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { MediaType, parseManifest, readAll, successors, type Descriptor, type ReadOnlyTarget } from "../../registry/index.js";

export interface HostileOptions {
  /** Content served by digest (and manifests by tag): what the test pushed into it. */
  store?: ReadOnlyTarget;
  /** Tag list pages: "endless" always links a further new page; "loop" links back to the first. */
  tags?: "endless" | "loop";
  /** The tag list is one page whose "tags" are these entries, as given (huge, not strings, not tags). */
  tagPage?: unknown[];
  /** Blob GETs send their headers, then one byte every this many ms, forever. */
  trickleMs?: number;
  /** Answer the referrers API, with a null entry before the store's referrers. */
  nullReferrer?: boolean;
  /** Every manifest GET waits this long first, so concurrent fetches overlap. */
  delayMs?: number;
  /** Tag list and referrers requests are never answered (held open until the double stops). */
  stallListings?: boolean;
  /** Challenge for Basic credentials (accepting any) and record the Authorization headers. */
  basicAuth?: boolean;
  /** Challenge for a Bearer token from this realm (never served here) and record the Authorization headers. */
  bearerRealm?: string;
}

export interface HostileRegistry {
  host: string;
  url: string;
  /** Requests seen, as "METHOD /path?query". */
  requests: string[];
  /** Authorization headers received (basicAuth and bearerRealm modes). */
  authorizations: string[];
  /** Most requests in flight at once. */
  maxInFlight: number;
  stop(): Promise<void>;
}

export async function startHostileRegistry(options: HostileOptions = {}): Promise<HostileRegistry> {
  const timers = new Set<NodeJS.Timeout>();
  let inFlight = 0;
  /** Blobs are found by the descriptors of the manifests served so far (clients read manifests first). */
  const blobs = new Map<string, Descriptor>();
  const state: Omit<HostileRegistry, "host" | "url" | "stop"> = { requests: [], authorizations: [], maxInFlight: 0 };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://x");
    state.requests.push(`${req.method} ${url.pathname}${url.search}`);
    if (options.basicAuth || options.bearerRealm) {
      const challenge = options.bearerRealm ? `Bearer realm="${options.bearerRealm}",service="hostile"` : 'Basic realm="hostile"';
      if (!req.headers.authorization) return send(res, 401, "", { "www-authenticate": challenge });
      state.authorizations.push(req.headers.authorization);
    }
    if (url.pathname === "/v2/") return send(res, 200, "{}");
    const m = /^\/v2\/(.+)\/(manifests|blobs|tags|referrers)\/(.+)$/.exec(url.pathname);
    if (!m) return send(res, 404, "");
    const [, repo, kind, ref] = m as unknown as [string, string, string, string];
    if (options.stallListings && (kind === "tags" || kind === "referrers")) return; // stop() closes it
    if (kind === "tags") return tagsPage(res, repo, url);
    if (kind === "referrers" && options.nullReferrer && options.store) {
      const subject = await options.store.resolve(ref);
      const manifests = [null, ...(await options.store.referrers(subject))];
      return send(res, 200, JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ImageIndex, manifests }), { "content-type": MediaType.ImageIndex });
    }
    if (!options.store || (kind !== "manifests" && kind !== "blobs")) return send(res, 404, "");
    if (kind === "manifests") {
      const desc = await options.store.resolve(ref).catch(() => undefined);
      if (!desc) return send(res, 404, JSON.stringify({ errors: [{ code: "MANIFEST_UNKNOWN" }] }));
      if (options.delayMs) await new Promise((resolve) => setTimeout(resolve, options.delayMs));
      const bytes = await readAll(await options.store.fetch(desc), desc.size, desc.digest);
      for (const child of successors(parseManifest(bytes, desc.mediaType))) blobs.set(child.digest, child);
      const headers = { "content-type": desc.mediaType, "docker-content-digest": desc.digest };
      return send(res, 200, req.method === "HEAD" ? "" : bytes, { ...headers, "content-length": String(bytes.byteLength) });
    }
    const known = blobs.get(ref);
    const blob = known && (await options.store.fetch(known).then((s) => readAll(s, known.size, ref), () => undefined));
    if (!blob) return send(res, 404, JSON.stringify({ errors: [{ code: "BLOB_UNKNOWN" }] }));
    if (options.trickleMs && req.method === "GET") return trickle(res, blob.byteLength, options.trickleMs);
    return send(res, 200, req.method === "HEAD" ? "" : blob, { "content-length": String(blob.byteLength) });
  };

  const tagsPage = (res: ServerResponse, repo: string, url: URL) => {
    if (options.tagPage) return send(res, 200, JSON.stringify({ name: repo, tags: options.tagPage }), { "content-type": "application/json" });
    const page = Number(url.searchParams.get("last")?.replace("t", "") ?? 0);
    const next = options.tags === "loop" ? `/v2/${repo}/tags/list?n=1000` : `/v2/${repo}/tags/list?n=1000&last=t${page + 1}`;
    const link: Record<string, string> = options.tags ? { link: `<${next}>; rel="next"` } : {};
    send(res, 200, JSON.stringify({ name: repo, tags: [`t${page + 1}`] }), { "content-type": "application/json", ...link });
  };

  // Claims the full size, then sends one byte per tick and never finishes.
  const trickle = (res: ServerResponse, size: number, everyMs: number) => {
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(size) });
    const timer = setInterval(() => res.write("x"), everyMs);
    timers.add(timer);
    res.on("close", () => {
      clearInterval(timer);
      timers.delete(timer);
    });
  };

  const server = createServer((req, res) => {
    state.maxInFlight = Math.max(state.maxInFlight, ++inFlight);
    res.on("close", () => inFlight--);
    handle(req, res).catch((err: unknown) => send(res, 500, String(err)));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(state, {
    host: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    stop: async () => {
      for (const timer of timers) clearInterval(timer);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
}

function send(res: ServerResponse, status: number, body: string | Buffer, headers: Record<string, string> = {}): void {
  if (!res.headersSent) res.writeHead(status, headers);
  res.end(body);
}
