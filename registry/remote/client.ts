// HTTP to one registry host: authentication (anonymous, basic, bearer token
// challenges), retries with backoff on 429/5xx honouring Retry-After, and
// registry error bodies turned into typed errors.
// https://distribution.github.io/distribution/spec/auth/token/
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#error-codes
import type { Readable } from "node:stream";
import { backoffDelay, setBounded, sleep, type BackoffOptions } from "../../util/index.js";
import { RegistryError, type DistributionErrorCode } from "../errors.js";
import type { Credentials } from "./credentials.js";
import { sendRequest, type Response } from "./http.js";

export type { Response, ResponseBody } from "./http.js";

export interface ClientOptions {
  /** Use http:// for a non-loopback host (loopback always uses it). */
  plainHttp?: boolean;
  /** Sent when the registry challenges for them; the client looks up nothing on its own. */
  credentials?: Credentials;
  /** Attempts for one request, counting the first; default 5. */
  maxAttempts?: number;
  /** Cap of the first backoff delay in ms (doubles per retry, full jitter); default 200. */
  backoffMs?: number;
  /** Longest wait, even when Retry-After asks for more; default 30 s. */
  maxDelayMs?: number;
  /** Longest wait for a response's headers, and between body chunks; default 30 s. */
  timeoutMs?: number;
  /**
   * Longest time one request may take in all, retries and reading its body
   * included; default 120 s. A registry that trickles a byte at a time (each
   * within timeoutMs) cannot hold a pull forever.
   */
  deadlineMs?: number;
}

export interface SendOptions {
  method: "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE";
  /** A path ("/v2/…") or an absolute URL (upload locations, redirects). */
  url: string;
  headers?: Record<string, string>;
  /**
   * A stream is sent as it is read, with backpressure, and only once: no
   * retry, and a 401 is not answered by authenticating again (the request
   * that needs one, the POST opening an upload, has already done that).
   */
  body?: Buffer | Readable;
  /** Token scopes this request needs, e.g. ["repository:team/app:pull"]. */
  scopes: string[];
  /** Statuses that are success for this call; others become errors. */
  expect: number[];
  /** Cancels the request, its retries' waits, its token fetch and its body; the call rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** The pace (64 KiB/s) a streamed upload's deadline allows for, on top of deadlineMs (an agent's pull from the assigner allows its layer the same). */
export const SLOW_UPLINK_BYTES_PER_S = 64 * 1024;
const RETRY_STATUS = new Set([429, 500, 502, 503, 504]);
/** Requests that may be sent again after a 5xx or a broken connection; 429 means "not processed", so any may. */
const IDEMPOTENT = new Set(["GET", "HEAD", "PUT", "DELETE"]);
const KNOWN_CODES = new Set<string>([
  "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN",
  "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID", "NAME_UNKNOWN", "SIZE_INVALID", "UNAUTHORIZED",
  "DENIED", "UNSUPPORTED", "TOOMANYREQUESTS",
]);

interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

export function isLoopback(host: string): boolean {
  const name = host.replace(/:\d+$/, "");
  return name === "localhost" || name === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(name);
}

/** Parses `Bearer realm="…",service="…",scope="…"` (RFC 7235 auth-params). */
export function parseChallenge(header: string): Challenge {
  const space = header.indexOf(" ");
  const scheme = (space < 0 ? header : header.slice(0, space)).toLowerCase();
  const params: Record<string, string> = {};
  const re = /([a-zA-Z_]+)=(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
  for (const m of (space < 0 ? "" : header.slice(space + 1)).matchAll(re)) {
    params[m[1]!.toLowerCase()] = (m[2] ?? m[3] ?? "").replace(/\\(.)/g, "$1");
  }
  return { scheme, params };
}

/** Bearer tokens kept per client, one per set of scopes (a repository, or two for a mount). */
const MAX_TOKENS = 256;

export class RegistryClient {
  readonly baseUrl: string;
  private readonly credentials: Credentials | undefined;
  private readonly maxAttempts: number;
  private readonly backoff: BackoffOptions;
  private readonly timeoutMs: number;
  private readonly deadlineMs: number;
  /** How the registry asked us to authenticate, learned from its first 401. */
  private challenge: Challenge | undefined;
  private readonly tokens = new Map<string, { token: string; expires: number }>();

  constructor(
    readonly registry: string,
    options: ClientOptions = {},
  ) {
    const plain = options.plainHttp === true || isLoopback(registry);
    this.baseUrl = `${plain ? "http" : "https"}://${registry}`;
    this.credentials = options.credentials;
    this.maxAttempts = options.maxAttempts ?? 5;
    this.backoff = { baseMs: options.backoffMs ?? 200, maxMs: options.maxDelayMs ?? 30_000 };
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.deadlineMs = options.deadlineMs ?? 120_000;
  }

  /**
   * The caller's signal combined with this client's overall deadline. The
   * deadline aborts with a RegistryError TIMEOUT as its reason, so a request
   * or a body stream cut off by it fails with that error.
   */
  deadline(what: string, signal?: AbortSignal, extraMs = 0): AbortSignal {
    const controller = new AbortController();
    const limitMs = this.deadlineMs + extraMs;
    const timer = setTimeout(() => {
      controller.abort(new RegistryError("TIMEOUT", `${this.registry} ${what}: no complete answer within ${limitMs / 1000} s`));
    }, limitMs);
    timer.unref();
    return signal ? AbortSignal.any([signal, controller.signal]) : controller.signal;
  }

  /** Sends a request, authenticating and retrying as needed; the caller consumes the body. */
  async send(options: SendOptions): Promise<Response> {
    let authRetried = false;
    const url = new URL(options.url, this.baseUrl);
    // Credentials go only to the registry itself, never to an upload or
    // pagination URL on another origin (as oras-go picks them per host).
    const sameOrigin = url.origin === new URL(this.baseUrl).origin;
    const streamed = options.body !== undefined && !Buffer.isBuffer(options.body);
    const idempotent = IDEMPOTENT.has(options.method) && !streamed;
    // `signal` is the caller's; `deadline` adds this client's overall limit, body included.
    const { signal: callerSignal } = options;
    // A streamed upload (a whole blob in one PUT) also gets the time its size needs over a slow uplink.
    const uploadMs = streamed ? (Number(options.headers?.["content-length"] ?? 0) / SLOW_UPLINK_BYTES_PER_S) * 1000 : 0;
    const signal = this.deadline(`${options.method} ${url.pathname}`, callerSignal, uploadMs);
    for (let attempt = 1; ; attempt++) {
      signal?.throwIfAborted();
      const headers = { ...options.headers, ...(sameOrigin ? await this.authorization(options.scopes, signal) : {}) };
      let res: Response;
      try {
        res = await sendRequest(url, { method: options.method, headers, body: options.body, timeoutMs: this.timeoutMs, signal });
      } catch (err) {
        // The caller asked for the signal's reason (or the deadline's error), whatever the socket said.
        callerSignal?.throwIfAborted();
        signal.throwIfAborted();
        // A streamed body that failed (DIGEST_MISMATCH as it is verified, the source's own error) is the cause, not the network.
        const bodyError = streamed ? (options.body as Readable).errored : null;
        if (bodyError) throw bodyError;
        if (attempt < this.maxAttempts && idempotent && isTransient(err)) {
          await sleep(backoffDelay(attempt, this.backoff), signal);
          continue;
        }
        throw new RegistryError("UNREACHABLE", `cannot reach registry ${this.registry}: ${(err as Error).message}`, { cause: err });
      }
      if (options.expect.includes(res.statusCode)) return res;
      if (res.statusCode === 401 && !authRetried && sameOrigin && !streamed) {
        authRetried = true;
        await res.body.dump();
        this.learnChallenge(res.headers["www-authenticate"], options.scopes);
        continue;
      }
      if (RETRY_STATUS.has(res.statusCode) && attempt < this.maxAttempts && (idempotent || (res.statusCode === 429 && !streamed))) {
        await res.body.dump();
        await sleep(backoffDelay(attempt, this.backoff, res.headers["retry-after"]), signal);
        continue;
      }
      throw await this.errorFrom(res, options);
    }
  }

  private learnChallenge(header: string | string[] | undefined, scopes: string[]): void {
    const text = Array.isArray(header) ? header[0] : header;
    if (!text) throw new RegistryError("UNAUTHORIZED", `registry ${this.registry} answered 401 without a WWW-Authenticate challenge`, { status: 401 });
    const challenge = parseChallenge(text);
    if (challenge.scheme === "basic" && !this.credentials) throw this.noCredentials();
    if (challenge.scheme !== "basic" && challenge.scheme !== "bearer") {
      throw new RegistryError("UNAUTHORIZED", `registry ${this.registry} asks for unsupported auth scheme "${challenge.scheme}"`, { status: 401 });
    }
    this.challenge = challenge;
    // A fresh 401 means any cached token for these scopes is no good.
    this.tokens.delete(scopes.join(" "));
  }

  private noCredentials(): RegistryError {
    return new RegistryError(
      "NO_CREDENTIALS",
      `registry ${this.registry} requires credentials: set AEGIS_REGISTRY_HOST=${this.registry} with AEGIS_REGISTRY_USERNAME and AEGIS_REGISTRY_PASSWORD, or log in with docker/oras`,
      { status: 401 },
    );
  }

  private async authorization(scopes: string[], signal: AbortSignal | undefined): Promise<Record<string, string>> {
    if (!this.challenge) return {};
    if (this.challenge.scheme === "basic") return this.credentials ? { authorization: basic(this.credentials) } : {};
    return { authorization: `Bearer ${await this.token(scopes, signal)}` };
  }

  /** A bearer token for `scopes` from the challenge's realm, cached until shortly before expiry. */
  private async token(scopes: string[], signal: AbortSignal | undefined): Promise<string> {
    const key = scopes.join(" ");
    const cached = this.tokens.get(key);
    if (cached && cached.expires > Date.now()) return cached.token;
    const { realm, service } = this.challenge!.params;
    if (!realm) throw new RegistryError("UNAUTHORIZED", `registry ${this.registry} sent a Bearer challenge without a realm`);
    const url = new URL(realm);
    if (service) url.searchParams.set("service", service);
    for (const scope of scopes) url.searchParams.append("scope", scope);
    // Only credentials need the realm checked: an anonymous token request carries nothing to keep.
    if (this.credentials) this.checkRealm(url, realm);
    let res: Response;
    try {
      res = await sendRequest(url, { method: "GET", headers: this.credentials ? { authorization: basic(this.credentials) } : {}, timeoutMs: this.timeoutMs, signal });
    } catch (err) {
      signal?.throwIfAborted();
      throw new RegistryError("UNREACHABLE", `cannot reach token server ${url.origin} of ${this.registry}`, { cause: err });
    }
    if (res.statusCode === 401 || res.statusCode === 403) {
      await res.body.dump();
      if (!this.credentials) throw this.noCredentials();
      throw new RegistryError("UNAUTHORIZED", `token server of ${this.registry} rejected the credentials for user "${this.credentials.username}"`, { status: res.statusCode });
    }
    if (res.statusCode !== 200) throw await this.errorFrom(res, { method: "GET", url: url.origin + url.pathname });
    const body = (await res.body.json().catch((err: unknown) => {
      throw new RegistryError("UNAUTHORIZED", `token server of ${this.registry} answered with invalid JSON`, { cause: err });
    })) as { token?: string; access_token?: string; expires_in?: number };
    const token = body.token ?? body.access_token;
    if (!token) throw new RegistryError("UNAUTHORIZED", `token server of ${this.registry} answered without a token`);
    // The spec's default lifetime is 60 s; renew 10 s early.
    const lifetime = (body.expires_in ?? 60) * 1000;
    setBounded(this.tokens, key, { token, expires: Date.now() + Math.max(lifetime - 10_000, lifetime / 2) }, MAX_TOKENS);
    return token;
  }

  /**
   * Refuses a token realm the credentials must not go to. Over https the
   * challenge is the registry's word: its realm may be another https origin
   * (Docker Hub's token server is another host), or plain http on loopback.
   * Over plain http the challenge is anyone's word on the path, so the realm
   * must be the registry's own origin, or loopback when the registry is too
   * (both on this machine, with no path between: a test registry's token
   * server has a port of its own).
   */
  private checkRealm(url: URL, realm: string): void {
    const base = new URL(this.baseUrl);
    if (base.protocol === "http:") {
      if (url.origin === base.origin || (isLoopback(base.host) && isLoopback(url.host))) return;
      throw new RegistryError("INSECURE", `refusing to send credentials to token realm ${realm}: registry ${this.registry} is reached over plain HTTP, where a challenge naming another origin may come from anyone on the path`);
    }
    if (url.protocol === "http:" && !isLoopback(url.host)) throw new RegistryError("INSECURE", `refusing to send credentials to plain-HTTP token realm ${realm}`);
  }

  /**
   * One GET to another origin (a pre-signed blob-storage URL a registry
   * redirected to): no credentials, no retries, within this client's
   * timeouts and deadline. Anything but 200 is a typed error.
   */
  async getElsewhere(url: URL, signal?: AbortSignal): Promise<Response> {
    const limited = this.deadline(`GET ${url.origin}${url.pathname}`, signal);
    let res: Response;
    try {
      res = await sendRequest(url, { method: "GET", timeoutMs: this.timeoutMs, signal: limited });
    } catch (err) {
      limited.throwIfAborted();
      throw new RegistryError("UNREACHABLE", `${this.registry}: cannot fetch ${url.origin}${url.pathname}`, { cause: err });
    }
    if (res.statusCode !== 200) throw await this.errorFrom(res, { method: "GET", url: url.href });
    return res;
  }

  /** A typed error from a registry response, read from its JSON error body when it has one. */
  async errorFrom(res: Response, options: Pick<SendOptions, "method" | "url">): Promise<RegistryError> {
    const status = res.statusCode;
    let text = "";
    if (options.method !== "HEAD") text = (await res.body.text().catch(() => "")).slice(0, 4096);
    else await res.body.dump();
    let code: DistributionErrorCode | undefined;
    let message: string;
    try {
      const first = (JSON.parse(text) as { errors?: { code?: string; message?: string; detail?: unknown }[] }).errors?.[0];
      if (first?.code && KNOWN_CODES.has(first.code)) code = first.code as DistributionErrorCode;
      message = first?.message ?? "";
    } catch {
      message = text.split("\n")[0] ?? "";
    }
    const path = options.url.startsWith("/") ? options.url : new URL(options.url).pathname;
    if (status === 401 && !this.credentials) return this.noCredentials();
    const fallback: DistributionErrorCode | "NOT_FOUND" | "HTTP_ERROR" =
      status === 401 ? "UNAUTHORIZED" : status === 403 ? "DENIED" : status === 404 ? "NOT_FOUND" : status === 429 ? "TOOMANYREQUESTS" : "HTTP_ERROR";
    const finalCode = code ?? fallback;
    const detail = message ? `: ${message}` : "";
    return new RegistryError(finalCode, `${this.registry} ${options.method} ${path}: ${status} ${finalCode}${detail}`, { status });
  }
}

function basic(credentials: Credentials): string {
  return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString("base64")}`;
}

function isTransient(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === "ECONNRESET" || code === "EPIPE" || code === "ETIMEDOUT";
}
