// A typed client of the assigner's HTTP API, for the operator's commands and
// for agents. It loads only undici, zod's types and node:crypto: never the
// server (Express, ioredis, prom-client, NATS).
import { createPublicKey, sign, type KeyObject } from "node:crypto";
import type { Readable } from "node:stream";
import { request, type Dispatcher } from "undici";
import type { z } from "zod";
import { AssignerError, ERROR_STATUS, isAssignerErrorCode, type AssignerErrorCode } from "./errors.js";
import {
  NONCE_BYTES,
  type AgentDetailJson,
  type AgentList,
  type AssignmentChangesBody,
  type AssignmentChangesResult,
  type ArtifactJson,
  type ArtifactList,
  type ArtifactStatusJson,
  type AssignmentJson,
  type Capabilities,
  type DesiredStateJson,
  type HostAssignmentsJson,
  type RegisterCompleteBody,
  type RegisterCompleteResponse,
  type RegisterInitBody,
  type RegisterInitResponse,
  type RolloutJson,
  type RolloutList,
  type SignedTelemetry,
  type TelemetryResult,
  type SignaturesJson,
} from "./schemas.js";

export type ForHostResult = { notModified: true; etag: string } | { notModified: false; etag: string; body: z.infer<typeof ArtifactList> };

/** What an agent tells the assigner about itself when it registers. */
export interface RegisterOptions {
  hostname?: string;
  kernel?: string;
  labels?: Record<string, string>;
  capabilities?: z.input<typeof Capabilities>;
  enrollSecret?: string;
}

type Method = "GET" | "POST" | "PUT" | "DELETE";

/**
 * The most of an answer's body the client reads: an assigner (or whatever
 * answers at its address) cannot make an agent or a command hold more. The
 * largest answers are operator lists (10,000 hosts, 10,000 selector
 * assignments) and an artifact's signatures (MAX_SIGNATURES bundles of up to
 * MAX_SIGNATURE_SIZE each, in base64: signing/verify.ts).
 */
export const MAX_ANSWER_SIZE = 32 * 1024 * 1024;
/** Of an error answer, only this much is read: its message is one line. */
const MAX_ERROR_SIZE = 64 * 1024;

/** How long a JSON call may take, answer read (call()); an assigner that accepts and never answers must not hold a command for undici's 5 minutes per read. */
const CALL_TIMEOUT_MS = 60_000;

export class AssignerClient {
  private readonly timeoutMs: number;

  /** `token`: the operator token, or an agent token from register(); registration itself needs none. `timeoutMs`: each JSON call's limit (default 60 s). */
  constructor(
    readonly baseUrl: string,
    private readonly token?: string,
    options: { timeoutMs?: number } = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? CALL_TIMEOUT_MS;
  }

  private async send(method: Method, path: string, body?: unknown, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Dispatcher.ResponseData> {
    signal?.throwIfAborted();
    let res;
    try {
      res = await request(new URL(path, this.baseUrl), {
        method,
        headers: {
          ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
          ...(body !== undefined ? { "content-type": "application/json" } : {}),
          ...headers,
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        ...(signal ? { signal } : {}),
      });
    } catch (err) {
      throw new AssignerError("UNAVAILABLE", `cannot reach the assigner at ${this.baseUrl}: ${(err as Error).message}`, { cause: err });
    }
    if (res.statusCode >= 400) throw answerError(res.statusCode, (await this.read(res, MAX_ERROR_SIZE, "an error answer", true)).toString("utf8"));
    // The API answers 2xx, or 304 to a poll: a redirect (a proxy's login page, say) is not an answer.
    if (res.statusCode >= 300 && res.statusCode !== 304) {
      await res.body.dump();
      throw new AssignerError("BAD_GATEWAY", `${method} ${path} at ${this.baseUrl} was answered ${res.statusCode}, not by the assigner's API`);
    }
    return res;
  }

  /**
   * The body, up to `limit` bytes: past it, the connection is cut and the
   * call fails (or, with `truncate`, what was read is kept: an error answer's
   * first line is all anyone needs).
   */
  private async read(res: Dispatcher.ResponseData, limit: number, what: string, truncate = false): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      if (total + chunk.byteLength > limit) {
        res.body.destroy();
        if (truncate) return Buffer.concat([...chunks, chunk.subarray(0, limit - total)]);
        throw new AssignerError("BAD_GATEWAY", `${what} from ${this.baseUrl} is larger than ${limit} bytes`);
      }
      total += chunk.byteLength;
      chunks.push(chunk);
    }
    return Buffer.concat(chunks);
  }

  /** A JSON answer, read up to its cap. */
  private async json<T>(res: Dispatcher.ResponseData, what: string): Promise<T> {
    const text = (await this.read(res, MAX_ANSWER_SIZE, what)).toString("utf8");
    try {
      return JSON.parse(text) as T;
    } catch (err) {
      throw new AssignerError("BAD_GATEWAY", `${what} from ${this.baseUrl} is not JSON`, { cause: err });
    }
  }

  /** Any JSON call, within the client's timeout; the typed methods below are this with a path and a type. */
  async call<T>(method: Method, path: string, body?: unknown, headers: Record<string, string> = {}, options: { signal?: AbortSignal } = {}): Promise<T> {
    return (await this.exchange<T>(method, path, body, headers, options)).json;
  }

  /** call(), with the answer's headers. */
  private async exchange<T>(method: Method, path: string, body?: unknown, headers: Record<string, string> = {}, options: { signal?: AbortSignal } = {}): Promise<{ json: T; headers: Dispatcher.ResponseData["headers"] }> {
    const deadline = AbortSignal.timeout(this.timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, deadline]) : deadline;
    try {
      const res = await this.send(method, path, body, headers, signal);
      return { json: await this.json<T>(res, `the answer to ${method} ${path}`), headers: res.headers };
    } catch (err) {
      if (deadline.aborted && !options.signal?.aborted) throw new AssignerError("UNAVAILABLE", `the assigner at ${this.baseUrl} did not answer ${method} ${path} within ${this.timeoutMs} ms`, { cause: err });
      throw err;
    }
  }

  registerInit(body: z.input<typeof RegisterInitBody>): Promise<z.infer<typeof RegisterInitResponse>> {
    return this.call("POST", "/agents/register/init", body);
  }

  registerComplete(body: z.input<typeof RegisterCompleteBody>): Promise<z.infer<typeof RegisterCompleteResponse>> {
    return this.call("POST", "/agents/register/complete", body);
  }

  /** The whole challenge-response: the assigner's nonce signed with the agent's Ed25519 key buys an agent token. */
  async register(hostId: string, privateKey: KeyObject, options: RegisterOptions = {}): Promise<z.infer<typeof RegisterCompleteResponse>> {
    if (privateKey.type !== "private" || privateKey.asymmetricKeyType !== "ed25519") throw new AssignerError("BAD_REQUEST", "an agent key must be an Ed25519 private key");
    const raw = createPublicKey(privateKey).export({ format: "jwk" }).x!;
    const init = await this.registerInit({
      host_id: hostId,
      public_key: Buffer.from(raw, "base64url").toString("base64"),
      ...(options.hostname ? { hostname: options.hostname } : {}),
      ...(options.kernel ? { kernel: options.kernel } : {}),
      ...(options.labels ? { labels: options.labels } : {}),
      ...(options.capabilities ? { capabilities: options.capabilities } : {}),
      ...(options.enrollSecret !== undefined ? { enroll_secret: options.enrollSecret } : {}),
    });
    const nonce = Buffer.from(typeof init.nonce === "string" ? init.nonce : "", "base64");
    // Anything else could be a message of the agent's that the answer chose for it to sign (NONCE_BYTES).
    if (nonce.length !== NONCE_BYTES) {
      throw new AssignerError("BAD_GATEWAY", `the registration nonce from ${this.baseUrl} is ${nonce.length} bytes, not ${NONCE_BYTES}: not signed`);
    }
    const signature = sign(null, nonce, privateKey).toString("base64");
    return this.registerComplete({ registration_id: init.registration_id, signature });
  }

  /** The agent's poll: with the last ETag, an unchanged set is a 304 without a body. */
  async forHost(hostId: string, options: { ifNoneMatch?: string; signal?: AbortSignal } = {}): Promise<ForHostResult> {
    const path = `/artifacts/for-host/${encodeURIComponent(hostId)}`;
    const res = await this.send("GET", path, undefined, options.ifNoneMatch ? { "if-none-match": options.ifNoneMatch } : {}, options.signal);
    const etag = String(res.headers.etag ?? "");
    if (res.statusCode === 304) {
      await res.body.dump();
      return { notModified: true, etag };
    }
    return { notModified: false, etag, body: await this.json<z.infer<typeof ArtifactList>>(res, `the answer to GET ${path}`) };
  }

  artifact(id: string): Promise<z.infer<typeof ArtifactJson>> {
    return this.call("GET", `/artifacts/${encodeURIComponent(id)}`);
  }

  /**
   * The bundle's bytes as a stream. The assigner verifies them on the way and
   * cuts the connection on a mismatch, so the stream then fails; callers still
   * check the checksum themselves (verify-on-read).
   */
  async binary(id: string, options: { signal?: AbortSignal } = {}): Promise<Readable> {
    return (await this.send("GET", `/artifacts/${encodeURIComponent(id)}/binary`, undefined, {}, options.signal)).body;
  }

  /** The artifact's manifest as the assigner stores it, up to `limit` bytes; the caller recomputes its digest (verify-on-read). */
  async manifest(id: string, options: { limit?: number; signal?: AbortSignal } = {}): Promise<{ mediaType: string; bytes: Buffer }> {
    const res = await this.send("GET", `/artifacts/${encodeURIComponent(id)}/manifest`, undefined, {}, options.signal);
    const bytes = await this.read(res, options.limit ?? 4 * 1024 * 1024, `the manifest of ${id}`);
    return { mediaType: String(res.headers["content-type"] ?? "").split(";")[0]!.trim(), bytes };
  }

  /** The artifact's sigstore bundle referrers as stored (base64 exact bytes); the caller recomputes every digest. */
  async signatures(id: string, options: { signal?: AbortSignal } = {}): Promise<z.infer<typeof SignaturesJson>> {
    return this.call("GET", `/artifacts/${encodeURIComponent(id)}/signatures`, undefined, {}, options);
  }

  artifacts(): Promise<z.infer<typeof ArtifactList>> {
    return this.call("GET", "/artifacts");
  }

  /** Every host's latest report about `id`; `summary`: without receipts' counters and interfaces (a fraction of the size). */
  status(id: string, options: { summary?: boolean } = {}): Promise<z.infer<typeof ArtifactStatusJson>> {
    return this.call("GET", `/artifacts/${encodeURIComponent(id)}/status${options.summary ? "?view=summary" : ""}`);
  }

  /**
   * Every registered agent, and the assigner's clock when it answered (its
   * Date header, ms since the epoch; undefined without one), which its
   * `last_seen` times are on.
   */
  async hosts(): Promise<z.infer<typeof AgentList> & { answeredAt?: number }> {
    const { json, headers } = await this.exchange<z.infer<typeof AgentList>>("GET", "/agents");
    const answeredAt = Date.parse(String(headers.date ?? ""));
    return Number.isNaN(answeredAt) ? json : { ...json, answeredAt };
  }

  /** One agent with its host's assignments and latest status per artifact. */
  agent(uid: string): Promise<z.infer<typeof AgentDetailJson>> {
    return this.call("GET", `/agents/${encodeURIComponent(uid)}`);
  }

  /** Registers an artifact already in a registry, by digest: `host/repo@sha256:…`. */
  registerArtifact(reference: string): Promise<z.infer<typeof ArtifactJson>> {
    return this.call("POST", "/artifacts", { reference });
  }

  /** `force`: assign even when the host's reported kernel cannot run the artifact's program (otherwise CONFLICT). */
  assign(artifactId: string, hostId: string, options: { force?: boolean } = {}): Promise<z.infer<typeof AssignmentJson>> {
    return this.call("POST", `/assign/${encodeURIComponent(artifactId)}/${encodeURIComponent(hostId)}${options.force ? "?force=true" : ""}`);
  }

  /** Signed telemetry over HTTP, for an agent without NATS: its own uid and token, at most 32 messages. */
  telemetry(agentUid: string, messages: SignedTelemetry[], options: { signal?: AbortSignal } = {}): Promise<z.infer<typeof TelemetryResult>> {
    return this.call("POST", `/agents/${encodeURIComponent(agentUid)}/telemetry`, { messages }, {}, options);
  }

  unassign(artifactId: string, hostId: string): Promise<z.infer<typeof AssignmentJson>> {
    return this.call("POST", `/unassign/${encodeURIComponent(artifactId)}/${encodeURIComponent(hostId)}`);
  }

  /** The whole desired state; its `version` goes back as `ifMatch` on changes. */
  async desiredState(): Promise<z.infer<typeof DesiredStateJson>> {
    const state = await this.call<z.infer<typeof DesiredStateJson> | null>("GET", "/assignments");
    if (!Array.isArray(state?.assignments)) throw new AssignerError("BAD_GATEWAY", `the answer to GET /assignments from ${this.baseUrl} has no assignments list`);
    return versioned(state!, "GET /assignments", this.baseUrl);
  }

  /**
   * Adds and removes in one atomic step; with `ifMatch`, a PRECONDITION_FAILED error when the state moved since that version.
   * `force`: add even where a host's reported kernel cannot run an artifact's program (otherwise CONFLICT, and nothing changes).
   */
  async changeAssignments(changes: z.input<typeof AssignmentChangesBody>, options: { ifMatch?: number; force?: boolean } = {}): Promise<z.infer<typeof AssignmentChangesResult>> {
    const path = options.force ? "/assignments?force=true" : "/assignments";
    const result = await this.call<z.infer<typeof AssignmentChangesResult>>("POST", path, changes, options.ifMatch !== undefined ? { "if-match": `"${options.ifMatch}"` } : {});
    return versioned(result, "POST /assignments", this.baseUrl);
  }

  /** What a host is served, and why (its own assignments, selector matches). */
  hostAssignments(hostId: string): Promise<z.infer<typeof HostAssignmentsJson>> {
    return this.call("GET", `/hosts/${encodeURIComponent(hostId)}/assignments`);
  }

  putRollout(rollout: z.input<typeof RolloutJson>): Promise<z.infer<typeof RolloutJson>> {
    return this.call("PUT", `/rollouts/${encodeURIComponent(rollout.id)}`, rollout);
  }

  rollout(id: string): Promise<z.infer<typeof RolloutJson>> {
    return this.call("GET", `/rollouts/${encodeURIComponent(id)}`);
  }

  /** Newest first; `active`: only those running or rolling back (records of up to 8 MiB each: the last 100 may pass the answer's cap). */
  rollouts(options: { active?: boolean } = {}): Promise<z.infer<typeof RolloutList>> {
    return this.call("GET", `/rollouts${options.active ? "?active=true" : ""}`);
  }
}

/** The most of an error answer's message and detail an error carries: one log line's worth. */
const MAX_ERROR_TEXT = 1024;

/**
 * An answer whose `version` the next write sends back as If-Match: without
 * a version there, that write would go out unconditioned.
 */
function versioned<T extends { version: number }>(answer: T, what: string, baseUrl: string): T {
  if (!Number.isSafeInteger(answer?.version)) throw new AssignerError("BAD_GATEWAY", `the answer to ${what} from ${baseUrl} has no desired-state version`);
  return answer;
}

/** An error answer {error, code, detail?} as an AssignerError with that code and detail (each cut to MAX_ERROR_TEXT). */
function answerError(status: number, text: string): AssignerError {
  let message = text.split("\n")[0]!;
  let code: AssignerErrorCode = statusCode(status);
  let detail: string | undefined;
  try {
    const parsed = JSON.parse(text) as { error?: unknown; code?: unknown; detail?: unknown };
    if (typeof parsed.error === "string") message = parsed.error;
    if (isAssignerErrorCode(parsed.code)) code = parsed.code;
    if (typeof parsed.detail === "string") detail = parsed.detail;
  } catch {
    // Not our JSON (a proxy's page, say): keep the text.
  }
  return new AssignerError(code, `assigner answered ${status}: ${message.slice(0, MAX_ERROR_TEXT)}`, { answered: status, ...(detail ? { detail: detail.slice(0, MAX_ERROR_TEXT) } : {}) });
}

/** The code of a status without our JSON (a proxy's 502, say). */
function statusCode(status: number): AssignerErrorCode {
  const known = (Object.keys(ERROR_STATUS) as AssignerErrorCode[]).find((code) => ERROR_STATUS[code] === status);
  return known ?? (status >= 500 ? "INTERNAL" : "BAD_REQUEST");
}
