// The assigner's parts, wired once: store, auth, artifact source, NATS
// events and metrics, plus the agents' hot path (for-host) with its cache.
import { toArtifactJson, type ArtifactSource } from "./artifacts.js";
import type { Auth, Principal } from "./auth.js";
import type { AssignerEvents } from "./events.js";
import type { AssignerMetrics } from "./metrics.js";
import type { ArtifactRecord, AssignerStore } from "./store/store.js";
import { openTelemetry, type SignedTelemetry } from "./api/index.js";

export interface ForHostAnswer {
  status: 200 | 304;
  etag: string;
  body: string;
}

export const DEFAULT_TELEMETRY_MAX_SKEW_MS = 5 * 60_000;

/** Entries kept per cache (for-host bodies by host, artifact JSON by id). */
const CACHE_MAX = 100_000;

function remember<V>(cache: Map<string, V>, key: string, value: V): void {
  if (cache.size >= CACHE_MAX && !cache.has(key)) cache.delete(cache.keys().next().value!);
  cache.set(key, value);
}

export class AssignerServices {
  private readonly forHostCache = new Map<string, { version: number; body: string }>();
  private readonly artifactCache = new Map<string, string>();

  constructor(
    readonly store: AssignerStore,
    readonly auth: Auth,
    readonly artifacts: ArtifactSource,
    readonly metrics: AssignerMetrics,
    readonly events: AssignerEvents | undefined,
    /** How far a telemetry message's time may be from the assigner's clock; default 5 minutes. */
    private readonly telemetryMaxSkewMs = DEFAULT_TELEMETRY_MAX_SKEW_MS,
  ) {}

  /**
   * The seed's for-host answer. With a cached body or an If-None-Match, one
   * Redis read (the version) decides between a 304, the cached body, or a
   * fresh read; without either, the set is read at once. Artifacts are
   * immutable (keyed by digest), so a host's body is valid for as long as its
   * version stands, and each artifact's JSON is serialized once per process.
   */
  async forHost(principal: Principal, hostId: string, ifNoneMatch: string | undefined): Promise<ForHostAnswer> {
    this.auth.requireHost(principal, hostId);
    if (principal.kind === "agent") void this.seen(hostId);
    const cached = this.forHostCache.get(hostId);
    if (cached || ifNoneMatch) {
      const version = await this.store.hostVersion(hostId);
      const etag = `"v${version}"`;
      if (ifNoneMatch === etag) return { status: 304, etag, body: "" };
      if (cached && cached.version === version) return { status: 200, etag, body: cached.body };
    }
    const assignments = await this.store.hostAssignments(hostId);
    const body = `{"artifacts":[${(await this.artifactJson(assignments.artifactIds)).join(",")}],"total":${assignments.artifactIds.length}}`;
    remember(this.forHostCache, hostId, { version: assignments.version, body });
    return { status: 200, etag: `"v${assignments.version}"`, body };
  }

  /**
   * The serialized JSON of each artifact, from the process cache or one MGET
   * for the rest. Only signed records are cached: a record changes only when
   * a signature is filled in (updateSignature), and never after.
   */
  private async artifactJson(ids: string[]): Promise<string[]> {
    const missing = ids.filter((id) => !this.artifactCache.has(id));
    const fetched = new Map<string, string>();
    for (const record of await this.store.getArtifacts(missing)) {
      if (!record) continue;
      const json = JSON.stringify(toArtifactJson(record));
      fetched.set(record.id, json);
      if (record.signature) remember(this.artifactCache, record.id, json);
    }
    // An id whose record is gone (never registered) is left out.
    return ids.flatMap((id) => this.artifactCache.get(id) ?? fetched.get(id) ?? []);
  }

  /** Stores a signature found after registration and moves the versions of the hosts that are served it. */
  async updateSignature(record: ArtifactRecord): Promise<void> {
    await this.store.replaceArtifact(record);
    for (const hostId of await this.store.artifactHosts(record.id)) {
      const version = await this.store.bumpHostVersion(hostId);
      this.events?.notifyAssignments({ host_id: hostId, version });
    }
  }

  /** Last-seen is advisory: written at most once a minute per host, failures ignored. */
  private readonly lastSeen = new Map<string, number>();
  private async seen(hostId: string): Promise<void> {
    const now = Date.now();
    if ((this.lastSeen.get(hostId) ?? 0) > now - 60_000) return;
    this.lastSeen.set(hostId, now);
    await this.store.touchAgent(hostId, new Date(now).toISOString()).catch(() => undefined);
  }

  /**
   * Records a host's signed report about an artifact (README "The agent"),
   * in this order: the host must have a registered agent (else dropped), the
   * signature must verify with that agent's key over the bytes received, the
   * payload must speak for `hostId` (the NATS subject's host, or the agent
   * token's) and be recent (else invalid), the artifact must be registered
   * (else dropped), and its `seq` must be above the last recorded for that
   * host and artifact (else invalid: a replay). NATS and the HTTP route are
   * open to whoever holds them: nothing unverified is recorded.
   */
  async recordTelemetry(envelope: SignedTelemetry, hostId: string): Promise<boolean> {
    const agent = await this.store.getAgentByHost(hostId);
    if (!agent) return this.refuse("dropped");
    const opened = openTelemetry(envelope, { hostId, publicKey: agent.publicKey, maxSkewMs: this.telemetryMaxSkewMs });
    if (!opened.ok) return this.refuse("invalid");
    const { message } = opened;
    if (!(await this.store.getArtifact(message.artifact_id))) return this.refuse("dropped");
    const { receipt } = message;
    const recorded = await this.store.putStatus({
      hostId,
      artifactId: message.artifact_id,
      event: message.event,
      ...(message.code ? { code: message.code } : {}),
      ...(message.reason ? { reason: message.reason } : {}),
      ...(message.counters ? { counters: message.counters } : {}),
      ...(receipt ? { receipt: { programId: receipt.program_id, interfaces: receipt.interfaces, since: receipt.since } } : {}),
      time: message.time,
      seq: message.seq,
    });
    if (!recorded) return this.refuse("invalid");
    await this.store.touchAgent(hostId, new Date().toISOString());
    this.metrics.telemetry.inc({ result: "recorded" });
    return true;
  }

  private refuse(result: "invalid" | "dropped"): false {
    this.metrics.telemetry.inc({ result });
    return false;
  }

  async health() {
    const [store, registry] = await Promise.all([
      this.store.ping().then(() => "ok" as const, () => "unavailable" as const),
      this.artifacts.reachable().then((ok) => (ok ? ("ok" as const) : ("unavailable" as const))),
    ]);
    const nats = this.events?.state() ?? "disabled";
    return { status: store === "ok" && registry === "ok" && nats !== "disconnected" ? ("ok" as const) : ("degraded" as const), store, registry, nats };
  }
}
