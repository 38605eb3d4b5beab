// The assigner's parts, wired once: store, auth, artifact source, NATS
// events and metrics, plus the agents' hot path (for-host) with its cache.
import { toArtifactJson, type ArtifactSource } from "./artifacts.js";
import type { Auth, Principal } from "./auth.js";
import type { AssignerEvents } from "./events.js";
import type { AssignerMetrics } from "./metrics.js";
import type { AssignerStore } from "./store/store.js";
import type { TelemetryMessage } from "./schemas.js";

export interface ForHostAnswer {
  status: 200 | 304;
  etag: string;
  body: string;
}

/** Serialized for-host answers kept per host, valid while the host's version stands. */
const CACHE_MAX = 100_000;

export class AssignerServices {
  private readonly forHostCache = new Map<string, { version: number; body: string }>();

  constructor(
    readonly store: AssignerStore,
    readonly auth: Auth,
    readonly artifacts: ArtifactSource,
    readonly metrics: AssignerMetrics,
    readonly events: AssignerEvents | undefined,
  ) {}

  /**
   * The seed's for-host answer. One Redis read (the version) decides between
   * a 304, the cached body, or a fresh read of the set and its artifacts.
   * Artifacts are immutable (keyed by digest), so a body is valid for as
   * long as the host's version is unchanged.
   */
  async forHost(principal: Principal, hostId: string, ifNoneMatch: string | undefined): Promise<ForHostAnswer> {
    this.auth.requireHost(principal, hostId);
    if (principal.kind === "agent") void this.seen(hostId);
    const version = await this.store.hostVersion(hostId);
    const etag = `"v${version}"`;
    if (ifNoneMatch === etag) return { status: 304, etag, body: "" };
    const cached = this.forHostCache.get(hostId);
    if (cached && cached.version === version) return { status: 200, etag, body: cached.body };
    const assignments = await this.store.hostAssignments(hostId);
    const records = (await this.store.getArtifacts(assignments.artifactIds)).filter((r) => r !== undefined);
    const artifacts = records.map(toArtifactJson);
    const body = JSON.stringify({ artifacts, total: artifacts.length });
    if (this.forHostCache.size >= CACHE_MAX) this.forHostCache.delete(this.forHostCache.keys().next().value!);
    this.forHostCache.set(hostId, { version: assignments.version, body });
    return { status: 200, etag: `"v${assignments.version}"`, body };
  }

  /** Last-seen is advisory: written at most once a minute per host, failures ignored. */
  private readonly lastSeen = new Map<string, number>();
  private async seen(hostId: string): Promise<void> {
    const now = Date.now();
    if ((this.lastSeen.get(hostId) ?? 0) > now - 60_000) return;
    this.lastSeen.set(hostId, now);
    await this.store.touchAgent(hostId, new Date(now).toISOString()).catch(() => undefined);
  }

  async recordTelemetry(message: TelemetryMessage): Promise<void> {
    const time = message.time ?? new Date().toISOString();
    await this.store.putStatus({
      hostId: message.host_id,
      artifactId: message.artifact_id,
      event: message.event,
      ...(message.reason ? { reason: message.reason } : {}),
      ...(message.counters ? { counters: message.counters } : {}),
      time,
    });
    await this.store.touchAgent(message.host_id, time);
    this.metrics.telemetry.inc({ result: "recorded" });
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
