// The embedded store: everything in memory, persisted to one JSON file, for
// a single assigner on one machine with no Redis. Each change is applied in
// memory, then the call waits until a snapshot that contains it has been
// written (temp file, fsync, rename); concurrent changes share one write.
import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, rename, rm } from "node:fs/promises";
import { dirname } from "node:path";
import { StoreUnavailableError } from "../errors.js";
import type {
  AgentRecord,
  ArtifactRecord,
  AssignerStore,
  AssignResult,
  HostAssignments,
  Registration,
  StatusRecord,
  TokenRecord,
} from "./store.js";

interface State {
  artifacts: Record<string, ArtifactRecord>;
  hosts: Record<string, { version: number; artifacts: string[] }>;
  agents: Record<string, AgentRecord>;
  hostAgent: Record<string, string>;
  tokens: Record<string, TokenRecord>;
  registrations: Record<string, { registration: Registration; expires: number }>;
  /** artifactId → hostId → status */
  status: Record<string, Record<string, StatusRecord>>;
}

function emptyState(): State {
  return { artifacts: {}, hosts: {}, agents: {}, hostAgent: {}, tokens: {}, registrations: {}, status: {} };
}

export class EmbeddedStore implements AssignerStore {
  private state: State = emptyState();
  /** The write in flight, and whether another must follow it. */
  private writing: Promise<void> | undefined;
  private dirty = false;
  private waiters: { resolve: () => void; reject: (err: unknown) => void }[] = [];

  private constructor(readonly file: string) {}

  static async open(file: string): Promise<EmbeddedStore> {
    const store = new EmbeddedStore(file);
    await mkdir(dirname(file), { recursive: true });
    try {
      store.state = { ...emptyState(), ...(JSON.parse(await readFile(file, "utf8")) as Partial<State>) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
        throw new StoreUnavailableError(`cannot read the assigner store ${file}: ${(err as Error).message}`, { cause: err });
      }
    }
    return store;
  }

  /** Resolves once a snapshot taken after this call is on disk. */
  private persist(): Promise<void> {
    this.dirty = true;
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    this.writing ??= this.flush();
    return done;
  }

  private async flush(): Promise<void> {
    while (this.dirty) {
      this.dirty = false;
      const waiters = this.waiters;
      this.waiters = [];
      try {
        await this.writeSnapshot(JSON.stringify(this.state));
        waiters.forEach((w) => w.resolve());
      } catch (err) {
        const failure = new StoreUnavailableError(`cannot write the assigner store ${this.file}: ${(err as Error).message}`, { cause: err });
        waiters.forEach((w) => w.reject(failure));
      }
    }
    this.writing = undefined;
  }

  private async writeSnapshot(text: string): Promise<void> {
    const temp = `${this.file}.${randomBytes(6).toString("hex")}.tmp`;
    const handle = await open(temp, "w", 0o600);
    try {
      await handle.writeFile(text);
      await handle.sync();
    } finally {
      await handle.close();
    }
    try {
      await rename(temp, this.file);
    } catch (err) {
      await rm(temp, { force: true });
      throw err;
    }
  }

  async putArtifact(record: ArtifactRecord): Promise<boolean> {
    if (this.state.artifacts[record.id]) return false;
    this.state.artifacts[record.id] = record;
    await this.persist();
    return true;
  }

  async getArtifact(id: string): Promise<ArtifactRecord | undefined> {
    return this.state.artifacts[id];
  }

  async getArtifacts(ids: string[]): Promise<(ArtifactRecord | undefined)[]> {
    return ids.map((id) => this.state.artifacts[id]);
  }

  async listArtifacts(): Promise<ArtifactRecord[]> {
    return Object.values(this.state.artifacts);
  }

  private async change(artifactId: string, hostId: string, add: boolean): Promise<AssignResult> {
    const host = (this.state.hosts[hostId] ??= { version: 0, artifacts: [] });
    const has = host.artifacts.includes(artifactId);
    if (has === add) return { changed: false, version: host.version };
    host.artifacts = add ? [...host.artifacts, artifactId] : host.artifacts.filter((id) => id !== artifactId);
    host.version++;
    const version = host.version;
    await this.persist();
    return { changed: true, version };
  }

  assign(artifactId: string, hostId: string): Promise<AssignResult> {
    return this.change(artifactId, hostId, true);
  }

  unassign(artifactId: string, hostId: string): Promise<AssignResult> {
    return this.change(artifactId, hostId, false);
  }

  async hostAssignments(hostId: string): Promise<HostAssignments> {
    const host = this.state.hosts[hostId];
    return { version: host?.version ?? 0, artifactIds: [...(host?.artifacts ?? [])].sort() };
  }

  async hostVersion(hostId: string): Promise<number> {
    return this.state.hosts[hostId]?.version ?? 0;
  }

  async artifactHosts(artifactId: string): Promise<string[]> {
    return Object.entries(this.state.hosts)
      .filter(([, host]) => host.artifacts.includes(artifactId))
      .map(([hostId]) => hostId)
      .sort();
  }

  async putRegistration(registration: Registration, ttlSeconds: number): Promise<void> {
    const now = Date.now();
    // Drop expired registrations so the file does not grow with abandoned handshakes.
    this.state.registrations = Object.fromEntries(Object.entries(this.state.registrations).filter(([, entry]) => entry.expires > now));
    this.state.registrations[registration.id] = { registration, expires: now + ttlSeconds * 1000 };
    await this.persist();
  }

  async takeRegistration(id: string): Promise<Registration | undefined> {
    const { [id]: entry, ...rest } = this.state.registrations;
    if (!entry) return undefined;
    this.state.registrations = rest;
    await this.persist();
    return entry.expires > Date.now() ? entry.registration : undefined;
  }

  async putAgent(agent: AgentRecord): Promise<void> {
    const previous = this.state.hostAgent[agent.hostId];
    if (previous && previous !== agent.uid) {
      const { [previous]: _replaced, ...others } = this.state.agents;
      this.state.agents = others;
    }
    this.state.agents[agent.uid] = agent;
    this.state.hostAgent[agent.hostId] = agent.uid;
    await this.persist();
  }

  async getAgent(uid: string): Promise<AgentRecord | undefined> {
    return this.state.agents[uid];
  }

  async listAgents(): Promise<AgentRecord[]> {
    return Object.values(this.state.agents);
  }

  async touchAgent(hostId: string, time: string): Promise<void> {
    const uid = this.state.hostAgent[hostId];
    const agent = uid ? this.state.agents[uid] : undefined;
    if (!agent) return;
    agent.lastSeen = time;
    await this.persist();
  }

  async putToken(hash: string, token: TokenRecord): Promise<void> {
    this.state.tokens[hash] = token;
    await this.persist();
  }

  async getToken(hash: string): Promise<TokenRecord | undefined> {
    return this.state.tokens[hash];
  }

  async putStatus(status: StatusRecord): Promise<void> {
    (this.state.status[status.artifactId] ??= {})[status.hostId] = status;
    await this.persist();
  }

  async artifactStatus(artifactId: string): Promise<StatusRecord[]> {
    return Object.values(this.state.status[artifactId] ?? {});
  }

  async hostStatus(hostId: string): Promise<StatusRecord[]> {
    return Object.values(this.state.status).flatMap((byHost) => (byHost[hostId] ? [byHost[hostId]] : []));
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    await this.writing;
  }
}
