// One conformance suite, run against the embedded store and the Redis store.
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StoreUnavailableError } from "../../assigner/errors.js";
import { EmbeddedStore } from "../../assigner/store/embedded.js";
import { RedisStore } from "../../assigner/store/redis.js";
import { Redis } from "ioredis";
import { ROLLOUTS_KEPT, type ArtifactRecord, type AssignerStore } from "../../assigner/store/store.js";
import { TEMP_SUFFIX } from "../../util/index.js";
import { startRedis, type TcpServer } from "../harness/tcp-server.js";

let redis: TcpServer;
const dir = mkdtempSync(join(tmpdir(), "aegis-store-"));
let counter = 0;
const LIMITS = { perHost: 10, total: 100 };
const opened: AssignerStore[] = [];

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await Promise.all(opened.map((s) => s.close()));
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function artifact(n: number): ArtifactRecord {
  const id = `sha256:${n.toString(16).padStart(64, "0")}`;
  return { id, reference: `127.0.0.1:5000/p@${id}`, name: `p${n}`, version: "1.0.0", description: "", size: 10, layerDigest: id, metadata: {}, signature: "", createdAt: new Date(0).toISOString() };
}

/** One host assignment added or removed, as the single-assignment routes make it: whether it changed, and the host's version. */
async function change(store: AssignerStore, artifactId: string, hostId: string, add: boolean): Promise<{ changed: boolean; version: number }> {
  const result = await store.changeAssignments([{ add, artifactId, target: { hostId } }]);
  if (!result.applied) throw new Error("an unconditional change was refused");
  return { changed: result.hosts[0]!.changed, version: result.hosts[0]!.version };
}
const assign = (store: AssignerStore, artifactId: string, hostId: string) => change(store, artifactId, hostId, true);
const unassign = (store: AssignerStore, artifactId: string, hostId: string) => change(store, artifactId, hostId, false);

/** A host's own set and version (what hostDesired reads with the selectors). */
async function hostAssignments(store: AssignerStore, hostId: string): Promise<{ version: number; artifactIds: string[] }> {
  const { version, artifactIds } = await store.hostDesired(hostId);
  return { version, artifactIds };
}

/** What a test may set of a store's options (both implementations take them). */
type StoreOptions = { selectorAssignmentsMax?: number };

const implementations: [string, (options?: StoreOptions) => Promise<AssignerStore>, (s: AssignerStore, options?: StoreOptions) => Promise<AssignerStore>][] = [
  [
    "embedded",
    async (options) => EmbeddedStore.open(join(dir, `store-${counter++}.json`), options),
    async (s, options) => {
      await s.close();
      return EmbeddedStore.open((s as EmbeddedStore).file, options);
    },
  ],
  [
    "redis",
    async (options) => {
      const store = new RedisStore(redis.url, { prefix: `t${counter++}`, ...options });
      await store.connect();
      return store;
    },
    // The same keys: another assigner's store, or this one started again (with other options, when given).
    async (s, options) => {
      if (!options) return s;
      const store = new RedisStore(redis.url, { prefix: (s as RedisStore)["p"], ...options });
      await store.connect();
      return store;
    },
  ],
];

describe.each(implementations)("AssignerStore conformance: %s", (_name, open, reopen) => {
  async function fresh(options?: StoreOptions): Promise<AssignerStore> {
    const store = await open(options);
    opened.push(store);
    return store;
  }

  it("stores artifacts once (idempotent by id)", async () => {
    const store = await fresh();
    expect(await store.putArtifact(artifact(1))).toBe(true);
    expect(await store.putArtifact({ ...artifact(1), name: "changed" })).toBe(false);
    expect((await store.getArtifact(artifact(1).id))?.name).toBe("p1");
    expect(await store.getArtifact(artifact(2).id)).toBeUndefined();
    await store.putArtifact(artifact(2));
    expect((await store.listArtifacts()).map((a) => a.name).sort()).toEqual(["p1", "p2"]);
    expect((await store.getArtifacts([artifact(2).id, artifact(3).id])).map((a) => a?.name)).toEqual(["p2", undefined]);
  });

  it("assigns and unassigns, moving the host version only on a change", async () => {
    const store = await fresh();
    const a = artifact(1).id;
    const b = artifact(2).id;
    expect(await hostAssignments(store, "h1")).toEqual({ version: 0, artifactIds: [] });
    expect(await assign(store, a, "h1")).toEqual({ changed: true, version: 1 });
    expect(await assign(store, a, "h1")).toEqual({ changed: false, version: 1 });
    expect(await assign(store, b, "h1")).toEqual({ changed: true, version: 2 });
    await assign(store, a, "h2");
    expect(await hostAssignments(store, "h1")).toEqual({ version: 2, artifactIds: [a, b].sort() });
    expect(await store.artifactHosts(a)).toEqual(["h1", "h2"]);
    expect(await unassign(store, a, "h1")).toEqual({ changed: true, version: 3 });
    expect(await unassign(store, a, "h1")).toEqual({ changed: false, version: 3 });
    expect(await store.hostVersion("h1")).toBe(3);
    expect(await store.artifactHosts(a)).toEqual(["h2"]);
  });

  it("keeps exact sets under concurrent changes", async () => {
    const store = await fresh();
    const ids = [1, 2, 3, 4].map((n) => artifact(n).id);
    // Each (artifact, host) pair gets one kind of operation, twice (a repeat is a no-op),
    // so the final sets and versions are known whatever the interleaving.
    const pairs = ids.flatMap((id, a) => Array.from({ length: 10 }, (_, h) => ({ id, host: `h${h}`, add: (a + h) % 3 !== 0 })));
    for (const p of pairs.filter((p) => !p.add)) await assign(store, p.id, p.host);
    await Promise.all([...pairs, ...pairs].map((p) => (p.add ? assign(store, p.id, p.host) : unassign(store, p.id, p.host))));
    for (let h = 0; h < 10; h++) {
      const mine = pairs.filter((p) => p.host === `h${h}`);
      const { artifactIds, version } = await hostAssignments(store, `h${h}`);
      expect(artifactIds).toEqual(mine.filter((p) => p.add).map((p) => p.id).sort());
      // One step per pre-assignment and one per effective change.
      expect(version).toBe(mine.filter((p) => !p.add).length * 2 + mine.filter((p) => p.add).length);
    }
  });

  it("treats host ids like constructor or toString as plain names", async () => {
    const store = await fresh();
    for (const host of ["constructor", "toString", "hasOwnProperty"]) {
      expect(await assign(store, artifact(1).id, host)).toEqual({ changed: true, version: 1 });
      expect(await hostAssignments(store, host)).toEqual({ version: 1, artifactIds: [artifact(1).id] });
      expect(await store.hostStatus(host)).toEqual([]);
      expect(await store.getAgentByHost(host)).toBeUndefined();
    }
  });

  it("replaces an artifact's record and moves a host's version on request", async () => {
    const store = await fresh();
    await store.putArtifact(artifact(5));
    await store.replaceArtifact({ ...artifact(5), signature: "c2ln" });
    expect((await store.getArtifact(artifact(5).id))?.signature).toBe("c2ln");
    await assign(store, artifact(5).id, "h5");
    expect(await store.bumpHostVersion("h5")).toBe(2);
    expect(await hostAssignments(store, "h5")).toEqual({ version: 2, artifactIds: [artifact(5).id] });
  });

  it("hands out a registration once, and not after it expires", async () => {
    const store = await fresh();
    const reg = { id: "r1", hostId: "h1", publicKey: "k", nonce: "n" };
    await store.putRegistration(reg, 60, LIMITS);
    expect(await store.takeRegistration("r1")).toEqual(reg);
    expect(await store.takeRegistration("r1")).toBeUndefined();
    await store.putRegistration({ ...reg, id: "r2" }, 1, LIMITS);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    expect(await store.takeRegistration("r2")).toBeUndefined();
  });

  it("caps pending registrations per host and in all, and frees a place when one is taken", async () => {
    const store = await fresh();
    const limits = { perHost: 2, total: 3 };
    const reg = (id: string, hostId: string) => ({ id, hostId, publicKey: "k", nonce: "n" });
    const put = (id: string, hostId: string) => store.putRegistration(reg(id, hostId), 60, limits);
    expect([await put("a1", "a"), await put("a2", "a"), await put("a3", "a")], "host a: third over the per-host cap").toEqual([true, true, false]);
    expect([await put("b1", "b"), await put("b2", "b")], "host b: second over the total cap").toEqual([true, false]);
    expect(await store.takeRegistration("a1")).toEqual(reg("a1", "a"));
    expect(await put("a3", "a"), "a taken registration frees its place").toBe(true);
  });

  it("binds a host to its first key: the same key replaces its agent and old tokens, another key is refused", async () => {
    const store = await fresh();
    const agent = { uid: "u1", hostId: "h1", publicKey: "k", capabilities: { kernelVersion: "6.8.0", btf: true, bpfLoop: true, clsact: true }, registeredAt: new Date(0).toISOString() };
    expect(await store.bindAgent(agent, "old")).toEqual({ bound: true });
    expect((await store.getAgent("u1"))?.capabilities, "capabilities kept").toEqual(agent.capabilities);
    expect(await store.bindAgent({ ...agent, uid: "u2" }, "new")).toEqual({ bound: true, replaced: "u1" });
    const refused = await store.bindAgent({ ...agent, uid: "u3", publicKey: "other" }, "stolen");
    expect(refused.bound ? "bound" : refused.holder.uid, "another key is refused, naming the holder").toBe("u2");
    expect((await store.listAgents()).map((a) => a.uid)).toEqual(["u2"]);
    expect((await store.getAgentByHost("h1"))?.uid).toBe("u2");
    expect(await store.getToken("old")).toBeUndefined();
    expect(await store.getToken("stolen")).toBeUndefined();
    expect(await store.getToken("new")).toEqual({ agentUid: "u2", hostId: "h1" });
    expect(await store.deleteAgent("u2")).toBe(true);
    expect(await store.deleteAgent("u2")).toBe(false);
    expect(await store.getToken("new")).toBeUndefined();
    expect(await store.getAgentByHost("h1")).toBeUndefined();
    expect(await store.bindAgent({ ...agent, uid: "u4", publicKey: "other" }, "t4"), "a removed agent frees the host").toEqual({ bound: true });
  });

  it("binds once under concurrency: of 20 keys one wins; of 20 completions by one key one token lives", async () => {
    const store = await fresh();
    const agent = (uid: string, publicKey: string) => ({ uid, hostId: "race", publicKey, registeredAt: new Date(0).toISOString() });
    const keys = await Promise.all(Array.from({ length: 20 }, (_, i) => store.bindAgent(agent(`k${i}`, `key${i}`), `kt${i}`)));
    const winners = keys.flatMap((r, i) => (r.bound ? [i] : []));
    expect(winners, "exactly one of 20 different keys binds the host").toHaveLength(1);
    const live = (await Promise.all(keys.map((_, i) => store.getToken(`kt${i}`)))).flatMap((t, i) => (t ? [i] : []));
    expect(live, "only the winner's token lives").toEqual(winners);
    const winnerKey = `key${winners[0]}`;
    await Promise.all(Array.from({ length: 20 }, (_, i) => store.bindAgent(agent(`s${i}`, winnerKey), `st${i}`)));
    const tokens = (await Promise.all(Array.from({ length: 20 }, (_, i) => store.getToken(`st${i}`)))).flatMap((t, i) => (t ? [`st${i}`] : []));
    expect(tokens, "one live token after 20 concurrent completions by one key").toHaveLength(1);
    expect(await store.getToken(`kt${winners[0]}`), "the first agent's token is revoked").toBeUndefined();
    expect((await store.listAgents()).filter((a) => a.hostId === "race"), "one agent for the host").toHaveLength(1);
  });

  it("keeps last-seen, tokens and status", async () => {
    const store = await fresh();
    const agent = { uid: "u2", hostId: "h1", publicKey: "k", registeredAt: new Date(0).toISOString() };
    await store.bindAgent(agent, "hash");
    await store.touchAgent("h1", "2026-01-01T00:00:00.000Z");
    expect((await store.getAgent("u2"))?.lastSeen).toBe("2026-01-01T00:00:00.000Z");
    await store.bindAgent({ ...agent, uid: "u1", hostId: "h0" }, "hash-0");
    expect((await store.listAgents()).map((a) => [a.uid, a.hostId, a.lastSeen]), "the listing, by uid, each with its own last-seen").toEqual([
      ["u1", "h0", undefined],
      ["u2", "h1", "2026-01-01T00:00:00.000Z"],
    ]);
    expect((await store.getAgentsByHosts(["h1", "nobody", "h0"])).map((a) => a?.uid), "by host, in the order asked").toEqual(["u2", undefined, "u1"]);
    expect(await store.getAgentsByHosts([]), "none asked").toEqual([]);
    expect(await store.getToken("hash")).toEqual({ agentUid: "u2", hostId: "h1" });
    expect(await store.getToken("other")).toBeUndefined();
    const status = { hostId: "h1", artifactId: artifact(1).id, event: "attached", time: "2026-01-01T00:00:00.000Z" };
    expect(await store.hasStatus(artifact(1).id, "h1"), "no status yet").toBe(false);
    await store.putStatus(status);
    expect([await store.hasStatus(artifact(1).id, "h1"), await store.hasStatus(artifact(1).id, "h2"), await store.hasStatus(artifact(2).id, "h1")], "h1's status on artifact 1, only").toEqual([true, false, false]);
    await store.putStatus({ ...status, event: "failed", reason: "x" });
    expect(await store.artifactStatus(artifact(1).id)).toEqual([{ ...status, event: "failed", reason: "x" }]);
    expect(await store.hostStatus("h1")).toHaveLength(1);
  });

  it("replaces a status only with one of a higher seq (replays and overtaken messages are refused)", async () => {
    const store = await fresh();
    const status = { hostId: "h2", artifactId: artifact(2).id, event: "attached", time: "2026-01-01T00:00:00.000Z", seq: 1_700_000_000_000_001 };
    expect(await store.putStatus(status), "first").toBe(true);
    expect(await store.putStatus({ ...status, event: "failed" }), "same seq: a replay").toBe(false);
    expect(await store.putStatus({ ...status, event: "failed", seq: status.seq - 1 }), "lower seq").toBe(false);
    expect(await store.artifactStatus(artifact(2).id), "the first kept").toEqual([status]);
    expect(await store.putStatus({ ...status, event: "detached", seq: status.seq + 1 }), "higher seq").toBe(true);
    expect((await store.hostStatus("h2")).map((s) => s.event), "replaced in the host's view too").toEqual(["detached"]);
  });

  it("caps selector assignments in the change's own step, counting only adds of ones not there", async () => {
    const store = await fresh({ selectorAssignmentsMax: 5 });
    const sel = (n: number, add = true) => ({ add, artifactId: artifact(1).id, target: { selector: `n=${n}` } });
    const count = async () => (await store.desiredState()).selectors.length;
    expect((await store.changeAssignments([1, 2, 3, 4].map((n) => sel(n)))).applied, "four, under the cap of five").toBe(true);
    // Four concurrent single adds, each under the cap when it was read before: one goes in, three are refused.
    const results = await Promise.all([5, 6, 7, 8].map((n) => store.changeAssignments([sel(n)])));
    expect(results.map((r) => r.applied).sort(), "of four concurrent adds at 4 of 5, one applied").toEqual([false, false, false, true]);
    expect(
      results.filter((r) => !r.applied).map((r) => (r.applied ? undefined : r.selectorsOver)),
      "each refused one names the count it would reach and the cap",
    ).toEqual([1, 2, 3].map(() => ({ count: 6, max: 5 })));
    expect(await count(), "never past the cap").toBe(5);
    const version = (await store.desiredState()).version;
    const again = await store.changeAssignments([sel(1)]);
    expect(again, "re-adding one already there at the cap: applied, nothing added, the version unmoved").toMatchObject({ applied: true, added: 0, version });
    expect((await store.changeAssignments([sel(1), sel(2), sel(9)])).applied, "a new one with re-adds at the cap: refused whole").toBe(false);
    expect(await count(), "nothing of the refused change").toBe(5);
    expect(await store.changeAssignments([sel(9)], version - 1), "a stale ifVersion is told as such first, not as over the cap").toEqual({ applied: false, version });
    expect((await store.changeAssignments([sel(9), sel(9, false)])).applied, "added and removed in one change: never counted past the cap").toBe(true);
    expect((await store.changeAssignments([sel(1, false), sel(9)])).applied, "a remove makes room for an add in the same change").toBe(true);
    expect(
      (await store.desiredState()).selectors.map((s) => s.selector).sort(),
      "the selectors after the swap",
    ).toEqual(["n=2", "n=3", "n=4", "n=9", `n=${5 + results.findIndex((r) => r.applied)}`].sort());
  });

  it("lets a store already past a lowered cap on selector assignments shed, and refuses only a rise", async () => {
    const store = await fresh({ selectorAssignmentsMax: 5 });
    const sel = (n: number, add = true) => ({ add, artifactId: artifact(1).id, target: { selector: `n=${n}` } });
    expect((await store.changeAssignments([1, 2, 3, 4, 5].map((n) => sel(n)))).applied, "five, at the cap of five").toBe(true);
    const lowered = await reopen(store, { selectorAssignmentsMax: 3 });
    opened.push(lowered);
    expect((await lowered.changeAssignments([sel(1, false), sel(9)])).applied, "a swap at five of three: no rise").toBe(true);
    const rise = await lowered.changeAssignments([sel(10)]);
    expect(rise.applied ? undefined : rise.selectorsOver, "a rise to six of three").toEqual({ count: 6, max: 3 });
    expect((await lowered.changeAssignments([sel(2, false)])).applied, "a remove").toBe(true);
    expect((await lowered.desiredState()).selectors.map((s) => s.selector).sort(), "after").toEqual(["n=3", "n=4", "n=5", "n=9"]);
  });

  it("keeps a status's summary (no counters, no receipt) with it, replaced and refused with it", async () => {
    const store = await fresh();
    const id = artifact(3).id;
    const full = {
      hostId: "h1",
      artifactId: id,
      event: "attached",
      counters: { "rule-1": 7 },
      receipt: { programId: 12, interfaces: [{ iface: "eth0", direction: "ingress", pref: 1 }], since: "2026-01-01T00:00:00.000Z" },
      time: "2026-01-01T00:00:01.000Z",
      seq: 10,
    };
    expect(await store.artifactStatusSummary(id), "none yet").toEqual([]);
    await store.putStatus(full);
    await store.putStatus({ hostId: "h2", artifactId: id, event: "failed", code: "VERIFY", reason: "bad signature", time: "2026-01-01T00:00:02.000Z" });
    const byHost = async () => (await store.artifactStatusSummary(id)).sort((a, b) => a.hostId.localeCompare(b.hostId));
    expect(await byHost(), "each host's status without counters and receipt").toEqual([
      { hostId: "h1", artifactId: id, event: "attached", time: "2026-01-01T00:00:01.000Z", seq: 10 },
      { hostId: "h2", artifactId: id, event: "failed", code: "VERIFY", reason: "bad signature", time: "2026-01-01T00:00:02.000Z" },
    ]);
    expect(await store.putStatus({ ...full, event: "detached", seq: 9 }), "an older seq").toBe(false);
    expect((await byHost())[0]?.event, "a refused status leaves the summary").toBe("attached");
    expect(await store.putStatus({ ...full, event: "detached", seq: 11 }), "a newer seq").toBe(true);
    expect((await byHost())[0], "the summary replaced with the status").toEqual({ hostId: "h1", artifactId: id, event: "detached", time: "2026-01-01T00:00:01.000Z", seq: 11 });
  });

  it("lists the active rollouts (running, rolling back), newest first, following each one's state", async () => {
    const store = await fresh();
    const rollout = (id: string, state: "running" | "rolling_back" | "completed" | "failed") => ({
      id,
      state,
      changes: [],
      rings: [],
      max_failures: "0",
      ring_timeout_ms: 1000,
      started_at: "2026-01-01T00:00:00.000Z",
      updated_at: "2026-01-01T00:00:00.000Z",
    });
    expect(await store.listActiveRollouts(), "none yet").toEqual([]);
    await store.putRollout(rollout("a", "running"));
    await store.putRollout(rollout("b", "completed"));
    await store.putRollout(rollout("c", "rolling_back"));
    await store.putRollout(rollout("d", "running"));
    expect((await store.listActiveRollouts()).map((r) => r.id), "running and rolling back, newest first").toEqual(["d", "c", "a"]);
    await store.putRollout(rollout("a", "completed"));
    await store.putRollout(rollout("b", "running"));
    await store.putRollout(rollout("d", "failed"));
    expect((await store.listActiveRollouts()).map((r) => [r.id, r.state]), "after a and d ended and b ran again").toEqual([
      ["c", "rolling_back"],
      ["b", "running"],
    ]);
    for (let i = 0; i < ROLLOUTS_KEPT; i++) await store.putRollout(rollout(`n-${i}`, "completed"));
    expect(await store.listActiveRollouts(), "the active ones trimmed with the oldest").toEqual([]);
  });

  it("changes host and selector assignments in one step, moving the desired version only on a change", async () => {
    const store = await fresh();
    const [a, b] = [artifact(1).id, artifact(2).id];
    expect(await store.desiredState()).toEqual({ version: 0, direct: [], selectors: [] });
    const first = await store.changeAssignments([
      { add: true, artifactId: a, target: { hostId: "h1" } },
      { add: true, artifactId: a, target: { selector: "env=prod" } },
      { add: true, artifactId: b, target: { selector: "zone in (a,b)" } },
    ]);
    expect(first, "three adds; h1's own set moved").toEqual({ applied: true, version: 1, added: 3, removed: 0, hosts: [{ hostId: "h1", version: 1, changed: true }] });
    const again = await store.changeAssignments([{ add: true, artifactId: a, target: { hostId: "h1" } }, { add: true, artifactId: a, target: { selector: "env=prod" } }]);
    expect(again, "the same adds again change nothing").toEqual({ applied: true, version: 1, added: 0, removed: 0, hosts: [{ hostId: "h1", version: 1, changed: false }] });
    const state = await store.desiredState();
    expect(state.version).toBe(1);
    expect(state.direct).toEqual([{ artifactId: a, hostId: "h1" }]);
    expect(state.selectors.sort((x, y) => x.selector.localeCompare(y.selector))).toEqual([
      { artifactId: a, selector: "env=prod" },
      { artifactId: b, selector: "zone in (a,b)" },
    ]);
    const host = await store.hostDesired("h1");
    expect({ version: host.version, artifactIds: host.artifactIds, selectors: host.selectors.length }).toEqual({ version: 1, artifactIds: [a], selectors: 2 });
    expect(await assign(store, b, "h2"), "single changes move the desired version too").toEqual({ changed: true, version: 1 });
    expect((await store.desiredState()).version).toBe(2);
    const removed = await store.changeAssignments([{ add: false, artifactId: a, target: { selector: "env=prod" } }, { add: false, artifactId: a, target: { hostId: "h1" } }], 2);
    expect(removed).toEqual({ applied: true, version: 3, added: 0, removed: 2, hosts: [{ hostId: "h1", version: 2, changed: true }] });
    expect((await store.hostDesired("h1")).selectors).toEqual([{ artifactId: b, selector: "zone in (a,b)" }]);
  });

  it("moves the hosts a changed selector matches in the change's own step, and only when something changed", async () => {
    const store = await fresh();
    const [a, b] = [artifact(1).id, artifact(2).id];
    await assign(store, b, "m1"); // m1 at version 1
    const addProd = () => store.changeAssignments([{ add: true, artifactId: a, target: { selector: "env=prod" } }], undefined, ["m1", "m2"]);
    /** The answer: the desired version, the counts, and each matched host as "host version changed". */
    const answer = (r: Awaited<ReturnType<typeof addProd>>) => (r.applied ? [r.version, r.added, r.removed, ...r.hosts.map((h) => `${h.hostId} ${h.version} ${h.changed}`)] : r);
    expect(answer(await addProd()), "the selector added; m1 and m2 (no set of its own yet) moved with it").toEqual([2, 1, 0, "m1 2 true", "m2 1 true"]);
    expect(await store.hostVersion("m2"), "m2's version as stored").toBe(1);
    expect(answer(await addProd()), "nothing changed: nobody moves").toEqual([2, 0, 0, "m1 2 false", "m2 1 false"]);
    const stale = await store.changeAssignments([{ add: false, artifactId: a, target: { selector: "env=prod" } }], 1, ["m1"]);
    expect(stale, "a stale version: nothing applied").toEqual({ applied: false, version: 2 });
    expect(await store.hostVersion("m1"), "m1 unmoved by the refused change").toBe(2);
  });

  it("applies a change only while the hosts checked are at the versions given (ifHostVersions)", async () => {
    const store = await fresh();
    const [a, b] = [artifact(1).id, artifact(2).id];
    await assign(store, a, "v1"); // v1 at version 1; v2 has none (version 0)
    const add = (versions: [string, number][]) => store.changeAssignments([{ add: true, artifactId: b, target: { hostId: "v1" } }], undefined, [], new Map(versions));
    expect(await add([["v1", 0]]), "v1 moved since: refused").toEqual({ applied: false, version: 1 });
    expect(await add([["v1", 1], ["v2", 1]]), "v2 (never assigned) is at 0: refused").toEqual({ applied: false, version: 1 });
    expect((await store.hostDesired("v1")).artifactIds, "nothing written").toEqual([a]);
    expect(await add([["v1", 1], ["v2", 0]]), "both as checked: applied").toEqual({ applied: true, version: 2, added: 1, removed: 0, hosts: [{ hostId: "v1", version: 2, changed: true }] });
    expect((await store.hostDesired("v1")).artifactIds.sort()).toEqual([a, b].sort());
  });

  it("refuses a change planned on a stale version, and of two concurrent changes on one version applies one", async () => {
    const store = await fresh();
    const a = artifact(1).id;
    await store.changeAssignments([{ add: true, artifactId: a, target: { hostId: "h1" } }]);
    expect(await store.changeAssignments([{ add: true, artifactId: a, target: { hostId: "h2" } }], 0), "stale: nothing applied").toEqual({ applied: false, version: 1 });
    expect(await hostAssignments(store, "h2")).toEqual({ version: 0, artifactIds: [] });
    const racers = await Promise.all(Array.from({ length: 10 }, (_, i) => store.changeAssignments([{ add: true, artifactId: a, target: { selector: `n=${i}` } }], 1)));
    expect(racers.filter((r) => r.applied), "exactly one of ten writers on version 1 wins").toHaveLength(1);
    expect((await store.desiredState()).selectors, "only the winner's change is there").toHaveLength(1);
  });

  it("keeps rollouts by id, newest first", async () => {
    const store = await fresh();
    const rollout = (id: string, second: number, state: "running" | "completed" = "running") => ({
      id,
      state,
      changes: [{ to: artifact(1).id, target: "host:h1" }],
      rings: [{ spec: "100%", hosts: 1, state: "pending" as const, in_force: 0, failed: 0, failures: [] }],
      max_failures: "0",
      ring_timeout_ms: 1000,
      started_at: new Date(Date.UTC(2026, 0, 1, 0, 0, second)).toISOString(),
      updated_at: new Date(Date.UTC(2026, 0, 1, 0, 0, second)).toISOString(),
    });
    await store.putRollout(rollout("r1", 1));
    await store.putRollout(rollout("r2", 2));
    await store.putRollout(rollout("r1", 1, "completed"));
    expect((await store.getRollout("r1"))?.state, "replaced by id").toBe("completed");
    expect(await store.getRollout("nope")).toBeUndefined();
    expect((await store.listRollouts()).map((r) => r.id), "newest first").toEqual(["r2", "r1"]);
    // Newest as stored, whatever a client says of its start: one stored last that started long ago is kept, and listed first.
    for (let i = 0; i < ROLLOUTS_KEPT; i++) await store.putRollout(rollout(`n-${i}`, 10 + (i % 50)));
    await store.putRollout(rollout("early", 0));
    expect((await store.getRollout("early"))?.id, "the one stored last, started long ago").toBe("early");
    const listed = (await store.listRollouts()).map((r) => r.id);
    expect({ first: listed[0], count: listed.length, oldestKept: listed.at(-1) }, "the newest stored first, ROLLOUTS_KEPT kept").toEqual({ first: "early", count: ROLLOUTS_KEPT, oldestKept: "n-1" });
  });

  it("keeps everything across a reopen", async () => {
    const store = await fresh();
    await store.putArtifact(artifact(7));
    await assign(store, artifact(7).id, "h7");
    await store.changeAssignments([{ add: true, artifactId: artifact(7).id, target: { selector: "env=prod" } }]);
    const again = await reopen(store);
    opened.push(again);
    expect(await again.desiredState(), "selectors and the desired version too").toEqual({ version: 2, direct: [{ artifactId: artifact(7).id, hostId: "h7" }], selectors: [{ artifactId: artifact(7).id, selector: "env=prod" }] });
    expect((await again.getArtifact(artifact(7).id))?.name).toBe("p7");
    expect(await hostAssignments(again, "h7")).toEqual({ version: 1, artifactIds: [artifact(7).id] });
  });
});

/** A connected RedisStore under a fresh key prefix (closed after the file). */
async function redisStore(name: string): Promise<{ store: RedisStore; prefix: string }> {
  const prefix = `${name}${counter++}`;
  const store = new RedisStore(redis.url, { prefix });
  opened.push(store);
  await store.connect();
  return { store, prefix };
}

describe("RedisStore with rollouts an earlier version stored", () => {
  it("lists a rollout stored now before those scored by their start time (in ms), and keeps it", async () => {
    const { store, prefix } = await redisStore("rollouts");
    const record = (id: string) => ({ id, state: "completed" as const, changes: [], rings: [], max_failures: "0", ring_timeout_ms: 1000, started_at: "2026-01-01T00:00:00.000Z", updated_at: "2026-01-01T00:00:00.000Z" });
    const raw = new Redis(redis.url);
    try {
      // As an earlier version left them: scored by started_at in ms.
      for (let i = 0; i < ROLLOUTS_KEPT; i++) {
        await raw.zadd(`${prefix}:rollouts`, String(Date.parse("2026-06-01T00:00:00.000Z") + i), `old-${i}`);
        await raw.set(`${prefix}:rollout:old-${i}`, JSON.stringify(record(`old-${i}`)));
      }
    } finally {
      raw.disconnect();
    }
    await store.putRollout(record("new"));
    expect((await store.getRollout("new"))?.id, "kept, not trimmed as the oldest").toBe("new");
    expect((await store.listRollouts())[0]?.id, "listed first").toBe("new");
  });
});

describe("RedisStore reads only what a summary or an active listing returns", () => {
  it("a status summary reads no full record, and statuses stored before summaries were kept are summarized", async () => {
    const { store, prefix } = await redisStore("summary");
    const id = artifact(4).id;
    const raw = new Redis(redis.url);
    try {
      await store.putStatus({ hostId: "h1", artifactId: id, event: "attached", counters: { r: 1 }, time: "2026-01-01T00:00:00.000Z", seq: 1 });
      // A full record that cannot be parsed: the summary does not read it.
      await raw.hset(`${prefix}:status:${id}`, "h1", "not json");
      expect((await store.artifactStatusSummary(id)).map((s) => s.event), "from the summary alone").toEqual(["attached"]);
      // As an earlier version left it: a full record without its summary.
      await raw.hset(`${prefix}:status:${id}`, "h2", JSON.stringify({ hostId: "h2", artifactId: id, event: "failed", counters: { r: 2 }, time: "2026-01-01T00:00:00.000Z" }));
      await raw.hset(`${prefix}:status:${id}`, "h1", JSON.stringify({ hostId: "h1", artifactId: id, event: "attached", time: "2026-01-01T00:00:00.000Z", seq: 1 }));
      const summaries = (await store.artifactStatusSummary(id)).sort((a, b) => a.hostId.localeCompare(b.hostId));
      expect(summaries, "the older status summarized, without its counters").toEqual([
        { hostId: "h1", artifactId: id, event: "attached", time: "2026-01-01T00:00:00.000Z", seq: 1 },
        { hostId: "h2", artifactId: id, event: "failed", time: "2026-01-01T00:00:00.000Z" },
      ]);
      expect(await raw.hlen(`${prefix}:statussummary:${id}`), "and its summary kept").toBe(2);
    } finally {
      raw.disconnect();
    }
  });

  it("active rollouts are read without the others' records, and found in a store written before the active set was kept", async () => {
    const { store, prefix } = await redisStore("active");
    const record = (id: string, state: "running" | "completed") => ({ id, state, changes: [], rings: [], max_failures: "0", ring_timeout_ms: 1000, started_at: "2026-01-01T00:00:00.000Z", updated_at: "2026-01-01T00:00:00.000Z" });
    const raw = new Redis(redis.url);
    try {
      // As an earlier version left them: records and their order, no active set.
      await raw.zadd(`${prefix}:rollouts`, "1", "old-running", "2", "old-done");
      await raw.set(`${prefix}:rollout:old-running`, JSON.stringify(record("old-running", "running")));
      await raw.set(`${prefix}:rollout:old-done`, JSON.stringify(record("old-done", "completed")));
      await store.putRollout(record("new-done", "completed"));
      expect((await store.listActiveRollouts()).map((r) => r.id), "the one running before the upgrade").toEqual(["old-running"]);
      // A record that cannot be parsed, of an ended rollout: the active listing does not read it.
      await raw.set(`${prefix}:rollout:new-done`, "not json");
      await raw.set(`${prefix}:rollout:old-done`, "not json");
      expect((await store.listActiveRollouts()).map((r) => r.id), "the ended ones' records not read").toEqual(["old-running"]);
    } finally {
      raw.disconnect();
    }
  });
});

describe("RedisStore when Redis refuses", () => {
  it("a Redis out of memory (noeviction) answers StoreUnavailableError (503), for a script, a transaction and a command", async () => {
    const { store } = await redisStore("oom");
    await assign(store, artifact(1).id, "h");
    const raw = new Redis(redis.url);
    try {
      await raw.config("SET", "maxmemory-policy", "noeviction");
      await raw.config("SET", "maxmemory", "1");
      const refusals: [string, () => Promise<unknown>][] = [
        ["changeAssignments (a Lua script)", () => assign(store, artifact(2).id, "h")],
        ["putArtifact (MULTI)", () => store.putArtifact(artifact(3))],
        ["touchAgent (a command)", () => store.touchAgent("h", new Date(0).toISOString())],
        ["hostDesired (a read in a transaction, which Redis refuses too)", () => store.hostDesired("h")],
      ];
      for (const [what, refused] of refusals) {
        const err = await refused().then(() => undefined, (e: unknown) => e);
        expect(err, `${what}: refused as unavailable (503), not a fault (500): ${String(err)}`).toBeInstanceOf(StoreUnavailableError);
        expect((err as Error).message, what).toBe("Redis cannot serve this now (OOM)");
      }
    } finally {
      await raw.config("SET", "maxmemory", "0");
      raw.disconnect();
    }
    expect(await hostAssignments(store, "h"), "nothing of the refused changes was made").toEqual({ version: 1, artifactIds: [artifact(1).id] });
  });

  it("its version epoch is the server's run id, an unknown one from a lost connection until the new server's is read, and one of its own for each assigner where the server refuses INFO", async () => {
    const { store } = await redisStore("epoch");
    const runId = async () => {
      const raw = new Redis(redis.url);
      try {
        return /^run_id:([0-9a-f]{16})/m.exec(await raw.info("server"))![1]!;
      } finally {
        raw.disconnect();
      }
    };
    const first = await runId();
    expect(store.versionEpoch(), "the server's run id").toBe(first);
    const settled = async (what: string, check: () => Promise<boolean>) => {
      for (let i = 0; i < 100 && !(await check()); i++) await new Promise((resolve) => setTimeout(resolve, 50));
      expect(await check(), what).toBe(true);
    };
    await redis.kill();
    try {
      await settled("a new epoch once the connection is lost", async () => store.versionEpoch() !== first);
    } finally {
      await redis.start();
    }
    const second = await runId();
    expect(second, "a restarted server's run id").not.toBe(first);
    await settled(`the restarted server's run id (${second}), read once connected again: ${store.versionEpoch()}`, async () => store.versionEpoch() === second);

    // A server that refuses INFO to the assigner's user: an epoch of its own for each assigner, never the bare version.
    const raw = new Redis(redis.url);
    try {
      await raw.call("ACL", "SETUSER", "no-info", "on", ">no-info-password", "~*", "&*", "+@all", "-info");
      const limitedUrl = redis.url.replace("redis://", "redis://no-info:no-info-password@");
      const limited = [new RedisStore(limitedUrl, { prefix: `noinfo${counter++}` }), new RedisStore(limitedUrl, { prefix: `noinfo${counter++}` })];
      opened.push(...limited);
      for (const store of limited) await store.connect();
      const epochs = limited.map((s) => s.versionEpoch());
      expect(epochs.map((e) => /^[0-9a-f]{16}$/.test(e) && e !== second), `INFO refused: an unknown epoch each (${epochs.join(", ")})`).toEqual([true, true]);
      expect(epochs[0], "two assigners' epochs").not.toBe(epochs[1]);
    } finally {
      await raw.call("ACL", "DELUSER", "no-info");
      raw.disconnect();
    }
  });

  it("any other error answer is a fault whose error names the command, without its arguments", async () => {
    const { store, prefix } = await redisStore("wrongtype");
    const raw = new Redis(redis.url);
    try {
      await raw.set(`${prefix}:artifacts`, "not a set");
      const err = (await store.listArtifacts().then(() => undefined, (e: unknown) => e)) as Error;
      expect(err, "a fault, not unavailability").not.toBeInstanceOf(StoreUnavailableError);
      expect(err.message, "names the command and Redis's answer").toMatch(/^Redis smembers: WRONGTYPE /);
      expect(Object.keys(err), "nothing of the command's arguments rides on the error (it is logged)").toEqual([]);
    } finally {
      raw.disconnect();
    }
  });
});

describe("RedisStore after a failure part-way", () => {
  it("an artifact stored but missing from the list (as a write that failed between two commands left it) is listed again when registered again", async () => {
    const { store, prefix } = await redisStore("partial");
    await store.putArtifact(artifact(1));
    const raw = new Redis(redis.url);
    try {
      await raw.srem(`${prefix}:artifacts`, artifact(1).id);
      expect(await store.listArtifacts(), "the list, broken").toEqual([]);
      expect(await store.putArtifact(artifact(1)), "registered again: not new").toBe(false);
      expect((await store.listArtifacts()).map((a) => a.id), "listed again").toEqual([artifact(1).id]);
    } finally {
      raw.disconnect();
    }
  });

  it("deleting an agent leaves its host to an agent that bound it since", async () => {
    const { store, prefix } = await redisStore("partial");
    expect(await store.bindAgent({ uid: "old", hostId: "h", publicKey: "k", registeredAt: new Date(0).toISOString() }, "t-old")).toEqual({ bound: true });
    const raw = new Redis(redis.url);
    try {
      await raw.set(`${prefix}:hostagent:h`, "new"); // as a registration that completed between the delete's read and its write
      expect(await store.deleteAgent("old")).toBe(true);
      expect(await raw.get(`${prefix}:hostagent:h`), "the host's binding").toBe("new");
      expect(await store.getToken("t-old"), "the deleted agent's token").toBeUndefined();
    } finally {
      raw.disconnect();
    }
  });
});

describe("EmbeddedStore on a failed write", () => {
  it("answers 503 without the file's path and keeps the state on disk in force", async () => {
    const storeDir = mkdtempSync(join(dir, "failing-"));
    const store = await EmbeddedStore.open(join(storeDir, "store.json"));
    opened.push(store);
    await assign(store, artifact(1).id, "h");
    const desired = (await store.desiredState()).version;
    rmSync(storeDir, { recursive: true, force: true });
    const failing = assign(store, artifact(2).id, "h").catch((e: unknown) => e);
    // A poll while the write is under way waits for it: it is answered with what is saved, never with the change.
    const polled = hostAssignments(store, "h");
    const seen = `${await store.hostVersion("h")}.${store.versionEpoch()}`;
    expect(await polled, "a poll during the failing write").toEqual({ version: 1, artifactIds: [artifact(1).id] });
    const err = (await failing) as StoreUnavailableError;
    expect(err, "a write into a removed directory fails").toBeInstanceOf(StoreUnavailableError);
    expect(err.message, "the answer names no server path").not.toContain(storeDir);
    expect(await hostAssignments(store, "h"), "the failed change is not live").toEqual({ version: 1, artifactIds: [artifact(1).id] });
    expect((await store.desiredState()).version, "the desired state's version does not go back").toBe(desired + 1);
    mkdirSync(storeDir);
    expect(await assign(store, artifact(3).id, "h")).toEqual({ changed: true, version: 2 });
    // Version 2 again, for other content: the epoch tells the two apart (a host's ETag holds both).
    expect(`${await store.hostVersion("h")}.${store.versionEpoch()}`, "the version and epoch seen during the failed write").not.toBe(seen);
    const again = await EmbeddedStore.open(store.file);
    opened.push(again);
    expect(await hostAssignments(again, "h")).toEqual({ version: 2, artifactIds: [artifact(1).id, artifact(3).id] });
  });

  it("telemetry written without pause does not hold up the reads of assignments (an unsaved assignment does: the test above)", async () => {
    const store = await EmbeddedStore.open(join(mkdtempSync(join(dir, "busy-")), "store.json"), { lazyWriteMs: 0 });
    opened.push(store);
    await assign(store, artifact(1).id, "h");
    // Receipts enough that each write of the file takes a while, and a stream of them: the writes follow each other.
    const receipt = { programId: 1, interfaces: Array.from({ length: 64 }, (_, i) => ({ iface: `eth${i}`, direction: "egress", pref: 4096 })), since: new Date(0).toISOString() };
    for (let i = 0; i < 2000; i++) await store.putStatus({ hostId: `h${i}`, artifactId: artifact(1).id, event: "attached", receipt, time: new Date(0).toISOString(), seq: 1 });
    let streaming = true;
    let sent = 0;
    const stream = (async () => {
      for (let seq = 2; streaming; seq++) {
        await store.putStatus({ hostId: `h${seq % 2000}`, artifactId: artifact(1).id, event: "attached", receipt, time: new Date(0).toISOString(), seq });
        sent++;
        await new Promise((r) => setTimeout(r, 1));
      }
    })();
    const within = (ms: number, read: Promise<unknown>) => Promise.race([read.then(() => "answered"), new Promise((r) => setTimeout(() => r(`no answer in ${ms} ms`), ms))]);
    try {
      await new Promise((r) => setTimeout(r, 200));
      expect(await within(3_000, hostAssignments(store, "h")), `a poll while ${sent} receipts were written`).toBe("answered");
    } finally {
      streaming = false;
      await stream;
    }
  });

  it("removes temp files a crash left beside the store", async () => {
    const storeDir = mkdtempSync(join(dir, "crashed-"));
    writeFileSync(join(storeDir, `.store.json.0123456789ab${TEMP_SUFFIX}`), "{half");
    const store = await EmbeddedStore.open(join(storeDir, "store.json"));
    opened.push(store);
    expect(readdirSync(storeDir)).toEqual([]);
  });
});
