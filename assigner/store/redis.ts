// The production store: Redis. Assignments are Redis sets changed by one Lua
// script, so a change and its host version move together atomically under
// any number of concurrent assigners. Commands fail fast when Redis is away
// (no offline queue, short timeouts), so the API answers 503 instead of hanging.
import { Redis } from "ioredis";
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

export interface RedisStoreOptions {
  /** Prefix of every key; default "aegis". */
  prefix?: string;
  /** Longest wait for one command, in ms; default 800. */
  commandTimeoutMs?: number;
}

// KEYS: host set, host version, artifact's host set. ARGV: artifact id, host id, "add" | "rem".
// The keys a script touches must share a hash slot on Redis Cluster, hence
// the one {a} tag on all assignment keys (this client itself is single-node).
const CHANGE_ASSIGNMENT = `
local changed
if ARGV[3] == 'add' then
  changed = redis.call('SADD', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[3], ARGV[2])
else
  changed = redis.call('SREM', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[2])
end
if changed == 1 then return {1, redis.call('INCR', KEYS[2])} end
return {0, tonumber(redis.call('GET', KEYS[2]) or '0')}
`;

function parse<T>(text: string | null | undefined): T | undefined {
  return text ? (JSON.parse(text) as T) : undefined;
}

export class RedisStore implements AssignerStore {
  private readonly redis: Redis;
  private readonly p: string;

  constructor(url: string, options: RedisStoreOptions = {}) {
    this.p = options.prefix ?? "aegis";
    this.redis = new Redis(url, {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: options.commandTimeoutMs ?? 800,
      connectTimeout: 1000,
      // Keep trying to reconnect, at most a second apart, forever.
      retryStrategy: (times) => Math.min(times * 100, 1000),
      lazyConnect: true,
    });
    // Connection errors surface through commands; without a listener ioredis logs them.
    this.redis.on("error", () => {});
  }

  /** Connects, or throws StoreUnavailableError. The store keeps reconnecting in the background either way. */
  async connect(): Promise<void> {
    await this.run(() => this.redis.connect());
  }

  /** Runs a command, turning connection trouble into StoreUnavailableError. */
  private async run<T>(command: () => Promise<T>): Promise<T> {
    try {
      return await command();
    } catch (err) {
      if ((err as Error).name === "ReplyError") throw err;
      throw new StoreUnavailableError(`Redis is unavailable: ${(err as Error).message}`, { cause: err });
    }
  }

  // Assignment keys share the {a} hash tag (see CHANGE_ASSIGNMENT).
  private hostSet = (hostId: string) => `${this.p}:{a}:host:${hostId}`;
  private hostVersionKey = (hostId: string) => `${this.p}:{a}:version:${hostId}`;
  private artifactHostsKey = (artifactId: string) => `${this.p}:{a}:hosts:${artifactId}`;
  private artifactKey = (id: string) => `${this.p}:artifact:${id}`;

  async putArtifact(record: ArtifactRecord): Promise<boolean> {
    const set = await this.run(() => this.redis.set(this.artifactKey(record.id), JSON.stringify(record), "NX"));
    if (set) await this.run(() => this.redis.sadd(`${this.p}:artifacts`, record.id));
    return set === "OK";
  }

  async replaceArtifact(record: ArtifactRecord): Promise<void> {
    await this.run(() => this.redis.multi().set(this.artifactKey(record.id), JSON.stringify(record)).sadd(`${this.p}:artifacts`, record.id).exec());
  }

  async getArtifact(id: string): Promise<ArtifactRecord | undefined> {
    return parse(await this.run(() => this.redis.get(this.artifactKey(id))));
  }

  async getArtifacts(ids: string[]): Promise<(ArtifactRecord | undefined)[]> {
    if (ids.length === 0) return [];
    const values = await this.run(() => this.redis.mget(ids.map(this.artifactKey)));
    return values.map((v) => parse<ArtifactRecord>(v));
  }

  async listArtifacts(): Promise<ArtifactRecord[]> {
    const ids = await this.run(() => this.redis.smembers(`${this.p}:artifacts`));
    return (await this.getArtifacts(ids.sort())).filter((r): r is ArtifactRecord => r !== undefined);
  }

  private async change(artifactId: string, hostId: string, op: "add" | "rem"): Promise<AssignResult> {
    const keys = [this.hostSet(hostId), this.hostVersionKey(hostId), this.artifactHostsKey(artifactId)];
    const [changed, version] = (await this.run(() => this.redis.eval(CHANGE_ASSIGNMENT, 3, ...keys, artifactId, hostId, op))) as [number, number];
    return { changed: changed === 1, version };
  }

  assign(artifactId: string, hostId: string): Promise<AssignResult> {
    return this.change(artifactId, hostId, "add");
  }

  unassign(artifactId: string, hostId: string): Promise<AssignResult> {
    return this.change(artifactId, hostId, "rem");
  }

  async hostAssignments(hostId: string): Promise<HostAssignments> {
    const replies = await this.run(() => this.redis.multi().smembers(this.hostSet(hostId)).get(this.hostVersionKey(hostId)).exec());
    const [[, members], [, version]] = replies as [[unknown, string[]], [unknown, string | null]];
    return { version: Number(version ?? 0), artifactIds: members.sort() };
  }

  async hostVersion(hostId: string): Promise<number> {
    return Number((await this.run(() => this.redis.get(this.hostVersionKey(hostId)))) ?? 0);
  }

  async bumpHostVersion(hostId: string): Promise<number> {
    return this.run(() => this.redis.incr(this.hostVersionKey(hostId)));
  }

  async artifactHosts(artifactId: string): Promise<string[]> {
    return (await this.run(() => this.redis.smembers(this.artifactHostsKey(artifactId)))).sort();
  }

  async putRegistration(registration: Registration, ttlSeconds: number): Promise<void> {
    await this.run(() => this.redis.set(`${this.p}:registration:${registration.id}`, JSON.stringify(registration), "EX", ttlSeconds));
  }

  async takeRegistration(id: string): Promise<Registration | undefined> {
    // GETDEL makes the nonce single-use even with many assigners.
    return parse(await this.run(() => this.redis.getdel(`${this.p}:registration:${id}`)));
  }

  async putAgent(agent: AgentRecord): Promise<void> {
    const previous = await this.run(() => this.redis.getset(`${this.p}:hostagent:${agent.hostId}`, agent.uid));
    await this.run(() => this.redis.multi().set(`${this.p}:agent:${agent.uid}`, JSON.stringify(agent)).sadd(`${this.p}:agents`, agent.uid).exec());
    if (previous && previous !== agent.uid) await this.removeAgent(previous);
  }

  /** Deletes an agent's record and every token issued to it. */
  private async removeAgent(uid: string): Promise<void> {
    const hashes = await this.run(() => this.redis.smembers(`${this.p}:agenttokens:${uid}`));
    const tx = this.redis.multi().del(`${this.p}:agent:${uid}`, `${this.p}:agenttokens:${uid}`).srem(`${this.p}:agents`, uid);
    for (const hash of hashes) tx.del(`${this.p}:token:${hash}`);
    await this.run(() => tx.exec());
  }

  async deleteAgent(uid: string): Promise<boolean> {
    const agent = await this.getAgent(uid);
    if (!agent) return false;
    // Unbind the host only if it still points at this agent.
    const bound = await this.run(() => this.redis.get(`${this.p}:hostagent:${agent.hostId}`));
    if (bound === uid) await this.run(() => this.redis.del(`${this.p}:hostagent:${agent.hostId}`));
    await this.removeAgent(uid);
    return true;
  }

  async getAgent(uid: string): Promise<AgentRecord | undefined> {
    const agent = parse<AgentRecord>(await this.run(() => this.redis.get(`${this.p}:agent:${uid}`)));
    if (!agent) return undefined;
    const lastSeen = await this.run(() => this.redis.hget(`${this.p}:lastseen`, agent.hostId));
    return lastSeen ? { ...agent, lastSeen } : agent;
  }

  async getAgentByHost(hostId: string): Promise<AgentRecord | undefined> {
    const uid = await this.run(() => this.redis.get(`${this.p}:hostagent:${hostId}`));
    return uid ? this.getAgent(uid) : undefined;
  }

  async listAgents(): Promise<AgentRecord[]> {
    const uids = (await this.run(() => this.redis.smembers(`${this.p}:agents`))).sort();
    const agents = (await Promise.all(uids.map((uid) => this.getAgent(uid)))).filter((a): a is AgentRecord => a !== undefined);
    return agents;
  }

  async touchAgent(hostId: string, time: string): Promise<void> {
    await this.run(() => this.redis.hset(`${this.p}:lastseen`, hostId, time));
  }

  async putToken(hash: string, token: TokenRecord): Promise<void> {
    await this.run(() =>
      this.redis.multi().set(`${this.p}:token:${hash}`, JSON.stringify(token)).sadd(`${this.p}:agenttokens:${token.agentUid}`, hash).exec(),
    );
  }

  async getToken(hash: string): Promise<TokenRecord | undefined> {
    return parse(await this.run(() => this.redis.get(`${this.p}:token:${hash}`)));
  }

  async putStatus(status: StatusRecord): Promise<void> {
    const json = JSON.stringify(status);
    await this.run(() =>
      this.redis
        .multi()
        .hset(`${this.p}:status:${status.artifactId}`, status.hostId, json)
        .hset(`${this.p}:hoststatus:${status.hostId}`, status.artifactId, json)
        .exec(),
    );
  }

  async artifactStatus(artifactId: string): Promise<StatusRecord[]> {
    return Object.values(await this.run(() => this.redis.hgetall(`${this.p}:status:${artifactId}`))).map((v) => JSON.parse(v) as StatusRecord);
  }

  async hostStatus(hostId: string): Promise<StatusRecord[]> {
    return Object.values(await this.run(() => this.redis.hgetall(`${this.p}:hoststatus:${hostId}`))).map((v) => JSON.parse(v) as StatusRecord);
  }

  async ping(): Promise<void> {
    await this.run(() => this.redis.ping());
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }
}
