// One conformance suite, run against the embedded store and the Redis store.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EmbeddedStore } from "../../assigner/store/embedded.js";
import { RedisStore } from "../../assigner/store/redis.js";
import type { ArtifactRecord, AssignerStore } from "../../assigner/store/store.js";
import { startRedis, type TcpServer } from "../harness/tcp-server.js";

let redis: TcpServer;
const dir = mkdtempSync(join(tmpdir(), "aegis-store-"));
let counter = 0;
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

const implementations: [string, () => Promise<AssignerStore>, (s: AssignerStore) => Promise<AssignerStore>][] = [
  [
    "embedded",
    async () => EmbeddedStore.open(join(dir, `store-${counter++}.json`)),
    async (s) => {
      await s.close();
      return EmbeddedStore.open((s as EmbeddedStore).file);
    },
  ],
  [
    "redis",
    async () => {
      const store = new RedisStore(redis.url, { prefix: `t${counter++}` });
      await store.connect();
      return store;
    },
    async (s) => s,
  ],
];

describe.each(implementations)("AssignerStore conformance: %s", (_name, open, reopen) => {
  async function fresh(): Promise<AssignerStore> {
    const store = await open();
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
    expect(await store.hostAssignments("h1")).toEqual({ version: 0, artifactIds: [] });
    expect(await store.assign(a, "h1")).toEqual({ changed: true, version: 1 });
    expect(await store.assign(a, "h1")).toEqual({ changed: false, version: 1 });
    expect(await store.assign(b, "h1")).toEqual({ changed: true, version: 2 });
    await store.assign(a, "h2");
    expect(await store.hostAssignments("h1")).toEqual({ version: 2, artifactIds: [a, b].sort() });
    expect(await store.artifactHosts(a)).toEqual(["h1", "h2"]);
    expect(await store.unassign(a, "h1")).toEqual({ changed: true, version: 3 });
    expect(await store.unassign(a, "h1")).toEqual({ changed: false, version: 3 });
    expect(await store.hostVersion("h1")).toBe(3);
    expect(await store.artifactHosts(a)).toEqual(["h2"]);
  });

  it("keeps exact sets under concurrent changes", async () => {
    const store = await fresh();
    const ids = [1, 2, 3, 4].map((n) => artifact(n).id);
    // Each (artifact, host) pair gets one kind of operation, twice (a repeat is a no-op),
    // so the final sets and versions are known whatever the interleaving.
    const pairs = ids.flatMap((id, a) => Array.from({ length: 10 }, (_, h) => ({ id, host: `h${h}`, add: (a + h) % 3 !== 0 })));
    for (const p of pairs.filter((p) => !p.add)) await store.assign(p.id, p.host);
    await Promise.all([...pairs, ...pairs].map((p) => (p.add ? store.assign(p.id, p.host) : store.unassign(p.id, p.host))));
    for (let h = 0; h < 10; h++) {
      const mine = pairs.filter((p) => p.host === `h${h}`);
      const { artifactIds, version } = await store.hostAssignments(`h${h}`);
      expect(artifactIds).toEqual(mine.filter((p) => p.add).map((p) => p.id).sort());
      // One step per pre-assignment and one per effective change.
      expect(version).toBe(mine.filter((p) => !p.add).length * 2 + mine.filter((p) => p.add).length);
    }
  });

  it("treats host ids like constructor or toString as plain names", async () => {
    const store = await fresh();
    for (const host of ["constructor", "toString", "hasOwnProperty"]) {
      expect(await store.assign(artifact(1).id, host)).toEqual({ changed: true, version: 1 });
      expect(await store.hostAssignments(host)).toEqual({ version: 1, artifactIds: [artifact(1).id] });
      expect(await store.hostStatus(host)).toEqual([]);
      expect(await store.getAgentByHost(host)).toBeUndefined();
    }
  });

  it("replaces an artifact's record and moves a host's version on request", async () => {
    const store = await fresh();
    await store.putArtifact(artifact(5));
    await store.replaceArtifact({ ...artifact(5), signature: "c2ln" });
    expect((await store.getArtifact(artifact(5).id))?.signature).toBe("c2ln");
    await store.assign(artifact(5).id, "h5");
    expect(await store.bumpHostVersion("h5")).toBe(2);
    expect(await store.hostAssignments("h5")).toEqual({ version: 2, artifactIds: [artifact(5).id] });
  });

  it("hands out a registration once, and not after it expires", async () => {
    const store = await fresh();
    const reg = { id: "r1", hostId: "h1", publicKey: "k", nonce: "n" };
    await store.putRegistration(reg, 60);
    expect(await store.takeRegistration("r1")).toEqual(reg);
    expect(await store.takeRegistration("r1")).toBeUndefined();
    await store.putRegistration({ ...reg, id: "r2" }, 1);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    expect(await store.takeRegistration("r2")).toBeUndefined();
  });

  it("keeps one agent per host, revoking a replaced agent's tokens; deletes agents", async () => {
    const store = await fresh();
    const agent = { uid: "u1", hostId: "h1", publicKey: "k", registeredAt: new Date(0).toISOString() };
    await store.putToken("old", { agentUid: "u1", hostId: "h1" });
    await store.putAgent(agent);
    await store.putToken("new", { agentUid: "u2", hostId: "h1" });
    await store.putAgent({ ...agent, uid: "u2" });
    expect((await store.listAgents()).map((a) => a.uid)).toEqual(["u2"]);
    expect((await store.getAgentByHost("h1"))?.uid).toBe("u2");
    expect(await store.getToken("old")).toBeUndefined();
    expect(await store.getToken("new")).toEqual({ agentUid: "u2", hostId: "h1" });
    expect(await store.deleteAgent("u2")).toBe(true);
    expect(await store.deleteAgent("u2")).toBe(false);
    expect(await store.getToken("new")).toBeUndefined();
    expect(await store.getAgentByHost("h1")).toBeUndefined();
  });

  it("keeps last-seen, tokens and status", async () => {
    const store = await fresh();
    const agent = { uid: "u2", hostId: "h1", publicKey: "k", registeredAt: new Date(0).toISOString() };
    await store.putAgent(agent);
    await store.touchAgent("h1", "2026-01-01T00:00:00.000Z");
    expect((await store.getAgent("u2"))?.lastSeen).toBe("2026-01-01T00:00:00.000Z");
    await store.putToken("hash", { agentUid: "u2", hostId: "h1" });
    expect(await store.getToken("hash")).toEqual({ agentUid: "u2", hostId: "h1" });
    expect(await store.getToken("other")).toBeUndefined();
    const status = { hostId: "h1", artifactId: artifact(1).id, event: "attached", time: "2026-01-01T00:00:00.000Z" };
    await store.putStatus(status);
    await store.putStatus({ ...status, event: "failed", reason: "x" });
    expect(await store.artifactStatus(artifact(1).id)).toEqual([{ ...status, event: "failed", reason: "x" }]);
    expect(await store.hostStatus("h1")).toHaveLength(1);
  });

  it("keeps everything across a reopen", async () => {
    const store = await fresh();
    await store.putArtifact(artifact(7));
    await store.assign(artifact(7).id, "h7");
    const again = await reopen(store);
    opened.push(again);
    expect((await again.getArtifact(artifact(7).id))?.name).toBe("p7");
    expect(await again.hostAssignments("h7")).toEqual({ version: 1, artifactIds: [artifact(7).id] });
  });
});
