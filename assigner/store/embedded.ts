// The embedded store: everything in memory, persisted to one JSON file, for
// a single assigner on one machine with no Redis. Each change is checked and
// applied in memory in one synchronous step (no await between the read and
// the write, so concurrent calls cannot interleave), then the call waits until
// a snapshot that contains it has been written with atomicWrite; concurrent
// changes share one write. Reads of assignments, artifacts and rollouts wait
// while a change to them is not yet written, so none answers with a change
// not yet saved; telemetry's writes do not hold them up.
// When a write fails, memory goes back to the last snapshot on disk and every
// change not yet written fails: what callers were told failed never appears. Telemetry (status, last-seen) is advisory
// and frequent: it is written with the next change, or within a second,
// instead of one fsync per message.
// Maps, not plain objects, so a host named "constructor" is just a host.
import { randomBytes } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { dirname } from "node:path";
import { atomicWrite, byCodeUnit, removeStaleTemps } from "../../util/index.js";
import { StoreUnavailableError } from "../errors.js";
import { ROLLOUT_ACTIVE_STATES, SELECTOR_ASSIGNMENTS_MAX, type RolloutJson } from "../api/index.js";
import {
  ROLLOUTS_KEPT,
  type AgentRecord,
  type ArtifactRecord,
  type AssignerStore,
  type AssignmentChange,
  type BindResult,
  type ChangeResult,
  type DesiredState,
  type HostDesired,
  type Registration,
  type RegistrationLimits,
  statusSummary,
  type StatusRecord,
  type StatusSummary,
  type TokenRecord,
} from "./store.js";

/** How soon advisory changes (telemetry) reach the file, by default. */
const LAZY_WRITE_MS = 1000;

export interface EmbeddedStoreOptions {
  /** How soon advisory changes (telemetry, last-seen) reach the file (ms); default 1 s. */
  lazyWriteMs?: number;
  /** Selector assignments held at most; default SELECTOR_ASSIGNMENTS_MAX (tests set a small one). */
  selectorAssignmentsMax?: number;
}

/** The file's shape: each map as an array of entries. */
interface Snapshot {
  artifacts: [string, ArtifactRecord][];
  hosts: [string, { version: number; artifacts: string[] }][];
  agents: [string, AgentRecord][];
  tokens: [string, TokenRecord][];
  status: [string, [string, StatusRecord][]][];
  /** Selector assignments as "<artifact id> <selector>", and the desired state's version. */
  selectors?: string[];
  desiredVersion?: number;
  rollouts?: [string, RolloutJson][];
}

export class EmbeddedStore implements AssignerStore {
  private artifacts = new Map<string, ArtifactRecord>();
  private hosts = new Map<string, { version: number; artifacts: string[] }>();
  private agents = new Map<string, AgentRecord>();
  /** hostId → agent uid: derived from `agents`, not persisted. */
  private hostAgent = new Map<string, string>();
  private tokens = new Map<string, TokenRecord>();
  /** artifactId → hostId → status */
  private status = new Map<string, Map<string, StatusRecord>>();
  private selectors = new Set<string>();
  private desiredVersion = 0;
  /** Oldest first (insertion order). */
  private rollouts = new Map<string, RolloutJson>();
  /** Registrations live five minutes: kept in memory only, so the unauthenticated init endpoint never writes the file. */
  private readonly registrations = new Map<string, { registration: Registration; expires: number }>();
  /** The write in flight, and whether another must follow it. */
  private writing: Promise<void> | undefined;
  private dirty = false;
  private waiters: { resolve: () => void; reject: (err: unknown) => void }[] = [];
  /** The writes that changes other than telemetry wait for (persist): reads wait for these alone (saved). */
  private readonly unsaved = new Set<Promise<void>>();
  /** A write of advisory changes (status, last-seen) scheduled within LAZY_WRITE_MS. */
  private lazyWrite: NodeJS.Timeout | undefined;
  /** The snapshot last written (or read), to go back to when a write fails. */
  private durable = "{}";
  /** New at each load: a start, or a failed write going back to `durable` (AssignerStore.versionEpoch). */
  private epoch = newEpoch();

  private constructor(
    readonly file: string,
    private readonly lazyWriteMs: number,
    private readonly selectorAssignmentsMax: number,
  ) {}

  static async open(file: string, options: EmbeddedStoreOptions = {}): Promise<EmbeddedStore> {
    const store = new EmbeddedStore(file, options.lazyWriteMs ?? LAZY_WRITE_MS, options.selectorAssignmentsMax ?? SELECTOR_ASSIGNMENTS_MAX);
    await mkdir(dirname(file), { recursive: true });
    // A crash mid-write leaves a temp file beside the store; the store itself is whole.
    await removeStaleTemps(dirname(file));
    try {
      store.load(await readFile(file, "utf8"));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return store;
      throw new StoreUnavailableError(`cannot read the assigner store ${file}: ${(err as Error).message}`, { cause: err });
    }
    return store;
  }

  /** Replaces the in-memory state with a snapshot's; versions handed out since may come again, so the epoch is new. */
  private load(text: string): void {
    const snapshot = JSON.parse(text) as Partial<Snapshot>;
    this.durable = text;
    this.epoch = newEpoch();
    this.artifacts = new Map(snapshot.artifacts);
    this.hosts = new Map(snapshot.hosts);
    this.agents = new Map(snapshot.agents);
    this.tokens = new Map(snapshot.tokens);
    this.hostAgent = new Map([...this.agents.values()].map((agent) => [agent.hostId, agent.uid]));
    this.status = new Map((snapshot.status ?? []).map(([id, byHost]) => [id, new Map(byHost)]));
    this.selectors = new Set(snapshot.selectors);
    this.desiredVersion = snapshot.desiredVersion ?? 0;
    this.rollouts = new Map(snapshot.rollouts);
  }

  private snapshot(): Snapshot {
    return {
      artifacts: [...this.artifacts],
      hosts: [...this.hosts],
      agents: [...this.agents],
      tokens: [...this.tokens],
      status: [...this.status].map(([id, byHost]) => [id, [...byHost]]),
      selectors: [...this.selectors],
      desiredVersion: this.desiredVersion,
      rollouts: [...this.rollouts],
    };
  }

  /**
   * Resolves once every change but telemetry is on disk, so memory holds
   * what is on disk: the reads of assignments, artifacts and rollouts wait
   * for it. A change is applied in memory before its write; without this, a
   * poll during a write that then failed was answered with a change that was
   * never made. Telemetry's writes are not waited for: they follow each
   * other while messages keep coming, and once one took longer than
   * lazyWriteMs, every poll waited for all of them.
   */
  private async saved(): Promise<void> {
    while (this.unsaved.size > 0) await Promise.allSettled(this.unsaved);
  }

  /** Resolves once a snapshot taken after this call, with a change but telemetry, is on disk. */
  private persist(): Promise<void> {
    const done = this.write();
    this.unsaved.add(done);
    const settled = () => this.unsaved.delete(done);
    done.then(settled, settled);
    return done;
  }

  /** Resolves once a snapshot taken after this call is on disk. */
  private write(): Promise<void> {
    this.dirty = true;
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    this.writing ??= this.flush();
    return done;
  }

  /** Writes advisory changes soon, without waiting: a crash loses at most lazyWriteMs of telemetry. */
  private persistSoon(): void {
    this.lazyWrite ??= setTimeout(() => {
      this.lazyWrite = undefined;
      // A failure is logged by flush and rolled back; nobody waits on it.
      this.write().catch(() => undefined);
    }, this.lazyWriteMs).unref();
  }

  private async flush(): Promise<void> {
    while (this.dirty) {
      this.dirty = false;
      const waiters = this.waiters;
      this.waiters = [];
      clearTimeout(this.lazyWrite);
      this.lazyWrite = undefined;
      const text = JSON.stringify(this.snapshot());
      try {
        await atomicWrite(this.file, text, { mode: 0o600 });
        this.durable = text;
        waiters.forEach((w) => w.resolve());
      } catch (err) {
        // Back to what is on disk; changes made while this write was under
        // way were built on the failed ones, so they fail too. The file's path
        // stays in the log, not in the answer (it is the server's business).
        console.error(`assigner: cannot write the store ${this.file}: ${(err as Error).message}`);
        // The desired state's version does not go back: an If-Match planned on the failed change must not match a later one.
        const handedOut = this.desiredVersion;
        this.load(this.durable);
        this.desiredVersion = Math.max(this.desiredVersion, handedOut);
        const failure = new StoreUnavailableError("the assigner store cannot be written; the change was not made", { cause: err });
        for (const w of [...waiters, ...this.waiters]) w.reject(failure);
        this.waiters = [];
        this.dirty = false;
      }
    }
    this.writing = undefined;
  }

  async putArtifact(record: ArtifactRecord): Promise<boolean> {
    if (this.artifacts.has(record.id)) return false;
    this.artifacts.set(record.id, record);
    await this.persist();
    return true;
  }

  async replaceArtifact(record: ArtifactRecord): Promise<void> {
    this.artifacts.set(record.id, record);
    await this.persist();
  }

  async getArtifact(id: string): Promise<ArtifactRecord | undefined> {
    await this.saved();
    return this.artifacts.get(id);
  }

  async getArtifacts(ids: string[]): Promise<(ArtifactRecord | undefined)[]> {
    await this.saved();
    return ids.map((id) => this.artifacts.get(id));
  }

  async listArtifacts(): Promise<ArtifactRecord[]> {
    await this.saved();
    return [...this.artifacts.values()];
  }

  async changeAssignments(changes: AssignmentChange[], ifVersion?: number, alsoMoved: readonly string[] = [], ifHostVersions: ReadonlyMap<string, number> = new Map()): Promise<ChangeResult> {
    if (ifVersion !== undefined && ifVersion !== this.desiredVersion) return { applied: false, version: this.desiredVersion };
    for (const [hostId, version] of ifHostVersions) if ((this.hosts.get(hostId)?.version ?? 0) !== version) return { applied: false, version: this.desiredVersion };
    const count = this.selectorsAfter(changes);
    if (count > this.selectorAssignmentsMax && count > this.selectors.size) return { applied: false, version: this.desiredVersion, selectorsOver: { count, max: this.selectorAssignmentsMax } };
    let added = 0;
    let removed = 0;
    const touched = new Map<string, boolean>();
    for (const { add, artifactId, target } of changes) {
      let changed: boolean;
      if ("hostId" in target) {
        let host = this.hosts.get(target.hostId);
        if (!host) this.hosts.set(target.hostId, (host = { version: 0, artifacts: [] }));
        changed = host.artifacts.includes(artifactId) !== add;
        if (changed) host.artifacts = add ? [...host.artifacts, artifactId] : host.artifacts.filter((id) => id !== artifactId);
        touched.set(target.hostId, (touched.get(target.hostId) ?? false) || changed);
      } else {
        const member = `${artifactId} ${target.selector}`;
        changed = this.selectors.has(member) !== add;
        if (add) this.selectors.add(member);
        else this.selectors.delete(member);
      }
      if (changed && add) added++;
      else if (changed) removed++;
    }
    for (const hostId of alsoMoved) {
      if (!touched.has(hostId)) touched.set(hostId, false);
      if (added + removed === 0) continue;
      if (!this.hosts.has(hostId)) this.hosts.set(hostId, { version: 0, artifacts: [] });
      touched.set(hostId, true);
    }
    const hosts = [...touched].map(([hostId, changed]) => {
      const host = this.hosts.get(hostId);
      return { hostId, version: changed ? ++host!.version : (host?.version ?? 0), changed };
    });
    if (added + removed === 0) return { applied: true, version: this.desiredVersion, added, removed, hosts };
    const version = ++this.desiredVersion;
    await this.persist();
    return { applied: true, version, added, removed, hosts };
  }

  /** How many selector assignments there would be after the changes, in their order: only adds of ones not there count (as Redis's script). */
  private selectorsAfter(changes: AssignmentChange[]): number {
    let count = this.selectors.size;
    const member = new Map<string, boolean>();
    for (const { add, artifactId, target } of changes) {
      if (!("selector" in target)) continue;
      const m = `${artifactId} ${target.selector}`;
      const present = member.get(m) ?? this.selectors.has(m);
      if (add && !present) count++;
      else if (present && !add) count--;
      member.set(m, add);
    }
    return count;
  }

  async desiredState(): Promise<DesiredState> {
    await this.saved();
    const direct = [...this.hosts].flatMap(([hostId, host]) => host.artifacts.map((artifactId) => ({ artifactId, hostId })));
    return { version: this.desiredVersion, direct, selectors: this.selectorList() };
  }

  private selectorList(): { artifactId: string; selector: string }[] {
    return [...this.selectors].map((member) => {
      const space = member.indexOf(" ");
      return { artifactId: member.slice(0, space), selector: member.slice(space + 1) };
    });
  }

  async hostDesired(hostId: string): Promise<HostDesired> {
    await this.saved();
    const host = this.hosts.get(hostId);
    return { version: host?.version ?? 0, artifactIds: [...(host?.artifacts ?? [])].sort(), selectors: this.selectorList() };
  }

  async putRollout(rollout: RolloutJson): Promise<void> {
    if (!this.rollouts.has(rollout.id)) {
      for (const id of [...this.rollouts.keys()].slice(0, Math.max(0, this.rollouts.size - ROLLOUTS_KEPT + 1))) this.rollouts.delete(id);
    }
    this.rollouts.set(rollout.id, rollout);
    await this.persist();
  }

  async getRollout(id: string): Promise<RolloutJson | undefined> {
    await this.saved();
    return this.rollouts.get(id);
  }

  async listRollouts(): Promise<RolloutJson[]> {
    await this.saved();
    return [...this.rollouts.values()].reverse();
  }

  /** In memory, filtering reads no more than it returns. */
  async listActiveRollouts(): Promise<RolloutJson[]> {
    return (await this.listRollouts()).filter((r) => ROLLOUT_ACTIVE_STATES.has(r.state));
  }

  async bumpHostVersion(hostId: string): Promise<number> {
    let host = this.hosts.get(hostId);
    if (!host) this.hosts.set(hostId, (host = { version: 0, artifacts: [] }));
    const version = ++host.version;
    await this.persist();
    return version;
  }

  versionEpoch(): string {
    return this.epoch;
  }

  async hostVersion(hostId: string): Promise<number> {
    await this.saved();
    return this.hosts.get(hostId)?.version ?? 0;
  }

  async artifactHosts(artifactId: string): Promise<string[]> {
    await this.saved();
    return [...this.hosts].filter(([, host]) => host.artifacts.includes(artifactId)).map(([hostId]) => hostId).sort();
  }

  async putRegistration(registration: Registration, ttlSeconds: number, limits: RegistrationLimits): Promise<boolean> {
    const now = Date.now();
    let forHost = 0;
    for (const [id, entry] of this.registrations) {
      if (entry.expires <= now) this.registrations.delete(id);
      else if (entry.registration.hostId === registration.hostId) forHost++;
    }
    if (forHost >= limits.perHost || this.registrations.size >= limits.total) return false;
    this.registrations.set(registration.id, { registration, expires: now + ttlSeconds * 1000 });
    return true;
  }

  async takeRegistration(id: string): Promise<Registration | undefined> {
    const entry = this.registrations.get(id);
    this.registrations.delete(id);
    return entry && entry.expires > Date.now() ? entry.registration : undefined;
  }

  async bindAgent(agent: AgentRecord, tokenHash: string): Promise<BindResult> {
    const previousUid = this.hostAgent.get(agent.hostId);
    const previous = previousUid === undefined ? undefined : this.agents.get(previousUid);
    if (previous && previous.publicKey !== agent.publicKey) return { bound: false, holder: previous };
    if (previous) this.removeAgent(previous.uid);
    // A copy: touchAgent writes last-seen into the stored record, never into the caller's object.
    this.agents.set(agent.uid, { ...agent });
    this.hostAgent.set(agent.hostId, agent.uid);
    this.tokens.set(tokenHash, { agentUid: agent.uid, hostId: agent.hostId });
    await this.persist();
    return previous ? { bound: true, replaced: previous.uid } : { bound: true };
  }

  /** Forgets an agent and every token issued to it. */
  private removeAgent(uid: string): void {
    const agent = this.agents.get(uid);
    if (agent && this.hostAgent.get(agent.hostId) === uid) this.hostAgent.delete(agent.hostId);
    this.agents.delete(uid);
    for (const [hash, token] of this.tokens) if (token.agentUid === uid) this.tokens.delete(hash);
  }

  async deleteAgent(uid: string): Promise<boolean> {
    if (!this.agents.has(uid)) return false;
    this.removeAgent(uid);
    await this.persist();
    return true;
  }

  async getAgent(uid: string): Promise<AgentRecord | undefined> {
    return this.agents.get(uid);
  }

  async getAgentByHost(hostId: string): Promise<AgentRecord | undefined> {
    const uid = this.hostAgent.get(hostId);
    return uid === undefined ? undefined : this.agents.get(uid);
  }

  async getAgentsByHosts(hostIds: readonly string[]): Promise<(AgentRecord | undefined)[]> {
    return Promise.all(hostIds.map((h) => this.getAgentByHost(h)));
  }

  async listAgents(): Promise<AgentRecord[]> {
    return [...this.agents.values()].sort((a, b) => byCodeUnit(a.uid, b.uid));
  }

  async touchAgent(hostId: string, time: string): Promise<void> {
    const agent = await this.getAgentByHost(hostId);
    if (!agent) return;
    agent.lastSeen = time;
    this.persistSoon();
  }

  async getToken(hash: string): Promise<TokenRecord | undefined> {
    return this.tokens.get(hash);
  }

  async putStatus(status: StatusRecord): Promise<boolean> {
    let byHost = this.status.get(status.artifactId);
    if (!byHost) this.status.set(status.artifactId, (byHost = new Map()));
    const stored = byHost.get(status.hostId)?.seq;
    if (stored !== undefined && status.seq !== undefined && status.seq <= stored) return false;
    byHost.set(status.hostId, status);
    this.persistSoon();
    return true;
  }

  async artifactStatus(artifactId: string): Promise<StatusRecord[]> {
    return [...(this.status.get(artifactId)?.values() ?? [])];
  }

  /** In memory: leaving out counters and receipts copies nothing big (Redis keeps the summaries apart). */
  async artifactStatusSummary(artifactId: string): Promise<StatusSummary[]> {
    return (await this.artifactStatus(artifactId)).map(statusSummary);
  }

  async hasStatus(artifactId: string, hostId: string): Promise<boolean> {
    return this.status.get(artifactId)?.has(hostId) ?? false;
  }

  async hostStatus(hostId: string): Promise<StatusRecord[]> {
    return [...this.status.values()].flatMap((byHost) => byHost.get(hostId) ?? []);
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    if (this.lazyWrite) await this.write().catch(() => undefined);
    await this.writing;
  }
}

function newEpoch(): string {
  return randomBytes(4).toString("hex");
}
