// The production store: Redis. Assignments are Redis sets changed by one Lua
// script, so a change and its host version move together atomically under
// any number of concurrent assigners. Commands fail fast when Redis is away
// (no offline queue, a short connect timeout), so the API answers 503 instead of hanging.
import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
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

export interface RedisStoreOptions {
  /** Prefix of every key; default "aegis". */
  prefix?: string;
  /**
   * Longest wait for one command, in ms; default 5000. A Redis that is away
   * fails at once (no offline queue), so this only bounds a Redis that hangs;
   * it must not turn a slow moment under load into a 503.
   */
  commandTimeoutMs?: number;
  /** Selector assignments held at most; default SELECTOR_ASSIGNMENTS_MAX (tests set a small one). */
  selectorAssignmentsMax?: number;
}

// KEYS: the desired state's version. ARGV: the assignment keys' prefix
// ("<prefix>:{a}"), the If-Match version or "", the hosts a changed selector
// matches (a JSON array: one argument, however many), the versions the hosts
// checked must still be at (a JSON object, host → version), the cap on
// selector assignments, then per change: "add"
// | "rem", artifact id, "h" (a host) | "s" (a selector), host id or
// selector. Every change, the desired version and the versions of the hosts
// whose own sets changed (and of the matched hosts, if anything changed)
// move together, or nothing does (a stale version, of the desired state or
// of a host checked; selector assignments past the cap). The cap is checked
// here, not by the caller before: two assigners' adds read under it would
// both pass. Only members not yet in the set count (a re-add at the cap is
// a no-op, not a refusal), replayed in order with the removes. The keys
// share the {a} hash tag, as Redis Cluster needs of one script's keys (this
// client itself is single-node). Returns {1, version, added, removed,
// then host, host version, changed (1|0) per host touched}, {0, version}
// (stale) or {2, version, selector assignments there would be} (over the cap).
const CHANGE_ASSIGNMENTS = `
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= version then return {0, version} end
local p = ARGV[1]
for host, v in pairs(cjson.decode(ARGV[4])) do
  if tonumber(redis.call('GET', p .. ':version:' .. host) or '0') ~= v then return {0, version} end
end
local before = redis.call('SCARD', p .. ':selectors')
local count, member = before, {}
for i = 6, #ARGV, 4 do
  if ARGV[i + 2] == 's' then
    local m = ARGV[i + 1] .. ' ' .. ARGV[i + 3]
    local present = member[m]
    if present == nil then present = redis.call('SISMEMBER', p .. ':selectors', m) == 1 end
    local add = ARGV[i] == 'add'
    if add and not present then count = count + 1 elseif present and not add then count = count - 1 end
    member[m] = add
  end
end
if count > tonumber(ARGV[5]) and count > before then return {2, version, count} end
local added, removed = 0, 0
local touched, order = {}, {}
for i = 6, #ARGV, 4 do
  local add, artifact, kind, x = ARGV[i] == 'add', ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local changed
  if kind == 'h' then
    if add then
      changed = redis.call('SADD', p .. ':host:' .. x, artifact)
      redis.call('SADD', p .. ':hosts:' .. artifact, x)
      redis.call('SADD', p .. ':direct', artifact .. ' ' .. x)
    else
      changed = redis.call('SREM', p .. ':host:' .. x, artifact)
      redis.call('SREM', p .. ':hosts:' .. artifact, x)
      redis.call('SREM', p .. ':direct', artifact .. ' ' .. x)
    end
    if touched[x] == nil then table.insert(order, x) end
    touched[x] = touched[x] or changed == 1
  elseif add then
    changed = redis.call('SADD', p .. ':selectors', artifact .. ' ' .. x)
  else
    changed = redis.call('SREM', p .. ':selectors', artifact .. ' ' .. x)
  end
  if changed == 1 then
    if add then added = added + 1 else removed = removed + 1 end
  end
end
for _, x in ipairs(cjson.decode(ARGV[3])) do
  if touched[x] == nil then table.insert(order, x); touched[x] = false end
  if added + removed > 0 then touched[x] = true end
end
if added + removed > 0 then version = redis.call('INCR', KEYS[1]) end
local out = {1, version, added, removed}
for _, host in ipairs(order) do
  table.insert(out, host)
  if touched[host] then
    table.insert(out, redis.call('INCR', p .. ':version:' .. host))
    table.insert(out, 1)
  else
    table.insert(out, tonumber(redis.call('GET', p .. ':version:' .. host) or '0'))
    table.insert(out, 0)
  end
end
return out
`;

// KEYS: the rollouts' sorted set, the rollout's key, the set of active ids.
// ARGV: its id, its JSON, "1" when it is active (running, rolling back).
// Stores it; a new id scores one above the highest, so the set is in the
// order rollouts were first stored. The active set moves with the record, so
// ?active=true reads only the active ones' records (each up to 8 MiB).
const PUT_ROLLOUT = `
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false then
  local top = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  redis.call('ZADD', KEYS[1], (tonumber(top[2]) or 0) + 1, ARGV[1])
end
redis.call('SET', KEYS[2], ARGV[2])
if ARGV[3] == '1' then redis.call('SADD', KEYS[3], ARGV[1]) else redis.call('SREM', KEYS[3], ARGV[1]) end
`;

// KEYS: the host's agent pointer. ARGV: key prefix, agent uid, agent JSON,
// its public key, token hash, token JSON. Checks the host's binding and
// replaces its agent in one step, so of two registrations completing at once
// for one host only a key that already holds it (or the first) wins.
// Returns {1, replaced uid or ""} or {0, holder uid}.
const BIND_AGENT = `
local p = ARGV[1]
local previous = redis.call('GET', KEYS[1])
if previous then
  local record = redis.call('GET', p .. ':agent:' .. previous)
  if record and cjson.decode(record).publicKey ~= ARGV[4] then return {0, previous} end
  for _, hash in ipairs(redis.call('SMEMBERS', p .. ':agenttokens:' .. previous)) do
    redis.call('DEL', p .. ':token:' .. hash)
  end
  redis.call('DEL', p .. ':agent:' .. previous, p .. ':agenttokens:' .. previous)
  redis.call('SREM', p .. ':agents', previous)
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', p .. ':agent:' .. ARGV[2], ARGV[3])
redis.call('SADD', p .. ':agents', ARGV[2])
redis.call('SET', p .. ':token:' .. ARGV[5], ARGV[6])
redis.call('SADD', p .. ':agenttokens:' .. ARGV[2], ARGV[5])
return {1, previous or ''}
`;

// KEYS: the registration, the host's pending set, the global pending set
// (sorted sets scored by expiry). ARGV: now ms, expiry ms, ttl s, JSON,
// per-host cap, total cap. Returns 1 when stored, 0 when over a cap.
const PUT_REGISTRATION = `
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) or redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[6]) then return 0 end
redis.call('SET', KEYS[1], ARGV[4], 'EX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], KEYS[1])
redis.call('PEXPIREAT', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[2], KEYS[1])
return 1
`;

// KEYS: the registration, the global pending set. ARGV: key prefix. Takes it
// once (many assigners may race for one nonce) and frees its place in the caps.
const TAKE_REGISTRATION = `
local text = redis.call('GETDEL', KEYS[1])
if not text then return false end
redis.call('ZREM', KEYS[2], KEYS[1])
redis.call('ZREM', ARGV[1] .. ':registrations:host:' .. cjson.decode(text).hostId, KEYS[1])
return text
`;

// KEYS: a host's binding. ARGV: an agent uid. Deletes the binding only while it names that agent.
const UNBIND_HOST = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

// KEYS: the artifact's status hash, the host's, the artifact's summary hash.
// ARGV: host id, artifact id, status JSON, its seq ("" for none), the
// summary's JSON (no counters, no receipt). Refuses (0) a status whose seq
// is not above the stored one's, in the same step as the write: two
// assigners of a queue group cannot let an older message overwrite a newer
// one. The summary is written in that step, so ?view=summary (polled each
// second by a rollout) reads it alone and agrees with the full record.
const PUT_STATUS = `
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old and ARGV[4] ~= '' then
  local ok, stored = pcall(cjson.decode, old)
  if ok and type(stored.seq) == 'number' and stored.seq >= tonumber(ARGV[4]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[5])
return 1
`;

function splitSelector(member: string): { artifactId: string; selector: string } {
  const space = member.indexOf(" ");
  return { artifactId: member.slice(0, space), selector: member.slice(space + 1) };
}

function parse<T>(text: string | null | undefined): T | undefined {
  return text ? (JSON.parse(text) as T) : undefined;
}

/**
 * Error answers of a Redis that cannot serve now, not faults of the request:
 * out of memory under `noeviction`, a failed save that stops writes, a
 * replica after a failover, still loading its data, a script running long.
 * https://redis.io/docs/latest/develop/reference/protocol-spec/#simple-errors
 */
const UNAVAILABLE_REPLIES = /^(OOM|MISCONF|READONLY|LOADING|MASTERDOWN|NOREPLICAS|BUSY|TRYAGAIN|CLUSTERDOWN)\b/;

/** An epoch no server has: while the server's run id is not known. */
function unknownEpoch(): string {
  return randomBytes(8).toString("hex");
}

export class RedisStore implements AssignerStore {
  /**
   * versionEpoch: the server's run id, read on each connection; a random one
   * from the moment a connection closes until it is read, so no version read
   * from a server since is taken for one of the server before.
   */
  private runId = unknownEpoch();
  private readonly redis: Redis;
  private readonly p: string;
  private readonly selectorAssignmentsMax: number;

  constructor(url: string, options: RedisStoreOptions = {}) {
    this.p = options.prefix ?? "aegis";
    this.selectorAssignmentsMax = options.selectorAssignmentsMax ?? SELECTOR_ASSIGNMENTS_MAX;
    this.redis = new Redis(url, {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: options.commandTimeoutMs ?? 5000,
      connectTimeout: 1000,
      // Keep trying to reconnect, at most a second apart, forever.
      retryStrategy: (times) => Math.min(times * 100, 1000),
      lazyConnect: true,
    });
    // Connection errors surface through commands; without a listener ioredis logs them.
    this.redis.on("error", () => {});
    this.redis.on("close", () => (this.runId = unknownEpoch()));
    this.redis.on("ready", () => void this.readRunId());
  }

  /** Connects, or throws StoreUnavailableError. The store keeps reconnecting in the background either way. */
  async connect(): Promise<void> {
    await this.run(() => this.redis.connect());
    await this.readRunId();
  }

  /**
   * The server's run id (INFO server), versionEpoch: unchanged, a random one,
   * if it cannot be read (a reconnection reads it again), or for good where
   * the server refuses INFO to the assigner's user: each assigner then has
   * its own epoch, and an agent's ETag holds only at the one that gave it.
   */
  private async readRunId(): Promise<void> {
    const info = await this.redis.info("server").catch(() => "");
    const runId = /^run_id:([0-9a-f]{16})/m.exec(info)?.[1];
    if (runId) this.runId = runId;
  }

  /**
   * Runs a command, turning connection trouble, and the answers of a Redis
   * that cannot serve now (UNAVAILABLE_REPLIES), into StoreUnavailableError
   * (503). Any other error answer is a fault (500, logged): without the
   * command's arguments, which ioredis attaches (nonces, whole records).
   */
  private async run<T>(command: () => Promise<T>): Promise<T> {
    try {
      return await command();
    } catch (err) {
      if ((err as Error).name === "ReplyError") {
        const reply = err as Error & { command?: { name?: string }; previousErrors?: Error[] };
        // A transaction refused as a whole (EXECABORT) names why in the errors of the commands it queued.
        const kind = [reply, ...(reply.previousErrors ?? [])].map((e) => UNAVAILABLE_REPLIES.exec(e.message)?.[1]).find((k) => k !== undefined);
        const cause = new Error(`Redis ${reply.command?.name ?? "command"}: ${reply.message}`);
        if (kind) throw new StoreUnavailableError(`Redis cannot serve this now (${kind})`, { cause });
        throw cause;
      }
      // ioredis's own words (its state, the address) stay in the cause, for the logs: callers, authenticated or not, read the answer.
      throw new StoreUnavailableError("Redis is unavailable", { cause: err });
    }
  }

  // Assignment keys share the {a} hash tag (see CHANGE_ASSIGNMENT).
  private hostSet = (hostId: string) => `${this.p}:{a}:host:${hostId}`;
  private hostVersionKey = (hostId: string) => `${this.p}:{a}:version:${hostId}`;
  private artifactHostsKey = (artifactId: string) => `${this.p}:{a}:hosts:${artifactId}`;
  private artifactKey = (id: string) => `${this.p}:artifact:${id}`;

  /**
   * The record and its place in the list in one transaction: the list entry
   * is added whether or not the record was new, so no failure part-way can
   * leave an artifact stored but never listed.
   */
  async putArtifact(record: ArtifactRecord): Promise<boolean> {
    const replies = await this.run(() => this.redis.multi().set(this.artifactKey(record.id), JSON.stringify(record), "NX").sadd(`${this.p}:artifacts`, record.id).exec());
    const failed = replies?.find(([err]) => err)?.[0];
    if (failed) throw failed; // a reply error, as run() passes on
    return replies?.[0]?.[1] === "OK";
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

  private get assignmentsPrefix() {
    return `${this.p}:{a}`;
  }

  async changeAssignments(changes: AssignmentChange[], ifVersion?: number, alsoMoved: readonly string[] = [], ifHostVersions: ReadonlyMap<string, number> = new Map()): Promise<ChangeResult> {
    const args = changes.flatMap(({ add, artifactId, target }) => [add ? "add" : "rem", artifactId, "hostId" in target ? "h" : "s", "hostId" in target ? target.hostId : target.selector]);
    // An object, not a list (cjson makes an empty object of {} and of []): host → version.
    const hostVersions = JSON.stringify(Object.fromEntries(ifHostVersions));
    const reply = (await this.run(() =>
      this.redis.eval(CHANGE_ASSIGNMENTS, 1, `${this.p}:{a}:desired`, this.assignmentsPrefix, ifVersion === undefined ? "" : String(ifVersion), JSON.stringify(alsoMoved), hostVersions, this.selectorAssignmentsMax, ...args),
    )) as (number | string)[];
    const [applied, version, added, removed] = reply as number[];
    if (applied === 2) return { applied: false, version: version!, selectorsOver: { count: added!, max: this.selectorAssignmentsMax } };
    if (applied !== 1) return { applied: false, version: version! };
    const hosts: { hostId: string; version: number; changed: boolean }[] = [];
    for (let i = 4; i < reply.length; i += 3) hosts.push({ hostId: String(reply[i]), version: Number(reply[i + 1]), changed: reply[i + 2] === 1 });
    return { applied: true, version: version!, added: added!, removed: removed!, hosts };
  }

  async desiredState(): Promise<DesiredState> {
    const replies = await this.run(() => this.redis.multi().get(`${this.p}:{a}:desired`).smembers(`${this.p}:{a}:direct`).smembers(`${this.p}:{a}:selectors`).exec());
    const [[, version], [, direct], [, selectors]] = replies as [[unknown, string | null], [unknown, string[]], [unknown, string[]]];
    return {
      version: Number(version ?? 0),
      direct: direct.map((member) => ({ artifactId: member.slice(0, member.indexOf(" ")), hostId: member.slice(member.indexOf(" ") + 1) })),
      selectors: selectors.map(splitSelector),
    };
  }

  async hostDesired(hostId: string): Promise<HostDesired> {
    // The version first in one transaction: what is read with it is no older than it.
    const replies = await this.run(() => this.redis.multi().get(this.hostVersionKey(hostId)).smembers(this.hostSet(hostId)).smembers(`${this.p}:{a}:selectors`).exec());
    const [[, version], [, members], [, selectors]] = replies as [[unknown, string | null], [unknown, string[]], [unknown, string[]]];
    return { version: Number(version ?? 0), artifactIds: members.sort(), selectors: selectors.map(splitSelector) };
  }

  async putRollout(rollout: RolloutJson): Promise<void> {
    const key = `${this.p}:rollouts`;
    // Ordered by when this store first took each (as the embedded store's), not by the client's started_at: a
    // rollout that says it started long ago must not be trimmed as the oldest the moment it is stored. A new one
    // scores above the highest (stores older than this kept start times in ms as scores: still below).
    const active = ROLLOUT_ACTIVE_STATES.has(rollout.state) ? "1" : "0";
    await this.run(() => this.redis.eval(PUT_ROLLOUT, 3, key, `${this.p}:rollout:${rollout.id}`, this.activeRolloutsKey, rollout.id, JSON.stringify(rollout), active));
    const old = await this.run(() => this.redis.zrange(key, "0", String(-(ROLLOUTS_KEPT + 1))));
    if (old.length > 0) {
      await this.run(() =>
        this.redis
          .multi()
          .zrem(key, ...old)
          .srem(this.activeRolloutsKey, ...old)
          .del(...old.map((id) => `${this.p}:rollout:${id}`))
          .exec(),
      );
    }
  }

  private get activeRolloutsKey() {
    return `${this.p}:rollouts:active`;
  }

  /**
   * The ids in order (a hundred short strings), then the records of the
   * active ones alone. A store written before the active set was kept has
   * none: it is built once from every record (marked done), and a put since
   * adds its own; an id left in it by that race is filtered out by its
   * record's state.
   */
  async listActiveRollouts(): Promise<RolloutJson[]> {
    const marker = `${this.p}:rollouts:active-indexed`;
    if ((await this.run(() => this.redis.exists(marker))) === 0) {
      const active = (await this.listRollouts()).filter((r) => ROLLOUT_ACTIVE_STATES.has(r.state)).map((r) => r.id);
      const index = this.redis.multi();
      if (active.length > 0) index.sadd(this.activeRolloutsKey, ...active);
      await this.run(() => index.set(marker, "1").exec());
    }
    const [[, ids], [, active]] = (await this.run(() => this.redis.multi().zrevrange(`${this.p}:rollouts`, 0, -1).smembers(this.activeRolloutsKey).exec())) as [[unknown, string[]], [unknown, string[]]];
    const activeIds = new Set(active);
    const wanted = ids.filter((id) => activeIds.has(id));
    if (wanted.length === 0) return [];
    const values = await this.run(() => this.redis.mget(wanted.map((id) => `${this.p}:rollout:${id}`)));
    return values.flatMap((v) => parse<RolloutJson>(v) ?? []).filter((r) => ROLLOUT_ACTIVE_STATES.has(r.state));
  }

  async getRollout(id: string): Promise<RolloutJson | undefined> {
    return parse(await this.run(() => this.redis.get(`${this.p}:rollout:${id}`)));
  }

  async listRollouts(): Promise<RolloutJson[]> {
    const ids = await this.run(() => this.redis.zrevrange(`${this.p}:rollouts`, 0, -1));
    if (ids.length === 0) return [];
    const values = await this.run(() => this.redis.mget(ids.map((id) => `${this.p}:rollout:${id}`)));
    return values.flatMap((v) => parse<RolloutJson>(v) ?? []);
  }

  /**
   * The Redis server's run id, new at each start and on a failover to a
   * replica: the moments its last writes may be lost (appendfsync everysec,
   * an asynchronous replica, a restore), and the versions they moved handed
   * out again for other content. Versions move only forward otherwise (INCR
   * in MULTI/EXEC and scripts).
   */
  versionEpoch(): string {
    return this.runId;
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

  async putRegistration(registration: Registration, ttlSeconds: number, limits: RegistrationLimits): Promise<boolean> {
    const now = Date.now();
    const keys = [`${this.p}:registration:${registration.id}`, `${this.p}:registrations:host:${registration.hostId}`, `${this.p}:registrations`];
    const args = [now, now + ttlSeconds * 1000, ttlSeconds, JSON.stringify(registration), limits.perHost, limits.total];
    return (await this.run(() => this.redis.eval(PUT_REGISTRATION, 3, ...keys, ...args))) === 1;
  }

  async takeRegistration(id: string): Promise<Registration | undefined> {
    const keys = [`${this.p}:registration:${id}`, `${this.p}:registrations`];
    return parse((await this.run(() => this.redis.eval(TAKE_REGISTRATION, 2, ...keys, this.p))) as string | null);
  }

  async bindAgent(agent: AgentRecord, tokenHash: string): Promise<BindResult> {
    const token: TokenRecord = { agentUid: agent.uid, hostId: agent.hostId };
    const args = [this.p, agent.uid, JSON.stringify(agent), agent.publicKey, tokenHash, JSON.stringify(token)];
    const [bound, other] = (await this.run(() => this.redis.eval(BIND_AGENT, 1, `${this.p}:hostagent:${agent.hostId}`, ...args))) as [number, string];
    if (bound === 1) return other ? { bound: true, replaced: other } : { bound: true };
    const holder = await this.getAgent(other);
    // The holder vanished between the script and this read: say so as a conflict all the same.
    return { bound: false, holder: holder ?? { ...agent, uid: other } };
  }

  /**
   * Deletes an agent in the order that is safe to stop at any step: its
   * tokens first (a stolen one stops working before anything else changes),
   * then its host's binding, only while the binding still names this agent
   * (in one script: a host bound again since keeps its new agent), and its
   * record last, so a retry after a failure part-way finds it and finishes.
   */
  async deleteAgent(uid: string): Promise<boolean> {
    const agent = await this.getAgent(uid);
    if (!agent) return false;
    const hashes = await this.run(() => this.redis.smembers(`${this.p}:agenttokens:${uid}`));
    const revoke = this.redis.multi();
    for (const hash of hashes) revoke.del(`${this.p}:token:${hash}`);
    await this.run(() => revoke.del(`${this.p}:agenttokens:${uid}`).exec());
    await this.run(() => this.redis.eval(UNBIND_HOST, 1, `${this.p}:hostagent:${agent.hostId}`, uid));
    await this.run(() => this.redis.multi().del(`${this.p}:agent:${uid}`).srem(`${this.p}:agents`, uid).exec());
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

  async getAgentsByHosts(hostIds: readonly string[]): Promise<(AgentRecord | undefined)[]> {
    if (hostIds.length === 0) return [];
    const uids = await this.run(() => this.redis.mget(hostIds.map((h) => `${this.p}:hostagent:${h}`)));
    const bound = uids.flatMap((uid) => (uid ? [uid] : []));
    const records = bound.length === 0 ? [] : await this.run(() => this.redis.mget(bound.map((uid) => `${this.p}:agent:${uid}`)));
    const byUid = new Map(bound.map((uid, i) => [uid, parse<AgentRecord>(records[i])]));
    return uids.map((uid) => (uid ? byUid.get(uid) : undefined));
  }

  /** Three commands, and one more per thousand agents (two per agent made a rollout's listing of thousands of hosts thousands of round trips). */
  async listAgents(): Promise<AgentRecord[]> {
    const uids = (await this.run(() => this.redis.smembers(`${this.p}:agents`))).sort();
    if (uids.length === 0) return [];
    const agents = (await this.run(() => this.redis.mget(uids.map((uid) => `${this.p}:agent:${uid}`)))).flatMap((v) => parse<AgentRecord>(v) ?? []);
    if (agents.length === 0) return [];
    // HMGET takes its fields as arguments: a thousand at a time, never a fleet's worth spread into one call.
    const seen: (string | null)[] = [];
    for (let i = 0; i < agents.length; i += 1000) seen.push(...(await this.run(() => this.redis.hmget(`${this.p}:lastseen`, ...agents.slice(i, i + 1000).map((a) => a.hostId)))));
    return agents.map((agent, i) => (seen[i] ? { ...agent, lastSeen: seen[i] } : agent));
  }

  async touchAgent(hostId: string, time: string): Promise<void> {
    await this.run(() => this.redis.hset(`${this.p}:lastseen`, hostId, time));
  }

  async getToken(hash: string): Promise<TokenRecord | undefined> {
    return parse(await this.run(() => this.redis.get(`${this.p}:token:${hash}`)));
  }

  async putStatus(status: StatusRecord): Promise<boolean> {
    const keys = [`${this.p}:status:${status.artifactId}`, `${this.p}:hoststatus:${status.hostId}`, this.summaryKey(status.artifactId)];
    const args = [status.hostId, status.artifactId, JSON.stringify(status), status.seq === undefined ? "" : String(status.seq), JSON.stringify(statusSummary(status))];
    return (await this.run(() => this.redis.eval(PUT_STATUS, 3, ...keys, ...args))) === 1;
  }

  private summaryKey = (artifactId: string) => `${this.p}:statussummary:${artifactId}`;

  /**
   * The summary hash alone, with the full one's length in the same
   * transaction. Statuses stored before summaries were kept have none: when
   * the full hash holds more hosts, those are read in full once and their
   * summaries added with HSETNX (a status written since has its own, which
   * is newer and stays).
   */
  async artifactStatusSummary(artifactId: string): Promise<StatusSummary[]> {
    const full = `${this.p}:status:${artifactId}`;
    const [[, hosts], [, stored]] = (await this.run(() => this.redis.multi().hlen(full).hgetall(this.summaryKey(artifactId)).exec())) as [[unknown, number], [unknown, Record<string, string>]];
    const summaries = Object.values(stored).map((v) => JSON.parse(v) as StatusSummary);
    if (hosts <= summaries.length) return summaries;
    const missing = (await this.artifactStatus(artifactId)).filter((status) => !Object.hasOwn(stored, status.hostId));
    const backfill = this.redis.multi();
    for (const status of missing) backfill.hsetnx(this.summaryKey(artifactId), status.hostId, JSON.stringify(statusSummary(status)));
    await this.run(() => backfill.exec());
    return [...summaries, ...missing.map(statusSummary)];
  }

  async artifactStatus(artifactId: string): Promise<StatusRecord[]> {
    return Object.values(await this.run(() => this.redis.hgetall(`${this.p}:status:${artifactId}`))).map((v) => JSON.parse(v) as StatusRecord);
  }

  async hasStatus(artifactId: string, hostId: string): Promise<boolean> {
    return (await this.run(() => this.redis.hexists(`${this.p}:status:${artifactId}`, hostId))) === 1;
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
