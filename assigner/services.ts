// The assigner's parts, wired once: store, auth, artifact source, NATS
// events and metrics, plus the agents' hot path (for-host) with its cache.
import { describeError } from "../errors.js";
import { sleep } from "../util/index.js";
import { toArtifactJson, type ArtifactSource } from "./artifacts.js";
import type { Auth, Principal } from "./auth.js";
import type { AssignerEvents } from "./events.js";
import { SILENT, type Logger } from "./logging.js";
import type { AssignerMetrics } from "./metrics.js";
import { LogThrottle } from "./throttle.js";
import type { AgentRecord, ArtifactRecord, AssignerStore, AssignmentChange } from "./store/store.js";
import { AssignerError, matches, MAX_ASSIGNED, openTelemetry, parseSelector, unrunnable, unrunnableError, type Selector, type SignedTelemetry } from "./api/index.js";

export interface ForHostAnswer {
  status: 200 | 304;
  etag: string;
  body: string;
}

export const DEFAULT_TELEMETRY_MAX_SKEW_MS = 5 * 60_000;

/** What a host is served, and why: its own assignments and the selector assignments its labels match. */
export interface HostView {
  version: number;
  artifactIds: string[];
  via: { artifactId: string; via: "host" | "selector"; selector?: string }[];
}

/** Limits resolved once by the server (server.ts LIMIT_DEFAULTS). */
export interface ServiceLimits {
  /** How far a telemetry message's time may be from the assigner's clock; default 5 minutes. */
  telemetryMaxSkewMs?: number;
  /** Most artifacts a host may be assigned; default MAX_ASSIGNED. */
  maxAssignedPerHost?: number;
}

/** Why telemetry was not recorded, as the log says it (result is the metric's label). */
type Refusal = { result: "invalid" | "dropped"; reason: string; why: string };

/** A host id for the log and its rate limit: hosts without an agent share one key, so made-up names cannot flood it. */
const UNREGISTERED = "(unregistered)";
/** The rate limit's key for malformed NATS messages: whoever may publish may send them under any host's name. */
const MALFORMED = "(malformed)";
/** The rate limit's key for messages the store could not record: an outage is one line a minute, not one per message. */
const NOT_RECORDED = "(not recorded)";

/** Times a change is checked and written again when another change lands between (on one of its hosts); then 503. */
const CHANGE_ATTEMPTS = 50;

/** What hosts are served, as perHostCheck counts it (AssignerServices.servedNow). */
interface Served {
  versions: Map<string, number>;
  /** Each host's own assignments (a host of the whole desired state may be missing: it has none). */
  direct: Map<string, Set<string>>;
  /** The selector assignments as read with each host (one list for all, from the whole desired state). */
  selectors: (hostId: string) => readonly { artifactId: string; selector: string }[];
}

/** Entries kept per cache (for-host bodies by host, artifact JSON by id). */
const CACHE_MAX = 100_000;

/**
 * A host's ETag: its version, and the store's epoch where versions can come
 * again (AssignerStore.versionEpoch), so an agent's If-None-Match for content
 * that was never saved never matches later content of the same version.
 */
function hostEtag(version: number, epoch: string): string {
  return epoch ? `"v${version}.${epoch}"` : `"v${version}"`;
}

function remember<V>(cache: Map<string, V>, key: string, value: V): void {
  if (cache.size >= CACHE_MAX && !cache.has(key)) cache.delete(cache.keys().next().value!);
  cache.set(key, value);
}

export class AssignerServices {
  /** The last for-host answer per host, by its ETag. */
  private readonly forHostCache = new Map<string, { etag: string; body: string }>();
  private readonly artifactCache = new Map<string, string>();
  /** Parsed selectors by canonical text (they are few, and parsed once per process). */
  private readonly selectorCache = new Map<string, Selector>();

  constructor(
    readonly store: AssignerStore,
    readonly auth: Auth,
    readonly artifacts: ArtifactSource,
    readonly metrics: AssignerMetrics,
    readonly events: AssignerEvents | undefined,
    private readonly limits: ServiceLimits = {},
    /** Where refusals a host's operator must hear of are logged (telemetry, a binary that fails verification). */
    readonly logger: Logger = SILENT,
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
      const etag = hostEtag(await this.store.hostVersion(hostId), this.store.versionEpoch());
      if (ifNoneMatch === etag) return { status: 304, etag, body: "" };
      if (cached && cached.etag === etag) return { status: 200, etag, body: cached.body };
    }
    const epoch = this.store.versionEpoch();
    const assignments = await this.hostView(hostId);
    const etag = hostEtag(assignments.version, epoch);
    const body = `{"artifacts":[${(await this.artifactJson(assignments.artifactIds)).join(",")}],"total":${assignments.artifactIds.length}}`;
    // Not kept if the epoch moved while it was read: that content may belong to no version at all.
    if (this.store.versionEpoch() === epoch) remember(this.forHostCache, hostId, { etag, body });
    return { status: 200, etag, body };
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

  private selector(text: string): Selector {
    let parsed = this.selectorCache.get(text);
    if (!parsed) remember(this.selectorCache, text, (parsed = parseSelector(text)));
    return parsed;
  }

  /**
   * A host's own assignments and the selector assignments its agent's
   * labels match (a host without a registered agent has no labels). The
   * host's version is read with the sets, never older than them: every
   * change that can change this answer moves it (a host change, a selector
   * change its labels match, its registration).
   */
  async hostView(hostId: string): Promise<HostView> {
    const desired = await this.store.hostDesired(hostId);
    const via: HostView["via"] = desired.artifactIds.map((artifactId) => ({ artifactId, via: "host" }));
    const labels = desired.selectors.length > 0 ? (await this.store.getAgentByHost(hostId))?.labels : undefined;
    if (labels) for (const { artifactId, selector } of desired.selectors) if (matches(this.selector(selector), labels)) via.push({ artifactId, via: "selector", selector });
    return { version: desired.version, artifactIds: [...new Set(via.map((v) => v.artifactId))].sort(), via };
  }

  /** The registered hosts whose labels match any of these selectors. */
  private async hostsMatching(selectors: string[]): Promise<string[]> {
    return selectors.length === 0 ? [] : this.matchingAmong(await this.store.listAgents(), selectors);
  }

  /** Of `agents`, the hosts whose labels match any of these selectors. */
  private matchingAmong(agents: readonly AgentRecord[], selectors: string[]): string[] {
    if (selectors.length === 0) return [];
    const parsed = [...new Set(selectors)].map((text) => this.selector(text));
    return agents.filter((agent) => agent.labels && parsed.some((s) => matches(s, agent.labels))).map((agent) => agent.hostId);
  }

  /** How many artifacts a host is served: its own, and those of the selectors (by text) its labels match. */
  private countFor(own: ReadonlySet<string>, byText: ReadonlyMap<string, ReadonlySet<string>>, labels: Record<string, string> | undefined): number {
    const ids = new Set(own);
    if (labels) for (const [text, artifacts] of byText) if (matches(this.selector(text), labels)) for (const id of artifacts) ids.add(id);
    return ids.size;
  }

  private stale(version: number, ifVersion: number): AssignerError {
    return new AssignerError("PRECONDITION_FAILED", `the desired state is at version ${version}, not ${ifVersion}: read it again (GET /assignments) and plan on that`);
  }

  /**
   * What `hosts` are served now, for perHostCheck: each one's version, read
   * before (or with) the rest, its own assignments, and the selector
   * assignments. `everyHost`: the whole desired state in one read (a change
   * of selectors may reach thousands of hosts), else each host's own.
   */
  private async servedNow(hosts: readonly string[], everyHost: boolean): Promise<Served> {
    if (everyHost) {
      // Read together (ioredis pipelines them), and all before the desired state.
      const versions = new Map(await Promise.all(hosts.map(async (hostId) => [hostId, await this.store.hostVersion(hostId)] as const)));
      const desired = await this.store.desiredState();
      const direct = new Map<string, Set<string>>();
      for (const { hostId, artifactId } of desired.direct) direct.set(hostId, (direct.get(hostId) ?? new Set()).add(artifactId));
      return { versions, direct, selectors: () => desired.selectors };
    }
    // Each host's sets with its version, in one read each: a selector that changed between two of them is counted
    // for each as its version says.
    const views = new Map(await Promise.all(hosts.map(async (hostId) => [hostId, await this.store.hostDesired(hostId)] as const)));
    return {
      versions: new Map([...views].map(([hostId, view]) => [hostId, view.version])),
      direct: new Map([...views].map(([hostId, view]) => [hostId, new Set(view.artifactIds)])),
      selectors: (hostId) => views.get(hostId)?.selectors ?? [],
    };
  }

  /**
   * Refuses (409 CONFLICT) `changes` if, applied to what is `served`, they
   * would give one of its hosts more artifacts than maxAssignedPerHost: its
   * agent refuses a longer answer whole, and would stop taking any change.
   * Counted as its for-host answer would be: its own assignments and the
   * selector assignments its registered agent's labels match. A host that
   * registers later with labels selecting more is refused by its agent
   * (BAD_ASSIGNMENT, logged); removals are always taken.
   */
  private perHostCheck(changes: AssignmentChange[], served: Served, labelsOf: ReadonlyMap<string, Record<string, string> | undefined>): void {
    const limit = this.limits.maxAssignedPerHost ?? MAX_ASSIGNED;
    const over: string[] = [];
    for (const [hostId] of served.versions) {
      const labels = labelsOf.get(hostId);
      const direct = served.direct.get(hostId) ?? new Set<string>();
      // The host's selector assignments by selector text, each text matched once against its labels.
      const byText = new Map<string, Set<string>>();
      for (const { artifactId, selector } of served.selectors(hostId)) byText.set(selector, (byText.get(selector) ?? new Set()).add(artifactId));
      const before = this.countFor(direct, byText, labels);
      const ownAfter = new Set(direct);
      for (const { add, artifactId, target } of changes) {
        if ("hostId" in target) {
          if (target.hostId !== hostId) continue;
          if (add) ownAfter.add(artifactId);
          else ownAfter.delete(artifactId);
        } else if (add) byText.set(target.selector, (byText.get(target.selector) ?? new Set()).add(artifactId));
        else byText.get(target.selector)?.delete(artifactId);
      }
      const after = this.countFor(ownAfter, byText, labels);
      // Refused only for a rise past the share: a host already past it (a limit lowered, labels changed) may still shed.
      if (after > limit && after > before) over.push(`${hostId} (${after})`);
    }
    if (over.length > 0) {
      const more = over.length > 3 ? ` and ${over.length - 3} more` : "";
      throw new AssignerError("CONFLICT", `this change would assign ${over.slice(0, 3).join(", ")}${more} more than the ${limit} artifacts an agent takes: nothing was changed`);
    }
  }

  /** Moves hosts' versions (what they are served changed) and tells them on NATS. */
  private async bump(hostIds: Iterable<string>): Promise<void> {
    for (const hostId of new Set(hostIds)) {
      const version = await this.store.bumpHostVersion(hostId);
      this.events?.notifyAssignments({ host_id: hostId, version });
    }
  }

  /**
   * Changes the desired state in one atomic step, only if it is still at
   * `ifVersion` when given (else 412 PRECONDITION_FAILED). Every artifact
   * must be registered, and no host may be left with more artifacts than
   * its agent takes (perHostCheck, 409 CONFLICT). The hosts whose own sets
   * changed, and those a changed selector matches, have their versions
   * moved in that step, and are told on NATS.
   */
  async changeAssignments(
    changes: AssignmentChange[],
    options: { ifVersion?: number; force?: boolean } = {},
  ): Promise<{ version: number; added: number; removed: number; hosts: { hostId: string; version: number; changed: boolean }[] }> {
    const ifVersion = options.ifVersion;
    const ids = [...new Set(changes.map((c) => c.artifactId))];
    const records = await this.store.getArtifacts(ids);
    const missing = ids.filter((_, i) => !records[i]);
    if (missing.length > 0) throw new AssignerError("NOT_FOUND", `artifact ${missing.slice(0, 3).join(", ")}${missing.length > 3 ? ` and ${missing.length - 3} more` : ""} is not registered (POST /artifacts first)`);
    if (!options.force) await this.requireRunnable(changes, new Map(ids.map((id, i) => [id, records[i]!])));
    const addedSelectors = changes.flatMap((c) => (c.add && "selector" in c.target ? [c.target.selector] : []));
    // The hosts a changed selector matches move with the change, in its one step: a failure after it cannot leave
    // one answering 304 to its old ETag. One that registers meanwhile is moved just after (it read the selectors
    // before the change, or it is found now).
    const selectors = changes.flatMap((c) => ("selector" in c.target ? [c.target.selector] : []));
    // Every agent when a selector changes (the hosts it matches); a change of hosts alone needs none here.
    const agents = selectors.length > 0 ? await this.store.listAgents() : [];
    const matching = this.matchingAmong(agents, selectors);
    // The hosts added to, directly or through an added selector, are checked against what they are served, and the
    // write is made only while each is still at the version read with it: a change landing in between (another
    // request's, another assigner's) has the check made again with it, so no host is ever written past its share.
    const addedTo = changes.flatMap((c) => (c.add && "hostId" in c.target ? [c.target.hostId] : []));
    const checked = [...new Set([...addedTo, ...this.matchingAmong(agents, addedSelectors)])];
    if (ifVersion !== undefined) {
      // A stale If-Match is told as such (412), not as a refusal of a state the caller never planned on.
      const { version } = await this.store.desiredState();
      if (version !== ifVersion) throw this.stale(version, ifVersion);
    }
    let result: Awaited<ReturnType<AssignerStore["changeAssignments"]>>;
    for (let attempt = 1; ; attempt++) {
      const served = await this.servedNow(checked, selectors.length > 0);
      // Labels after the versions: a registration that changes them between moves the host's version, and the
      // write is refused and checked again with the new labels.
      const labelsOf = new Map(checked.length === 0 ? [] : (await this.store.getAgentsByHosts(checked)).map((agent, i) => [checked[i]!, agent?.labels]));
      this.perHostCheck(changes, served, labelsOf);
      result = await this.store.changeAssignments(changes, ifVersion, matching, served.versions);
      if (result.applied) break;
      // The cap on selector assignments is checked in the store's atomic step, after its If-Match (a check here,
      // before it, let concurrent adds through past it, and counted re-adds of ones already there).
      if (result.selectorsOver) {
        const { count, max } = result.selectorsOver;
        throw new AssignerError("CONFLICT", `this change would leave ${count} selector assignments, more than the ${max} an assigner holds: nothing was changed`);
      }
      if (ifVersion !== undefined && result.version !== ifVersion) throw this.stale(result.version, ifVersion);
      if (attempt >= CHANGE_ATTEMPTS) throw new AssignerError("UNAVAILABLE", `the hosts of this change changed under it ${CHANGE_ATTEMPTS} times in a row: try it again`);
      // Changes that collided are spread out, more at each round (up to 100 ms), so that one of them goes in each time.
      await sleep(Math.random() * Math.min(2 ** attempt, 100));
    }
    if (result.added > 0) this.metrics.assignmentChanges.inc({ op: "assign" }, result.added);
    if (result.removed > 0) this.metrics.assignmentChanges.inc({ op: "unassign" }, result.removed);
    for (const host of result.hosts) if (host.changed) this.events?.notifyAssignments({ host_id: host.hostId, version: host.version });
    if (result.added + result.removed > 0 && selectors.length > 0) {
      const moved = new Set(matching);
      await this.bump((await this.hostsMatching(selectors)).filter((hostId) => !moved.has(hostId)));
    }
    return { version: result.version, added: result.added, removed: result.removed, hosts: result.hosts };
  }

  /**
   * Refuses (409) adding a program to a host whose registered agent reported
   * a kernel that cannot run it, naming each such host (POST /assign and POST
   * /assignments; `force` skips this). A host without an agent yet, or an
   * agent that reported nothing, is assigned: only a known lack counts.
   * Selector assignments are not checked: they also reach hosts that register
   * later, and a host that cannot load the program reports it failed.
   */
  private async requireRunnable(changes: AssignmentChange[], artifacts: ReadonlyMap<string, ArtifactRecord>): Promise<void> {
    const adds = changes.flatMap((c) => (c.add && "hostId" in c.target ? [{ artifactId: c.artifactId, hostId: c.target.hostId }] : []));
    if (!adds.some((a) => artifacts.get(a.artifactId)?.metadata.program)) return;
    // At most ASSIGNMENT_CHANGES_MAX hosts, read together.
    const hosts = [...new Set(adds.map((a) => a.hostId))];
    const found = await this.store.getAgentsByHosts(hosts);
    const agents = new Map(hosts.map((h, i) => [h, found[i]]));
    const refused = unrunnable(adds, (id) => artifacts.get(id)?.metadata.program, (h) => agents.get(h));
    if (refused.length > 0) throw unrunnableError(refused, "?force=true, or the CLI's --force,");
  }

  /** A host's labels changed (its agent registered, again or anew, or was deleted): what selectors give it may have. */
  async hostLabelsChanged(hostId: string): Promise<void> {
    await this.bump([hostId]);
  }

  /** Stores a signature found after registration and moves the versions of the hosts that are served it. */
  async updateSignature(record: ArtifactRecord): Promise<void> {
    await this.store.replaceArtifact(record);
    const selectors = (await this.store.desiredState()).selectors.filter((s) => s.artifactId === record.id).map((s) => s.selector);
    await this.bump([...(await this.store.artifactHosts(record.id)), ...(await this.hostsMatching(selectors))]);
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
   * token's) and be recent (else invalid), the artifact must be one the host
   * is served or has reported on before, a `detached` after an unassign
   * (else dropped: a stolen token cannot store reports, receipts of up to
   * 512 KiB, about every registered artifact, nor tell which are), and its
   * `seq` must be above the last recorded for that host and artifact (else
   * invalid: a replay). NATS and the HTTP route are open to whoever holds
   * them: nothing unverified is recorded.
   */
  async recordTelemetry(envelope: SignedTelemetry, hostId: string): Promise<boolean> {
    const agent = await this.store.getAgentByHost(hostId);
    if (!agent) return this.refuse(hostId, { result: "dropped", reason: "unregistered", why: "no agent is registered for this host" }, UNREGISTERED);
    const opened = openTelemetry(envelope, { hostId, publicKey: agent.publicKey, maxSkewMs: this.limits.telemetryMaxSkewMs ?? DEFAULT_TELEMETRY_MAX_SKEW_MS });
    if (!opened.ok) {
      const why = opened.reason === "clock" ? `${opened.why}: check the host's clock (NTP), or --telemetry-max-skew` : opened.why;
      return this.refuse(hostId, { result: "invalid", reason: opened.reason, why });
    }
    const { message } = opened;
    const about = message.artifact_id;
    if (!(await this.store.hasStatus(about, hostId)) && !(await this.hostView(hostId)).artifactIds.includes(about)) {
      return this.refuse(hostId, { result: "dropped", reason: "not-served", why: `artifact ${about} is not served to this host` });
    }
    const { receipt } = message;
    const recorded = await this.store.putStatus({
      hostId,
      artifactId: about,
      event: message.event,
      ...(message.code ? { code: message.code } : {}),
      ...(message.reason ? { reason: message.reason } : {}),
      ...(message.counters ? { counters: message.counters } : {}),
      ...(receipt ? { receipt: { programId: receipt.program_id, interfaces: receipt.interfaces, since: receipt.since } } : {}),
      time: message.time,
      seq: message.seq,
    });
    if (!recorded) return this.refuse(hostId, { result: "invalid", reason: "replay", why: `seq ${message.seq} is not above the last recorded for artifact ${about}` });
    await this.store.touchAgent(hostId, new Date().toISOString());
    this.metrics.telemetry.inc({ result: "recorded" });
    return true;
  }

  /** Telemetry refusals logged: at most one line a minute per host (the count held back in the next), in bounded memory. */
  private readonly refusals = new LogThrottle();

  /** A NATS message that is no signed telemetry: counted invalid, and told (all such messages under one rate limit). */
  refuseMalformed(subjectHost: string | undefined, why: string): void {
    this.refuse(subjectHost ?? "(no host id)", { result: "invalid", reason: "malformed", why }, MALFORMED);
  }

  /**
   * A NATS message the store could not record (Redis away): counted
   * dropped (NATS does not deliver it again), and logged at error, at most
   * a line a minute for all such messages.
   */
  notRecorded(hostId: string, err: unknown): void {
    this.countAndTell("error", NOT_RECORDED, { host_id: hostId, result: "dropped", reason: "store" }, `telemetry from host "${hostId}" not recorded: ${describeError(err)}`, "not recorded");
  }

  /**
   * Counts a refused message, and warns naming the host and why (never the
   * payload): a host whose clock is off, or whose key no longer matches,
   * otherwise never has a receipt recorded with nothing saying why.
   */
  private refuse(hostId: string, refusal: Refusal, key = hostId): false {
    // A shared key (hosts without an agent, malformed messages) counts every host's: said so.
    const heldAs = key === hostId ? "refused" : "like it, from any host,";
    this.countAndTell("warn", key, { host_id: hostId, result: refusal.result, reason: refusal.reason }, `telemetry from host "${hostId}" refused: ${refusal.why}`, heldAs);
    return false;
  }

  /**
   * Counts a message not recorded, as `fields.result`, and logs `line` at
   * `level` at most once a minute per `key`, with how many were held back
   * since (`heldAs` says what they were).
   */
  private countAndTell(level: "warn" | "error", key: string, fields: { host_id: string; result: Refusal["result"]; reason: string }, line: string, heldAs: string): void {
    this.metrics.telemetry.inc({ result: fields.result });
    const logged = this.logger.isLevelEnabled(level) ? this.refusals.take(key) : undefined;
    if (logged) this.logger[level](fields, `${line}${logged.held > 0 ? ` (${logged.held} more ${heldAs} since the last line)` : ""}`);
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
