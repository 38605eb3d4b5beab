// Staged rollout with automatic rollback (issue 11, acceptance 2), with
// `aegis apply --rollout` against a real assigner, registry 2.8.2 and NATS,
// two agents on the MemoryDatapath (ring 1) and a real `aegis agent run` on a
// veth in a namespace of the test's own (ring 2). A digest whose object the
// kernel verifier rejects passes ring 1 (the memory kernel loads any ELF) and
// fails on the real kernel in ring 2: the rollout stops, the desired state
// goes back, and every host's receipts show the previous digest in force. A
// good digest then rolls out through every ring.
import { createPrivateKey } from "node:crypto";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Agent } from "../../agent/index.js";
import type { RolloutJson } from "../../assigner/api/index.js";
import { buildBundle, encodeBundle, pushBundle } from "../../bundle/index.js";
import { compileSource, MemoryDatapath } from "../../ebpf/index.js";
import { RemoteRepository } from "../../registry/index.js";
import { KeySigner, loadTrust, signArtifact } from "../../signing/index.js";
import { AgentLab, kill, type RunningAgent } from "../agent/lab.js";
import { aegis, expectOneErrorLine } from "../cli/run.js";

const lab = new AgentLab("rollout", 211);
const PORT = 6100;
const REAL = "z-real";
const MEMORY = ["m-1", "m-2"];
const memory: { host: string; agent: Agent; datapath: MemoryDatapath }[] = [];
let real: RunningAgent;
let fleet: string;
let env: Record<string, string>;
const d: Record<string, string> = {};

// Reads packet data with no bounds check: a valid BPF object the verifier refuses (as in test/agent/e2e-verifier.test.ts).
const UNSAFE = `
#include <linux/bpf.h>
__attribute__((section("tc"), used)) int aegis_net(struct __sk_buff *skb) {
  return *(volatile unsigned char *)(long)skb->data;
}
char _license[] __attribute__((section("license"), used)) = "GPL";
`;

const drop = () => ({ action: "drop" as const, dst: `${lab.farIp}/32`, protocol: "udp" as const, ports: String(PORT) });

function writeFleet(digest: string): void {
  writeFileSync(fleet, ["environment: prod", "policies:", "  - name: e2e-rollout", `    ref: ${lab.registry.host}/policies/e2e@${digest}`, "    selectors: [tier=rollout]", ""].join("\n"));
}

beforeAll(async () => {
  await lab.start({ udp: [PORT], tcp: [] });
  d.v1 = await lab.policy("e2e-rollout", "1.0.0", "egress", [drop()]);
  d.good = await lab.policy("e2e-rollout", "2.0.1", "egress", [drop()]);
  // 2.0.0: signed by the trusted key, every digest right; only the kernel refuses it.
  const dir = join(lab.work, "e2e-rollout-2.0.0");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "policy.yaml"), ["name: e2e-rollout", "version: 2.0.0", "description: the verifier says no", "program: aegis_net", "attach: { hook: tc, direction: egress }", "rules:", `  - ${JSON.stringify(drop())}`, ""].join("\n"));
  const { policy } = await buildBundle(dir);
  const repo = new RemoteRepository(lab.registry.host, "policies/e2e");
  const artifact = await pushBundle(await encodeBundle({ policy, program: await compileSource("unsafe", UNSAFE) }), policy, repo, "2.0.0");
  await signArtifact(repo, artifact.manifest, new KeySigner(createPrivateKey(lab.ciKey.privateKey)), repo.name);
  d.bad = artifact.manifest.digest;

  const trust = await loadTrust([join(lab.work, "ci.pub")]);
  for (const host of MEMORY) {
    const datapath = new MemoryDatapath();
    const agent = new Agent({ assigner: lab.assigner.url, hostId: host, stateDir: mkdtempSync(join(lab.work, `state-${host}-`)), datapath, trust, pollIntervalMs: 500, natsUrl: lab.nats.url, labels: { tier: "rollout" }, log: () => undefined });
    await agent.start();
    memory.push({ host, agent, datapath });
  }
  real = lab.startAgent(REAL, ["--label", "tier=rollout"]);
  await lab.registered(REAL, real);
  for (const host of MEMORY) await lab.registered(host, real);
  fleet = join(lab.work, "prod.yaml");
  env = { AEGIS_ASSIGNER_URL: lab.assigner.url, AEGIS_ADMIN_TOKEN: "operator-secret" };
  writeFleet(d.v1);
  const applied = await aegis(["apply", "-f", fleet], env);
  expect(applied.code, applied.stdout + applied.stderr).toBe(0);
  for (const host of [...MEMORY, REAL]) await lab.until(`${host} enforces 1.0.0`, () => lab.status(d.v1!, host, "attached"), real.output);
}, 180_000);
afterAll(async () => {
  for (const m of memory) await m.agent.stop();
  if (real) await kill(real, "SIGTERM");
  await lab.stop();
});

/** The latest report of each host about `digest`: event, time and the receipt's since. */
async function reports(digest: string): Promise<Map<string, { event: string; time: string; since?: string; code?: string }>> {
  return new Map((await lab.admin.status(digest)).hosts.map((h) => [h.host_id, h]));
}

async function state(): Promise<string[]> {
  const name = (id: string) => Object.entries(d).find(([, v]) => v === id)?.[0] ?? id;
  return (await lab.admin.desiredState()).assignments.map((a) => `${name(a.artifact_id)} ${"host_id" in a ? `host:${a.host_id}` : `selector:${a.selector}`}`).sort();
}

async function rolloutStatus(): Promise<RolloutJson> {
  const shown = await aegis(["rollout", "status", "--json"], env);
  expect(shown.code, shown.stderr).toBe(0);
  return JSON.parse(shown.stdout) as RolloutJson;
}

describe("aegis apply --rollout", () => {
  it("stops when a ring fails and puts every host back on the previous digest, shown by receipts", async () => {
    const before = await state();
    expect(before).toEqual(["v1 selector:tier=rollout"]);
    const started = Date.now();
    writeFleet(d.bad!);
    const run = await aegis(["apply", "-f", fleet, "--rollout", "2,100%", "--ring-timeout", "40s"], env);
    const line = expectOneErrorLine(run);
    expect(run.stdout, "ring 1 (the memory hosts) passed first").toContain("ring 1 (2): 2 of 2 in force");
    expect(line, "the error says where it stopped and why").toMatch(/ring 2 \(100%\): 1 of 1 host failed \(allowed 0\); first: z-real \[LOAD_FAILED\]/);
    expect(line).toContain("rolled back: 3 of 3 hosts confirmed on the previous digest by receipts");
    expect(await state(), "the desired state is what it was").toEqual(before);

    // Receipts: every host reports 1.0.0 attached after the rollout began; the memory hosts re-attached it.
    const v1 = await reports(d.v1!);
    for (const host of [...MEMORY, REAL]) {
      const r = v1.get(host);
      expect(r?.event, `${host} reports 1.0.0 in force`).toBe("attached");
      expect(Date.parse(r!.time), `${host}'s receipt is newer than the rollout`).toBeGreaterThanOrEqual(started);
    }
    for (const host of MEMORY) expect(Date.parse(v1.get(host)!.since!), `${host} attached 1.0.0 again after the rollback`).toBeGreaterThanOrEqual(started);
    for (const m of memory) expect((await m.datapath.attached()).map((a) => a.id), `${m.host}'s kernel runs 1.0.0 only`).toEqual(expect.arrayContaining([d.v1]));
    for (const m of memory) await lab.until(`${m.host} drops 2.0.0`, async () => (await m.datapath.attached()).every((a) => a.id === d.v1));
    expect((await reports(d.bad!)).get(REAL)?.code, "the real host reported the verifier's refusal").toBe("LOAD_FAILED");
    expect((await lab.datapath.attached()).filter((a) => a.iface === lab.near).map((a) => a.id), "the real kernel still runs 1.0.0").toEqual([d.v1]);
    expect(await lab.udpReaches(PORT), "and 1.0.0 still drops the port").toBe(false);

    const record = await rolloutStatus();
    expect({ state: record.state, rings: record.rings.map((r) => [r.state, r.in_force, r.failed]) }, "rollout status from another process").toEqual({
      state: "rolled_back",
      rings: [["passed", 2, 0], ["failed", 0, 1]],
    });
    expect(record.rings[1]!.failures[0]).toMatchObject({ host_id: REAL, code: "LOAD_FAILED", artifact_id: d.bad });
    const human = await aegis(["rollout", "status", record.id], env);
    expect(human.stdout, "the table has a header").toContain("RING  SPEC  HOSTS  STATE    IN FORCE  FAILED");
  });

  it("completes ring by ring with healthy agents", async () => {
    const started = Date.now();
    writeFleet(d.good!);
    const run = await aegis(["apply", "-f", fleet, "--rollout", "1,50%,100%", "--ring-timeout", "40s"], env);
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toMatch(/rollout r-\S+ completed/);
    expect(await state(), "the new digest replaced the old on the selector").toEqual(["good selector:tier=rollout"]);
    const good = await reports(d.good!);
    for (const host of [...MEMORY, REAL]) {
      expect(good.get(host)?.event, `${host} reports 2.0.1 in force`).toBe("attached");
      expect(Date.parse(good.get(host)!.time)).toBeGreaterThanOrEqual(started);
    }
    expect((await lab.datapath.attached()).filter((a) => a.iface === lab.near).map((a) => a.id), "the real kernel runs 2.0.1").toEqual([d.good]);
    const record = await rolloutStatus();
    expect({ state: record.state, rings: record.rings.map((r) => [r.spec, r.hosts, r.state, r.in_force]) }).toEqual({
      state: "completed",
      rings: [["1", 1, "passed", 1], ["50%", 1, "passed", 1], ["100%", 1, "passed", 1]],
    });
  });
});
