// Who is calling: the operator (admin token) or one agent (a token issued at
// registration, stored only as its sha256). Agent registration is a
// challenge-response on the agent's Ed25519 key (DESIGN.md "Assigner HTTP contract").
import { createHash, createPublicKey, randomBytes, randomUUID, timingSafeEqual, verify } from "node:crypto";
import { AssignerError } from "./api/index.js";
import type { AgentRecord, AssignerStore, TokenRecord } from "./store/store.js";

export type Principal = { kind: "admin" } | { kind: "agent"; hostId: string; agentUid: string };

/** How long a registration nonce may be answered. */
const REGISTRATION_TTL_SECONDS = 300;
/** Agent tokens are looked up once per this many ms per process, not on every poll. */
const TOKEN_CACHE_MS = 30_000;
const TOKEN_CACHE_MAX = 200_000;

function digestOf(secret: string): Buffer {
  return createHash("sha256").update(secret).digest();
}

/** Compares fixed-length hashes, so the time taken says nothing about the secret. */
function sameSecret(given: string, expected: Buffer): boolean {
  return timingSafeEqual(digestOf(given), expected);
}

export interface AuthOptions {
  adminToken: string;
  enrollSecret?: string;
}

export class Auth {
  private readonly tokenCache = new Map<string, { record: TokenRecord; expires: number }>();
  private readonly adminDigest: Buffer;
  private readonly enrollDigest: Buffer | undefined;

  constructor(
    private readonly store: AssignerStore,
    options: AuthOptions,
  ) {
    this.adminDigest = digestOf(options.adminToken);
    this.enrollDigest = options.enrollSecret === undefined ? undefined : digestOf(options.enrollSecret);
  }

  /** The caller of a request, from `Authorization: Bearer <token>`; 401 without a valid one. */
  async authenticate(header: string | undefined): Promise<Principal> {
    const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    if (!match) throw new AssignerError("UNAUTHORIZED", "missing Authorization: Bearer <token>");
    const token = match[1]!;
    const digest = digestOf(token);
    if (timingSafeEqual(digest, this.adminDigest)) return { kind: "admin" };
    const hash = digest.toString("hex");
    const cached = this.tokenCache.get(hash);
    let record = cached && cached.expires > Date.now() ? cached.record : undefined;
    if (!record) {
      record = await this.store.getToken(hash);
      if (!record) throw new AssignerError("UNAUTHORIZED", "invalid token");
      if (this.tokenCache.size >= TOKEN_CACHE_MAX) this.tokenCache.clear();
      this.tokenCache.set(hash, { record, expires: Date.now() + TOKEN_CACHE_MS });
    }
    return { kind: "agent", hostId: record.hostId, agentUid: record.agentUid };
  }

  /** Drops this process's cached tokens of a removed agent (other assigners' caches expire within 30 s). */
  forgetAgent(uid: string): void {
    for (const [hash, entry] of this.tokenCache) if (entry.record.agentUid === uid) this.tokenCache.delete(hash);
  }

  requireAdmin(principal: Principal): void {
    if (principal.kind !== "admin") throw new AssignerError("FORBIDDEN", "this call needs the operator token");
  }

  /** Admins may read any host; an agent only its own. */
  requireHost(principal: Principal, hostId: string): void {
    if (principal.kind === "agent" && principal.hostId !== hostId) {
      throw new AssignerError("FORBIDDEN", `an agent token for host "${principal.hostId}" cannot read host "${hostId}"`);
    }
  }

  async startRegistration(input: { hostId: string; publicKey: string; hostname?: string; kernel?: string; labels?: Record<string, string>; enrollSecret?: string }) {
    if (this.enrollDigest && !sameSecret(input.enrollSecret ?? "", this.enrollDigest)) {
      throw new AssignerError(input.enrollSecret ? "FORBIDDEN" : "UNAUTHORIZED", input.enrollSecret ? "wrong enroll_secret" : "this assigner requires enroll_secret");
    }
    if (Buffer.from(input.publicKey, "base64").byteLength !== 32) {
      throw new AssignerError("BAD_REQUEST", "public_key must be base64 of a raw 32-byte Ed25519 public key");
    }
    // A host is bound to the key it first registered with: another key cannot
    // take it over (the same key may register again, say after losing its token).
    const existing = await this.store.getAgentByHost(input.hostId);
    if (existing && existing.publicKey !== input.publicKey) {
      throw new AssignerError("CONFLICT", `host "${input.hostId}" is registered with another key; an operator must remove agent ${existing.uid} first (DELETE /agents/${existing.uid})`);
    }
    const registration = {
      id: randomBytes(16).toString("hex"),
      hostId: input.hostId,
      publicKey: input.publicKey,
      nonce: randomBytes(32).toString("base64"),
      ...(input.hostname ? { hostname: input.hostname } : {}),
      ...(input.kernel ? { kernel: input.kernel } : {}),
      ...(input.labels ? { labels: input.labels } : {}),
    };
    await this.store.putRegistration(registration, REGISTRATION_TTL_SECONDS);
    return { registration_id: registration.id, nonce: registration.nonce };
  }

  async completeRegistration(registrationId: string, signature: string) {
    const registration = await this.store.takeRegistration(registrationId);
    if (!registration) throw new AssignerError("NOT_FOUND", "registration_id is unknown, used or expired: start again with /agents/register/init");
    const key = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(registration.publicKey, "base64").toString("base64url") }, format: "jwk" });
    if (!verify(null, Buffer.from(registration.nonce, "base64"), key, Buffer.from(signature, "base64"))) {
      throw new AssignerError("UNAUTHORIZED", "signature does not verify against the registered public_key");
    }
    const token = randomBytes(32).toString("base64url");
    const agent: AgentRecord = {
      uid: randomUUID(),
      hostId: registration.hostId,
      publicKey: registration.publicKey,
      ...(registration.hostname ? { hostname: registration.hostname } : {}),
      ...(registration.kernel ? { kernel: registration.kernel } : {}),
      ...(registration.labels ? { labels: registration.labels } : {}),
      registeredAt: new Date().toISOString(),
    };
    await this.store.putToken(digestOf(token).toString("hex"), { agentUid: agent.uid, hostId: agent.hostId });
    await this.store.putAgent(agent);
    return { agent_uid: agent.uid, host_id: agent.hostId, token };
  }
}
