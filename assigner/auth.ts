// Who is calling: the operator (admin token) or one agent (a token issued at
// registration, stored only as its sha256). Agent registration is a
// challenge-response on the agent's Ed25519 key (README "The assigner", and GET /openapi.json).
import { createHash, createPublicKey, randomBytes, randomUUID, timingSafeEqual, verify } from "node:crypto";
import type { KernelFeatures } from "../ebpf/index.js";
import { AssignerError, NONCE_BYTES } from "./api/index.js";
import type { AgentRecord, AssignerStore, RegistrationLimits, TokenRecord } from "./store/store.js";

export type Principal = { kind: "admin" } | { kind: "agent"; hostId: string; agentUid: string };

/** How long a registration nonce may be answered. */
const REGISTRATION_TTL_SECONDS = 300;
/**
 * Registrations begun and not completed, at most: a few per host (an agent
 * retrying), and a total that bounds what unauthenticated callers can make
 * the assigner hold (each is well under 1 KiB: the schema bounds its fields).
 */
const REGISTRATION_LIMITS: RegistrationLimits = { perHost: 4, total: 10_000 };
const TOKEN_CACHE_MAX = 200_000;

/**
 * The encodings of the Ed25519 points of small order (their y coordinate;
 * the sign bit is ignored), as libsodium's blocklist has them: with such a
 * key, a signature with R = identity and S = 0 verifies for every message,
 * so proof of possession would prove nothing. https://eprint.iacr.org/2020/1244
 */
const SMALL_ORDER_Y = [
  "0000000000000000000000000000000000000000000000000000000000000000", // 0 (order 4)
  "0100000000000000000000000000000000000000000000000000000000000000", // 1, the identity
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // order 8
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p - 1 (order 2)
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p, non-canonical 0
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p + 1, non-canonical 1
];

function hasSmallOrder(key: Buffer): boolean {
  const y = Buffer.from(key);
  y[31]! &= 0x7f;
  return SMALL_ORDER_Y.includes(y.toString("hex"));
}

function digestOf(secret: string): Buffer {
  return createHash("sha256").update(secret).digest();
}

/** Compares fixed-length hashes, so the time taken says nothing about the secret. */
function sameSecret(given: string, expected: Buffer): boolean {
  return timingSafeEqual(digestOf(given), expected);
}

/** Registration.enrollment for the enroll secret whose digest is `digest`; "" without a secret. */
function enrollmentTag(digest: Buffer | undefined): string {
  return digest ? createHash("sha256").update("aegis enrollment ").update(digest).digest("hex").slice(0, 32) : "";
}

export interface AuthOptions {
  adminToken: string;
  enrollSecret?: string;
  /**
   * How long a process trusts an agent token it looked up, in ms; default
   * 1000. Revocation is immediate in the process that revokes, and other
   * assigners on the same store see it within this time.
   */
  tokenCacheMs?: number;
}

export class Auth {
  private readonly tokenCache = new Map<string, { record: TokenRecord; expires: number }>();
  private readonly adminDigest: Buffer;
  private readonly enrollDigest: Buffer | undefined;
  private readonly tokenCacheMs: number;

  constructor(
    private readonly store: AssignerStore,
    options: AuthOptions,
  ) {
    this.adminDigest = digestOf(options.adminToken);
    this.enrollDigest = options.enrollSecret === undefined ? undefined : digestOf(options.enrollSecret);
    this.tokenCacheMs = options.tokenCacheMs ?? 1000;
  }

  /**
   * Whether an Authorization header carries exactly `token` as its Bearer
   * token (the --metrics-token), compared by hash like the operator's.
   */
  tokenCheck(token: string): (header: string | undefined) => boolean {
    const expected = digestOf(token);
    return (header) => {
      const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
      return match !== null && sameSecret(match[1]!, expected);
    };
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
      this.tokenCache.set(hash, { record, expires: Date.now() + this.tokenCacheMs });
    }
    return { kind: "agent", hostId: record.hostId, agentUid: record.agentUid };
  }

  /** Drops this process's cached tokens of a removed agent (other assigners' caches expire within tokenCacheMs). */
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

  async startRegistration(input: { hostId: string; publicKey: string; hostname?: string; kernel?: string; labels?: Record<string, string>; capabilities?: KernelFeatures; enrollSecret?: string }) {
    if (this.enrollDigest && !sameSecret(input.enrollSecret ?? "", this.enrollDigest)) {
      throw new AssignerError(input.enrollSecret ? "FORBIDDEN" : "UNAUTHORIZED", input.enrollSecret ? "wrong enroll_secret" : "this assigner requires enroll_secret");
    }
    const publicKey = Buffer.from(input.publicKey, "base64");
    if (publicKey.byteLength !== 32) {
      throw new AssignerError("BAD_REQUEST", "public_key must be base64 of a raw 32-byte Ed25519 public key");
    }
    if (hasSmallOrder(publicKey)) throw new AssignerError("BAD_REQUEST", "public_key is a small-order Ed25519 point: it proves nothing");
    // A host is bound to the key it first registered with: another key cannot
    // take it over (the same key may register again, say after losing its token).
    const existing = await this.store.getAgentByHost(input.hostId);
    if (existing && existing.publicKey !== input.publicKey) throw this.bound(input.hostId, existing);
    const registration = {
      id: randomBytes(16).toString("hex"),
      hostId: input.hostId,
      publicKey: input.publicKey,
      nonce: randomBytes(NONCE_BYTES).toString("base64"),
      ...(input.hostname ? { hostname: input.hostname } : {}),
      ...(input.kernel ? { kernel: input.kernel } : {}),
      ...(input.labels ? { labels: input.labels } : {}),
      ...(input.capabilities ? { capabilities: input.capabilities } : {}),
      ...(this.enrollDigest ? { enrollment: enrollmentTag(this.enrollDigest) } : {}),
    };
    if (!(await this.store.putRegistration(registration, REGISTRATION_TTL_SECONDS, REGISTRATION_LIMITS))) {
      throw new AssignerError("TOO_MANY_REQUESTS", `too many registrations under way (for host "${input.hostId}" or in all); complete one or retry in a few minutes`);
    }
    return { registration_id: registration.id, nonce: registration.nonce };
  }

  private bound(hostId: string, holder: AgentRecord): AssignerError {
    return new AssignerError("CONFLICT", `host "${hostId}" is registered with another key; an operator must remove agent ${holder.uid} first (DELETE /agents/${holder.uid})`);
  }

  async completeRegistration(registrationId: string, signature: string) {
    const registration = await this.store.takeRegistration(registrationId);
    if (!registration) throw new AssignerError("NOT_FOUND", "registration_id is unknown, used or expired: start again with /agents/register/init");
    // Registrations outlive a restart (Redis keeps them): one begun before the operator changed the enroll secret,
    // say after a host's key and secret were stolen, must not complete under the new one.
    if ((registration.enrollment ?? "") !== enrollmentTag(this.enrollDigest)) {
      throw new AssignerError("UNAUTHORIZED", "the assigner's enroll secret changed since this registration began: start again with /agents/register/init");
    }
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
      ...(registration.capabilities ? { capabilities: registration.capabilities } : {}),
      registeredAt: new Date().toISOString(),
    };
    // The binding is checked again here, atomically with the write: a
    // registration begun by another key before the host was bound must not
    // complete after it was.
    const result = await this.store.bindAgent(agent, digestOf(token).toString("hex"));
    if (!result.bound) throw this.bound(agent.hostId, result.holder);
    if (result.replaced) this.forgetAgent(result.replaced);
    return { agent_uid: agent.uid, host_id: agent.hostId, token };
  }
}
