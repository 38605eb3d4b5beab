// The agent against a real assigner (embedded store, NATS) and registry
// 2.8.2 with signed policies, on the MemoryDatapath: what it installs,
// replaces, removes and refuses, and what it adopts after a restart.
import { createPrivateKey, randomBytes } from "node:crypto";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { release, tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Agent, basePref, StateDir, type StepReport, type TrustRootOptions } from "../../agent/index.js";
import { AssignerClient, capabilitiesJson, MAX_ASSIGNED } from "../../assigner/api/index.js";
import { startAssigner, type RunningAssigner } from "../../assigner/index.js";
import { buildBundle, pushBundle } from "../../bundle/index.js";
import { MemoryDatapath, MemoryKernel, probeKernelFeatures } from "../../ebpf/index.js";
import { copy, OciLayoutTarget, parseManifest, readAll, RemoteRepository, type Manifest } from "../../registry/index.js";
import { generateKeyPair, KeySigner, loadTrust, parsePublicKey, pushTrustRoot, signArtifact, trustedKey, type TrustPolicy } from "../../signing/index.js";
import { startRegistryProxy } from "../harness/proxy.js";
import { startRegistry, type RegistryServer } from "../harness/registry.js";
import { TestFulcio, TestRekor, trustedRoot } from "../harness/sigstore.js";
import { startDroppingPort, startNats, startSilentPort, startStrictNats, type NatsDenial, type SilentPort, type StrictNats, type TcpServer } from "../harness/tcp-server.js";

let registry: RegistryServer;
let nats: TcpServer;
let assigner: RunningAssigner;
let admin: AssignerClient;
let work: string;
let trust: TrustPolicy;
let liar: {
  url: string;
  server: Server;
  paths: string[];
  checksum?: string;
  telemetryDown?: boolean;
  rewrite?: (path: string, body: Buffer) => Buffer;
  stall?: (path: string) => boolean;
  /** Holds an answer this many ms (told on the request's arrival). */
  delay?: (path: string) => number;
  /** Sends an answer's body in 20 pieces spread over this many ms (a slow link). */
  trickle?: (path: string) => number;
};
const ciKey = generateKeyPair("ed25519");
const otherKey = generateKeyPair("ed25519");

/** A copy of policies/block-icmp-8888 at `version` (its policy.yaml passed through `edit`), built, pushed (to `host`, default the registry), signed by `key` (none: unsigned), registered. */
async function publish(version: string, key: typeof ciKey | null = ciKey, name = "block-icmp-8888", host = registry.host, edit: (yaml: string, dir: string) => string = (yaml) => yaml): Promise<string> {
  const dir = join(work, `${name}-${version}`);
  cpSync("policies/block-icmp-8888", dir, { recursive: true });
  const yaml = edit(readFileSync(join(dir, "policy.yaml"), "utf8"), dir).replace(/^version: .*$/m, `version: ${version}`).replace(/^name: .*$/m, `name: ${name}`);
  writeFileSync(join(dir, "policy.yaml"), yaml);
  const { bytes, policy } = await buildBundle(dir);
  const repo = new RemoteRepository(host, "policies/agent");
  const artifact = await pushBundle(bytes, policy, repo, `${name}-${version}`);
  if (key) await signArtifact(repo, artifact.manifest, new KeySigner(createPrivateKey(key.privateKey)), repo.name);
  await admin.call("POST", "/artifacts", { reference: `${host}/policies/agent@${artifact.manifest.digest}` });
  return artifact.manifest.digest;
}

interface Running {
  agent: Agent;
  datapath: MemoryDatapath;
  events: StepReport[];
  logs: string[];
  stateDir: string;
}

/** An agent for `hostId` on a memory kernel (shared to model a restart); slow polling, so tests step it with reconcile(). */
async function runAgent(
  hostId: string,
  options: { kernel?: MemoryKernel; stateDir?: string; assigner?: string; trust?: TrustPolicy; trustRoot?: TrustRootOptions; nats?: boolean | string; natsRetryMs?: number; dryRun?: boolean; ifaces?: string[]; mirrors?: string[]; allowedRegistries?: string[]; requestTimeoutMs?: number; fetchRetryMs?: number; pullTimeoutMs?: number; fetchBudgetMs?: number; minWakeGapMs?: number; datapath?: MemoryDatapath } = {},
): Promise<Running> {
  const datapath = options.datapath ?? new MemoryDatapath(options.kernel ? { kernel: options.kernel } : { interfaces: ["lo", "eth0", "eth1"] });
  const events: StepReport[] = [];
  const logs: string[] = [];
  const stateDir = options.stateDir ?? mkdtempSync(join(work, `state-${hostId}-`));
  const agent = new Agent({
    assigner: options.assigner ?? assigner.url,
    hostId,
    stateDir,
    datapath,
    trust: options.trust ?? trust,
    ...(options.trustRoot ? { trustRoot: options.trustRoot } : {}),
    pollIntervalMs: 3_600_000,
    labels: { role: "test" },
    log: (line) => logs.push(line),
    reporters: [{ report: (step) => events.push(step) }],
    ...(options.nats ? { natsUrl: typeof options.nats === "string" ? options.nats : nats.url } : {}),
    ...(options.natsRetryMs ? { natsRetryMs: options.natsRetryMs } : {}),
    ...(options.dryRun ? { dryRun: true } : {}),
    ...(options.ifaces ? { ifaces: options.ifaces } : {}),
    ...(options.mirrors ? { mirrors: options.mirrors } : {}),
    ...(options.allowedRegistries ? { allowedRegistries: options.allowedRegistries } : {}),
    ...(options.requestTimeoutMs ? { requestTimeoutMs: options.requestTimeoutMs } : {}),
    ...(options.fetchRetryMs ? { fetchRetryMs: options.fetchRetryMs } : {}),
    ...(options.pullTimeoutMs ? { pullTimeoutMs: options.pullTimeoutMs } : {}),
    ...(options.fetchBudgetMs ? { fetchBudgetMs: options.fetchBudgetMs } : {}),
    ...(options.minWakeGapMs ? { minWakeGapMs: options.minWakeGapMs } : {}),
  });
  await agent.start();
  return { agent, datapath, events, logs, stateDir };
}

const running: Running[] = [];
async function agentFor(hostId: string, options: Parameters<typeof runAgent>[1] = {}): Promise<Running> {
  const r = await runAgent(hostId, options);
  running.push(r);
  return r;
}

/** Waits (without a time budget of its own: the test timeout is the limit) until `check` holds. */
async function until(what: string, check: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`gave up waiting: ${what}`);
}

/** `work`, or a rejection naming `what` (and what `context` says then) once `ms` have passed without it settling. */
async function within<T>(ms: number, what: string, work: Promise<T>, context?: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms / 1000} s${context ? `\n${context()}` : ""}`)), ms);
  });
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Publishes a wake-up for `host` about every 2 ms for `ms`, each flushed to the server: a flood. */
async function floodWakeUps(notifier: NatsConnection, host: string, ms: number): Promise<void> {
  const start = performance.now();
  while (performance.now() - start < ms) {
    notifier.publish(`aegis.assignments.${host}`, "{}");
    await notifier.flush();
    await new Promise((r) => setTimeout(r, 2));
  }
}

const filters = async (d: MemoryDatapath) => (await d.attached()).map((a) => `${a.iface} ${a.direction} ${a.pref} ${a.id}`);
const runs = async (d: MemoryDatapath) => (await filters(d)).map((f) => f.split(" ")[3]).sort();

beforeAll(async () => {
  [registry, nats] = await Promise.all([startRegistry(), startNats()]);
  work = mkdtempSync(join(tmpdir(), "aegis-agent-"));
  writeFileSync(join(work, "ci.pub"), ciKey.publicKey);
  trust = await loadTrust([join(work, "ci.pub")]);
  assigner = await startAssigner({ port: 0, natsUrl: nats.url, dataDir: join(work, "assigner"), registry: `${registry.host}/aegis/uploads`, adminToken: "operator-secret", trust: join(work, "ci.pub") });
  admin = new AssignerClient(assigner.url, "operator-secret");
  // An assigner that lies: forwards everything, rewrites for-host's checksum when told to, and any answer through `rewrite`.
  liar = { url: "", server: createServer(), paths: [] };
  liar.server.on("request", (req, res) => {
    if (liar.telemetryDown && req.method === "POST" && req.url!.endsWith("/telemetry")) {
      res.writeHead(503, { "content-type": "application/json" }).end(JSON.stringify({ error: "telemetry is down", code: "UNAVAILABLE" }));
      return;
    }
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    liar.paths.push(decodeURIComponent(req.url!));
    req.on("end", () => {
      if (liar.stall?.(decodeURIComponent(req.url!))) return; // never answers
      const held = liar.delay?.(decodeURIComponent(req.url!)) ?? 0;
      const headers = Object.fromEntries(Object.entries(req.headers).filter(([k]) => !["host", "content-length", "connection"].includes(k))) as Record<string, string>;
      const body = chunks.length > 0 ? Buffer.concat(chunks) : undefined;
      void fetch(new URL(req.url!, assigner.url), { method: req.method!, headers, ...(body ? { body } : {}) }).then(async (answer) => {
        let bytes: Buffer = Buffer.from(await answer.arrayBuffer());
        if (liar.checksum && req.url!.startsWith("/artifacts/for-host/") && answer.status === 200) {
          bytes = Buffer.from(bytes.toString().replace(/"checksum":"sha256-[0-9a-f]{64}"/g, `"checksum":"${liar.checksum}"`));
        }
        if (liar.rewrite && answer.status === 200) bytes = liar.rewrite(decodeURIComponent(req.url!), bytes);
        if (held > 0) await new Promise((r) => setTimeout(r, held));
        res.writeHead(answer.status, { "content-type": answer.headers.get("content-type") ?? "application/json", ...(answer.headers.get("etag") ? { etag: answer.headers.get("etag")! } : {}) });
        const spread = liar.trickle?.(decodeURIComponent(req.url!)) ?? 0;
        const piece = Math.ceil(bytes.length / 20);
        let at = 0;
        for (; spread > 0 && at + piece < bytes.length && !res.destroyed; at += piece) {
          res.write(bytes.subarray(at, at + piece));
          await new Promise((r) => setTimeout(r, spread / 20));
        }
        if (!res.destroyed) res.end(bytes.subarray(at));
      });
    });
  });
  await new Promise<void>((resolve) => liar.server.listen(0, "127.0.0.1", resolve));
  liar.url = `http://127.0.0.1:${(liar.server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  for (const r of running) await r.agent.stop();
  await new Promise((resolve) => liar?.server.close(resolve));
  await assigner?.close();
  await Promise.all([registry?.stop(), nats?.stop()]);
  rmSync(work, { recursive: true, force: true });
});

describe("identity", () => {
  it("registers once with a 0600 key and token, reuses them, and registers again with the same key when the token is refused", async () => {
    const first = await agentFor("id-host");
    await first.agent.reconcile();
    const key = readFileSync(join(first.stateDir, "agent.key"), "utf8");
    const token = JSON.parse(readFileSync(join(first.stateDir, "agent.token"), "utf8")) as { token: string; agent_uid: string };
    expect(statSync(join(first.stateDir, "agent.key")).mode & 0o777, "key mode").toBe(0o600);
    expect(statSync(join(first.stateDir, "agent.token")).mode & 0o777, "token mode").toBe(0o600);
    const hosts = await admin.hosts();
    const registered = hosts.agents.find((a) => a.host_id === "id-host");
    expect(registered?.hostname, "hostname sent").toBeTruthy();
    expect(registered?.capabilities, "capabilities probed and sent").toEqual(capabilitiesJson(probeKernelFeatures()));
    expect(registered?.capabilities?.kernel_version, "the kernel version").toMatch(/^\d+\.\d+/);
    await first.agent.stop();

    const again = await agentFor("id-host", { stateDir: first.stateDir, kernel: first.datapath.kernel });
    await again.agent.reconcile();
    expect(again.logs.filter((l) => l.startsWith("registered")), "no second registration").toEqual([]);
    await again.agent.stop();

    writeFileSync(join(first.stateDir, "agent.token"), JSON.stringify({ ...token, assigner: assigner.url, host_id: "id-host", token: "revoked" }));
    const third = await agentFor("id-host", { stateDir: first.stateDir, kernel: first.datapath.kernel });
    await third.agent.reconcile();
    expect(third.logs.some((l) => l.includes("refused the agent token")), third.logs.join("\n")).toBe(true);
    expect(readFileSync(join(first.stateDir, "agent.key"), "utf8"), "same key").toBe(key);
    expect(JSON.parse(readFileSync(join(first.stateDir, "agent.token"), "utf8")).token, "new token").not.toBe("revoked");
    await third.agent.stop();

    const saved = JSON.parse(readFileSync(join(first.stateDir, "agent.token"), "utf8")) as { kernel?: string };
    expect(saved.kernel, "the kernel the registration describes").toBe(release());
    writeFileSync(join(first.stateDir, "agent.token"), JSON.stringify({ ...saved, kernel: "4.19.0-before-the-upgrade" }));
    const upgraded = await agentFor("id-host", { stateDir: first.stateDir, kernel: first.datapath.kernel });
    await upgraded.agent.reconcile();
    expect(upgraded.logs.filter((l) => l.startsWith("registered")), "a new kernel registers again (fresh capabilities)").toHaveLength(1);
  });
});

describe("sequence numbers", () => {
  it("start above those reserved on file, so reports after a restart are never taken for replays, whatever the clock did", async () => {
    const v = await publish("2.5.0", ciKey, "seq-policy");
    const stateDir = mkdtempSync(join(work, "state-seq-"));
    // What an agent whose clock ran two hours ahead reserved before it was restarted (the clock since stepped back).
    const ahead = (Date.now() + 2 * 3_600_000) * 1000;
    writeFileSync(join(stateDir, "seq"), `${ahead}\n`);
    const { agent } = await agentFor("seq-host", { stateDir });
    await agent.reconcile();
    await admin.assign(v, "seq-host");
    await agent.reconcile();
    const seq = (await admin.status(v)).hosts.find((h) => h.host_id === "seq-host")?.seq;
    expect(seq, "the assigner took the report, numbered above the reserve").toBeGreaterThan(ahead);
    expect(Number(readFileSync(join(stateDir, "seq"), "utf8")), "and the reserve on file is above what was sent").toBeGreaterThan(seq!);
    await agent.stop();
    writeFileSync(join(stateDir, "seq"), "soon\n");
    await expect(runAgent("seq-host", { stateDir }), "a file that holds no number").rejects.toThrow(/seq does not hold a sequence number: "soon\\n"/);
  });
});

describe("the state dir", () => {
  it("is one agent's at a time: a second refuses to start, naming it, until the first stops (or a failed start gives it up)", async () => {
    const stateDir = mkdtempSync(join(work, "state-lock-"));
    const first = await runAgent("lock-host", { stateDir });
    await expect(runAgent("lock-host", { stateDir }), "a second agent on it").rejects.toMatchObject({ code: "STATE_DIR_IN_USE", message: expect.stringContaining(`another agent runs on ${stateDir}`) });
    await first.agent.stop();
    writeFileSync(join(stateDir, "seq"), "x\n");
    await expect(runAgent("lock-host", { stateDir }), "a start that fails").rejects.toThrow(/does not hold a sequence number/);
    writeFileSync(join(stateDir, "seq"), "0\n");
    const third = await runAgent("lock-host", { stateDir });
    running.push(third);
    expect(existsSync(join(stateDir, "agent.lock")), "the lock file").toBe(true);
  });
});

describe("enforcement", () => {
  it("assign → loaded and attached; new version → replaced at the same pref; unassign → detached, unpinned, pruned", async () => {
    const v1 = await publish("1.0.0");
    const v2 = await publish("2.0.0");
    const { agent, datapath, events, stateDir } = await agentFor("enforce-host");
    const pref = basePref("block-icmp-8888");

    await admin.assign(v1, "enforce-host");
    await agent.reconcile();
    expect(await filters(datapath), "v1 attached on each non-loopback interface, egress").toEqual([`eth0 egress ${pref} ${v1}`, `eth1 egress ${pref} ${v1}`]);
    expect(events.filter((e) => e.id === v1 && !e.counters).map((e) => e.event), "v1 steps").toEqual(["received", "verified", "program_loaded", "attached"]);
    expect(events.at(-1)?.counters, "counters reported").toEqual({ rule0: 0 });

    const ops: string[] = [];
    const attach = datapath.attach.bind(datapath);
    const detach = datapath.detach.bind(datapath);
    datapath.attach = (id, hook) => (ops.push(`attach ${hook.iface} ${id === v2 ? "v2" : id}`), attach(id, hook));
    datapath.detach = (hook) => (ops.push(`detach ${hook.iface}`), detach(hook));
    await admin.unassign(v1, "enforce-host");
    await admin.assign(v2, "enforce-host");
    await agent.reconcile();
    expect(await filters(datapath), "v2 at v1's pref").toEqual([`eth0 egress ${pref} ${v2}`, `eth1 egress ${pref} ${v2}`]);
    expect(ops, "replaced in place: no detach, so no gap").toEqual(["attach eth0 v2", "attach eth1 v2"]);
    expect((await datapath.loaded()).map((p) => p.id), "v1 unpinned").toEqual([v2]);
    expect(events.filter((e) => e.id === v1).at(-1)?.event, "v1 reported detached").toBe("detached");

    await admin.unassign(v2, "enforce-host");
    await agent.reconcile();
    expect(await filters(datapath), "nothing attached").toEqual([]);
    expect(await datapath.loaded(), "nothing pinned").toEqual([]);
    for (const digest of [v1, v2]) expect(existsSync(join(stateDir, "cache", "blobs", "sha256", digest.slice(7))), `${digest} pruned`).toBe(false);
  });

  it("refuses unsigned, untrusted and wrongly checksummed artifacts, keeping the previous version in force, with the code", async () => {
    const good = await publish("3.0.0");
    const unsigned = await publish("3.1.0", null);
    const untrusted = await publish("3.2.0", otherKey);
    const { agent, datapath, events } = await agentFor("refuse-host", { assigner: liar.url });
    const pref = basePref("block-icmp-8888");
    await admin.assign(good, "refuse-host");
    await agent.reconcile();
    const before = await filters(datapath);
    expect(before, "good version attached").toEqual([`eth0 egress ${pref} ${good}`, `eth1 egress ${pref} ${good}`]);

    await admin.unassign(good, "refuse-host");
    for (const [digest, code] of [[unsigned, "NO_SIGNATURE"], [untrusted, "UNTRUSTED_KEY"]] as const) {
      await admin.assign(digest, "refuse-host");
      await agent.reconcile();
      expect(await filters(datapath), `${code}: previous version still in force`).toEqual(before);
      const failed = events.find((e) => e.id === digest && e.event === "failed");
      expect(failed?.code, `${code}: ${failed?.reason}`).toBe(code);
      expect(liar.paths.filter((p) => p.startsWith(`/artifacts/${digest}/`)), `${code}: the registry's verdict stands (the assigner is asked only when no registry can be read)`).toEqual([]);
      await admin.unassign(digest, "refuse-host");
    }

    const next = await publish("3.3.0");
    liar.checksum = `sha256-${"0".repeat(64)}`;
    try {
      await admin.assign(next, "refuse-host");
      await agent.reconcile();
      expect(await filters(datapath), "lying checksum: previous version in force").toEqual(before);
      expect(events.find((e) => e.id === next && e.event === "failed")?.code, "lying checksum").toBe("CHECKSUM_MISMATCH");
    } finally {
      delete liar.checksum;
    }
    await agent.reconcile();
    expect(await filters(datapath), "honest checksum: the new version replaces").toEqual([`eth0 egress ${pref} ${next}`, `eth1 egress ${pref} ${next}`]);
  });

  it("shows in /metrics what is in force, its drops, refusals by code and the last poll", async () => {
    const good = await publish("1.0.0", ciKey, "metrics-policy");
    const unsigned = await publish("1.1.0", null, "metrics-other");
    const { agent, datapath } = await agentFor("metrics-host");
    const before = Date.now() / 1000;
    await admin.assign(good, "metrics-host");
    await admin.assign(unsigned, "metrics-host");
    await agent.reconcile();
    datapath.setCounters(good, [41]);
    const lines = (await agent.metrics.text()).split("\n");
    expect(lines, "in force").toContain("aegis_agent_policies_in_force 1");
    expect(lines, "drops").toContain(`aegis_agent_drops_total{policy="metrics-policy",version="1.0.0",digest="${good}"} 41`);
    expect(lines, "the refusal").toContain('aegis_agent_failures_total{code="NO_SIGNATURE"} 1');
    const polled = Number(lines.find((l) => l.startsWith("aegis_agent_last_successful_poll_timestamp_seconds "))?.split(" ")[1]);
    expect(polled, "the last poll").toBeGreaterThanOrEqual(Math.floor(before));
  });

  it("an attach that fails pass after pass is reported once, and stays the digest's latest report: its loads are not said again", async () => {
    const v = await publish("4.2.0", ciKey, "attach-fails");
    const { agent, datapath, events } = await agentFor("attach-fails-host");
    await agent.reconcile();
    await admin.assign(v, "attach-fails-host");
    for (let pass = 0; pass < 3; pass++) {
      datapath.failNext("attach");
      await agent.reconcile();
    }
    expect(events.filter((e) => e.id === v).map((e) => e.event), "three passes: loaded (said once), failed (said once)").toEqual(["received", "verified", "program_loaded", "failed"]);
    expect((await admin.status(v)).hosts.find((h) => h.host_id === "attach-fails-host")?.event, "the assigner's latest report").toBe("failed");
    await agent.reconcile();
    expect(events.filter((e) => e.id === v).map((e) => e.event).slice(-2), "then it attaches").toEqual(["attached", "attached"]);
  });

  it("leaves the previous version in force when the kernel refuses the new one, and reports LOAD_FAILED", async () => {
    const v1 = await publish("4.0.0");
    const v2 = await publish("4.1.0");
    const { agent, datapath, events } = await agentFor("kernel-host");
    await admin.assign(v1, "kernel-host");
    await agent.reconcile();
    const before = await filters(datapath);
    await admin.unassign(v1, "kernel-host");
    await admin.assign(v2, "kernel-host");
    datapath.failNext("load");
    await agent.reconcile();
    expect(await filters(datapath), "v1 still attached").toEqual(before);
    expect(events.find((e) => e.id === v2 && e.event === "failed")?.code, "load failure").toBe("LOAD_FAILED");
    // The second attach fails, once the first has replaced v1 on its hook: v1 is put back there.
    datapath.failNext("attach", undefined, 1);
    await agent.reconcile();
    expect(await filters(datapath), "attach failure: v1 still attached").toEqual(before);
    expect((await datapath.loaded()).map((p) => p.id), "v2 not left pinned").toEqual([v1]);

    // While v2 keeps failing, v1 is held as a kept policy is: a deleted filter comes back, a new interface is covered.
    const [first] = await datapath.attached();
    await datapath.detach(first!);
    datapath.kernel.addInterface("eth9");
    datapath.failNext("load");
    await agent.reconcile();
    const pref = basePref("block-icmp-8888");
    expect(await filters(datapath), "v1 restored and on eth9, v2 still refused").toEqual([...before, `eth9 egress ${pref} ${v1}`].sort());
    expect(events.filter((e) => e.id === v1 && e.event === "drift"), "the drift reported").toHaveLength(1);

    // Restoring v1 fails too, pass after pass: that is v1's failure, reported once; v2's step still fails with its own code.
    for (let pass = 0; pass < 2; pass++) {
      await datapath.detach(first!).catch(() => undefined);
      datapath.failNext("load");
      datapath.failNext("attach");
      await agent.reconcile();
    }
    // Each change of v2's failure is reported once: the load, the second attach, the load again (unchanged this pass).
    expect(events.filter((e) => e.id === v2 && e.event === "failed").map((e) => e.code), "v2's failures").toEqual(["LOAD_FAILED", "TC_FAILED", "LOAD_FAILED"]);
    expect(events.filter((e) => e.id === v1 && e.event === "failed").map((e) => [e.code, e.reason?.split(":")[0]]), "v1's").toEqual([["TC_FAILED", "keep"]]);
  });

  it("a device gone between the listing and the attach is skipped; a hook that fails does not stop the others from being restored", async () => {
    const v1 = await publish("4.5.0", ciKey, "busy-host-policy");
    const { agent, datapath, events } = await agentFor("busy-host");
    // The agent's listing names a container's veth that is gone by the time it attaches there.
    const listed = datapath.interfaces.bind(datapath);
    let stale = true;
    datapath.interfaces = async () => {
      const real = await listed();
      if (!stale) return real;
      stale = false;
      return [...real, { name: "veth-gone", loopback: false, ethernet: true }];
    };
    await admin.assign(v1, "busy-host");
    await agent.reconcile();
    const pref = basePref("busy-host-policy");
    expect(await filters(datapath), "installed on the devices that exist").toEqual([`eth0 egress ${pref} ${v1}`, `eth1 egress ${pref} ${v1}`]);
    expect(events.filter((e) => e.id === v1 && e.event === "failed"), "no failure").toEqual([]);

    // Both filters deleted; restoring the first fails: the second is restored all the same, and the step's failure reported.
    for (const iface of ["eth0", "eth1"]) await datapath.detach({ iface, direction: "egress", pref });
    datapath.failNext("attach");
    await agent.reconcile();
    expect(await filters(datapath), "eth1 restored past eth0's failure").toEqual([`eth1 egress ${pref} ${v1}`]);
    expect(events.filter((e) => e.id === v1 && e.event === "failed").map((e) => e.code), "the keep's failure").toEqual(["TC_FAILED"]);
    await agent.reconcile();
    expect(await filters(datapath), "eth0 at the next pass").toEqual([`eth0 egress ${pref} ${v1}`, `eth1 egress ${pref} ${v1}`]);

    // The attach fails and the listing that would tell a device gone fails too: the attach's failure stands.
    await datapath.detach({ iface: "eth0", direction: "egress", pref });
    datapath.failNext("attach");
    let calls = 0;
    datapath.interfaces = () => (++calls === 2 ? Promise.reject(new Error("netlink busy")) : listed());
    await agent.reconcile();
    expect(events.filter((e) => e.id === v1 && e.event === "failed").map((e) => e.code), "reported again").toEqual(["TC_FAILED", "TC_FAILED"]);
  });

  it("adopts what is pinned and attached after a restart, without loading or attaching again", async () => {
    const v1 = await publish("5.0.0");
    const first = await agentFor("restart-host");
    await admin.assign(v1, "restart-host");
    await first.agent.reconcile();
    await first.agent.stop();
    const kernel = first.datapath.kernel;
    const before = await filters(first.datapath);
    const programs = kernel.nextProgramId;

    const second = await agentFor("restart-host", { kernel, stateDir: first.stateDir });
    const ops: string[] = [];
    for (const op of ["load", "attach", "detach", "unpin"] as const) {
      const original = second.datapath[op].bind(second.datapath) as (...args: unknown[]) => Promise<unknown>;
      (second.datapath as unknown as Record<string, unknown>)[op] = (...args: unknown[]) => (ops.push(op), original(...args));
    }
    await second.agent.reconcile();
    expect(second.logs.some((l) => l.startsWith(`adopted block-icmp-8888 ${v1}`)), second.logs.join("\n")).toBe(true);
    expect(await filters(second.datapath), "same filters").toEqual(before);
    expect([ops, kernel.nextProgramId], "nothing loaded or attached again").toEqual([[], programs]);

    // A new interface appears while the agent runs: it is attached there too.
    kernel.addInterface("eth2");
    await second.agent.reconcile();
    expect((await filters(second.datapath)).filter((f) => f.startsWith("eth2")), "new interface").toEqual([`eth2 egress ${basePref("block-icmp-8888")} ${v1}`]);

    // A tunnel hands the program bare IP packets, which it would misread: nothing is attached there, and that is said once.
    kernel.addInterface("wg0", { tunnel: true });
    await second.agent.reconcile();
    await second.agent.reconcile();
    expect((await filters(second.datapath)).filter((f) => f.startsWith("wg0")), "the tunnel").toEqual([]);
    expect(second.logs.filter((l) => l.startsWith("interface wg0 carries no Ethernet frames")), second.logs.join("\n")).toHaveLength(1);
  });

  it("a flood of NATS wake-ups brings a pass at most every minWakeGapMs, not one after another, and is still acted on", async () => {
    const gap = 400;
    const host = "wake-flood-host";
    const { logs } = await agentFor(host, { nats: true, assigner: liar.url, minWakeGapMs: gap });
    const polls = () => liar.paths.filter((p) => p.startsWith(`/artifacts/for-host/${host}`)).length;
    await until("NATS connected", () => logs.some((l) => l.startsWith("NATS connected")));
    const notifier = await connect({ servers: nats.url });
    try {
      const wake = async () => (notifier.publish(`aegis.assignments.${host}`, "{}"), await notifier.flush());
      // The subscription is made after the connection: wake until a pass answers, so the flood below meets it.
      const before = polls();
      await until("a wake-up acted on", async () => (await wake(), polls() > before));
      const start = performance.now();
      const first = polls();
      await floodWakeUps(notifier, host, 4 * gap);
      // Passes brought forward by the flood start at least `gap` apart (a pass may start up to a gap after the last wake-up).
      await new Promise((r) => setTimeout(r, gap + 100));
      const span = performance.now() - start;
      const made = polls() - first;
      expect(made, `passes during a flood of ${Math.round(span)} ms`).toBeLessThanOrEqual(Math.floor(span / gap) + 1);
      expect(made, "the flood still wakes the agent").toBeGreaterThan(0);
    } finally {
      await notifier.close();
    }
  });

  it("a flood of wake-ups leaves minWakeGapMs idle between passes even when a pass takes longer than the gap", async () => {
    const gap = 200;
    const answerMs = 300;
    const host = "wake-slow-host";
    const { logs } = await agentFor(host, { nats: true, assigner: liar.url, minWakeGapMs: gap });
    // Each poll of this host (a pass's start) is answered answerMs late: a pass lasts longer than the gap.
    const asked: number[] = [];
    liar.delay = (path) => (path.startsWith(`/artifacts/for-host/${host}`) ? (asked.push(performance.now()), answerMs) : 0);
    await until("NATS connected", () => logs.some((l) => l.startsWith("NATS connected")));
    const notifier = await connect({ servers: nats.url });
    try {
      const start = performance.now();
      await floodWakeUps(notifier, host, 3_000);
      const during = asked.filter((t) => t >= start);
      expect(during.length, "passes during 3 s of wake-ups").toBeGreaterThan(1);
      // A pass ends after its poll is answered: the next starts no sooner than a gap after that (a few ms of slack for timers).
      const idle = during.slice(1).map((t, i) => Math.round(t - (during[i]! + answerMs)));
      expect(Math.min(...idle), `ms idle between passes (answered ${answerMs} ms late, gap ${gap} ms): ${idle.join(", ")}`).toBeGreaterThanOrEqual(gap - 20);
    } finally {
      delete liar.delay;
      await notifier.close();
    }
  });

  it("wake-ups do not cut a failure backoff short: a failing assigner is asked no more often for a flood of them", async () => {
    let asked = 0;
    const failing = createServer((_req, res) => {
      asked++;
      res.writeHead(503, { "content-type": "application/json" }).end(JSON.stringify({ error: "down for the test", code: "UNAVAILABLE" }));
    });
    await new Promise<void>((resolve) => failing.listen(0, "127.0.0.1", resolve));
    const host = "wake-backoff-host";
    try {
      const { logs } = await agentFor(host, { nats: true, assigner: `http://127.0.0.1:${(failing.address() as AddressInfo).port}`, minWakeGapMs: 50 });
      await until("NATS connected and the first pass failed", () => logs.some((l) => l.startsWith("NATS connected")) && asked > 0);
      const notifier = await connect({ servers: nats.url });
      try {
        const before = asked;
        await floodWakeUps(notifier, host, 3_000);
        // Backoffs of up to 1, 2, 4, 8 … s (full jitter) leave room for a few passes in 3 s; the 50 ms gap alone, 60.
        expect(asked - before, "passes (each one request) during 3 s of wake-ups").toBeLessThanOrEqual(7);
      } finally {
        await notifier.close();
      }
    } finally {
      await new Promise((resolve) => (failing.close(resolve), failing.closeAllConnections()));
    }
  });

  it("never logs the NATS URL's user and password", async () => {
    // The test's nats-server has no authorization: it takes the connection whatever the credentials.
    const { logs } = await agentFor("nats-secret-host", { nats: nats.url.replace("nats://", "nats://aegis:s3cret-word@") });
    await until("NATS connected", () => logs.some((l) => l.startsWith("NATS connected")));
    expect(logs.some((l) => l.startsWith(`connecting to NATS at ${nats.url}`)), logs.join("\n")).toBe(true);
    expect(logs.filter((l) => l.includes("s3cret-word")), "log lines with the password").toEqual([]);
    // nats.js also takes a URL without its scheme.
    const bare = await agentFor("nats-bare-host", { nats: nats.url.replace("nats://", "aegis:s3cret-word@") });
    await until("NATS connected (no scheme)", () => bare.logs.some((l) => l.startsWith("NATS connected")));
    expect(bare.logs.filter((l) => l.includes("s3cret-word")), "log lines with the password, no scheme").toEqual([]);
  });

  it("a NATS connection closed for good (nats.js gives up, as on refused credentials) is dialled again, and said", async () => {
    const { agent, logs } = await agentFor("nats-closed-host", { nats: true, natsRetryMs: 20 });
    await until("NATS connected", () => logs.some((l) => l.startsWith("NATS connected")));
    // What nats.js does itself after two authorization errors in a row: close the connection, never to redial.
    const closeIt = () => (agent as unknown as { nats: { close(): Promise<void> } }).nats.close();
    await closeIt();
    await until("NATS connected again", () => logs.filter((l) => l.startsWith("NATS connected")).length === 2);
    // Closed again at once: dialled again after a (growing) wait.
    await closeIt();
    await until("NATS connected a third time", () => logs.filter((l) => l.startsWith("NATS connected")).length === 3);
    expect(logs.filter((l) => l.startsWith("NATS closed the connection")), logs.join("\n")).toEqual(Array(2).fill("NATS closed the connection: polling only, connecting again"));
  });

  it("stop() ends its attempts to reach NATS while NATS is away, and a NATS that comes up later is reached", async () => {
    const dropping = await startDroppingPort();
    try {
      const away = await runAgent("nats-away-host", { nats: dropping.url, natsRetryMs: 20 });
      await until("three attempts", () => dropping.dials() >= 3);
      expect(away.logs.filter((l) => l.startsWith("NATS unavailable")), `one line for the failures:\n${away.logs.join("\n")}`).toHaveLength(1);
      await away.agent.stop();
      const stopped = dropping.dials();
      // Over twice the longest wait between attempts (10 × 20 ms).
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(dropping.dials(), "attempts after stop()").toBe(stopped);
    } finally {
      await dropping.close();
    }

    const late = await startNats();
    await late.kill();
    const agent = await runAgent("nats-late-host", { nats: late.url, natsRetryMs: 20 });
    try {
      await until("NATS unavailable", () => agent.logs.some((l) => l.startsWith("NATS unavailable")));
      await late.start();
      await until("NATS connected once it came up", () => agent.logs.some((l) => l.startsWith("NATS connected")));
    } finally {
      await agent.agent.stop();
      await late.stop();
    }
  });

  /** An agent for `hostId` on a nats-server that denies it `deny`; stopped with its server. */
  async function onStrictNats(deny: NatsDenial, hostId: string): Promise<Running & { strict: StrictNats; stop: () => Promise<void> }> {
    const strict = await startStrictNats(deny);
    const running = await runAgent(hostId, { nats: strict.url, natsRetryMs: 20 });
    return { ...running, strict, stop: async () => (await running.agent.stop(), await strict.stop()) };
  }

  it("a NATS that refuses its subscription leaves it polling, and it says so; it subscribes again once NATS allows it", async () => {
    const v1 = await publish("6.0.1", ciKey, "nats-denied");
    const running = await onStrictNats({ subscribe: "aegis.assignments.>" }, "nats-denied-host");
    try {
      const refused = "NATS refused the subscription to aegis.assignments.nats-denied-host";
      await until("the subscription refused", () => running.logs.some((l) => l.startsWith(refused)));
      expect(running.logs.find((l) => l.startsWith(refused)), "why").toMatch(/permission/i);
      await admin.assign(v1, "nats-denied-host");
      await running.agent.reconcile();
      expect((await filters(running.datapath)).length, "installed by the poll").toBe(2);
      // NATS's permissions fixed (a reload): the subscription is asked for again, and wakes the agent (its poll interval is an hour).
      await running.strict.deny({});
      await until("subscribed again", () => running.logs.some((l) => l === "NATS took the subscription to aegis.assignments.nats-denied-host: woken by it again"));
      // This NATS is not the assigner's: the test wakes the agent there as the assigner would.
      await admin.unassign(v1, "nats-denied-host");
      const notifier = await connect({ servers: running.strict.url });
      try {
        notifier.publish("aegis.assignments.nats-denied-host", "{}");
        await notifier.flush();
      } finally {
        await notifier.close();
      }
      await until("removed after the NATS wake-up", async () => (await filters(running.datapath)).length === 0);
      expect(running.logs.filter((l) => l.startsWith(refused)), "the refusal logged once").toHaveLength(1);
    } finally {
      await running.stop();
    }
  });

  it("a NATS that refuses what it publishes: its telemetry goes over HTTP, what NATS dropped included", async () => {
    const v1 = await publish("6.0.2", ciKey, "nats-mute");
    const unsigned = await publish("6.0.3", null, "nats-mute-unsigned");
    const running = await onStrictNats({ publish: "aegis.telemetry.>" }, "nats-mute-host");
    try {
      await until("NATS connected", () => running.logs.some((l) => l.startsWith("NATS connected")));
      await admin.assign(v1, "nats-mute-host");
      await admin.assign(unsigned, "nats-mute-host");
      // One pass: its messages go to NATS, which drops them and says so before the pass's flush is answered; they go over HTTP then.
      await running.agent.reconcile();
      const on = async (id: string) => (await admin.status(id)).hosts.find((h) => h.host_id === "nats-mute-host");
      expect(await on(v1), "the receipt").toMatchObject({ event: "attached" });
      expect(await on(unsigned), "the failure, reported once").toMatchObject({ event: "failed", code: "NO_SIGNATURE" });
      expect(running.logs.some((l) => l.startsWith("NATS refuses what this agent publishes")), running.logs.join("\n")).toBe(true);
    } finally {
      await running.stop();
    }
  });

  it("wakes at once on NATS and reports to the assigner", async () => {
    const v1 = await publish("6.0.0");
    const { datapath, logs } = await agentFor("nats-host", { nats: true });
    await until("NATS connected", () => logs.some((l) => l.startsWith("NATS connected")));
    await admin.assign(v1, "nats-host");
    await until("attached after the NATS wake-up (the poll interval is an hour)", async () => (await filters(datapath)).length === 2);
    await until("the assigner recorded attached", async () => (await admin.status(v1)).hosts.some((h) => h.host_id === "nats-host" && h.event === "attached"));
    const programId = (await datapath.loaded())[0]!.programId;
    expect((await admin.status(v1)).hosts.find((h) => h.host_id === "nats-host"), "the signed receipt, over NATS").toMatchObject({
      event: "attached",
      program_id: programId,
      interfaces: [
        { iface: "eth0", direction: "egress", pref: basePref("block-icmp-8888") },
        { iface: "eth1", direction: "egress", pref: basePref("block-icmp-8888") },
      ],
      counters: { rule0: 0 },
      since: expect.any(String),
    });
  });

  it("without NATS, sends the same signed messages over HTTP: the assigner shows attached from the receipt, with interfaces and counters", async () => {
    const v1 = await publish("6.1.0", ciKey, "http-telemetry");
    const unsigned = await publish("6.2.0", null, "http-refused");
    const { agent, datapath, stateDir, events, logs } = await agentFor("http-host");
    await admin.assign(v1, "http-host");
    await admin.assign(unsigned, "http-host");
    await agent.reconcile();
    const pref = basePref("http-telemetry");
    const program = (await datapath.loaded()).find((p) => p.id === v1)!;
    const record = (JSON.parse(readFileSync(join(stateDir, "installed.json"), "utf8")) as Record<string, { since: string }>)[v1]!;
    const shown = (await admin.status(v1)).hosts.find((h) => h.host_id === "http-host");
    expect(shown, "the signed receipt, over HTTP").toMatchObject({
      event: "attached",
      program_id: program.programId,
      interfaces: [
        { iface: "eth0", direction: "egress", pref },
        { iface: "eth1", direction: "egress", pref },
      ],
      since: record.since,
      counters: { rule0: 0 },
    });
    const uid = (JSON.parse(readFileSync(join(stateDir, "agent.token"), "utf8")) as { agent_uid: string }).agent_uid;
    const detail = await admin.call<{ status: { artifact_id: string; event: string; program_id?: number }[] }>("GET", `/agents/${uid}`);
    expect(detail.status.find((s) => s.artifact_id === v1), "/agents/{uid}").toMatchObject({ event: "attached", program_id: program.programId });
    expect((await admin.status(unsigned)).hosts.find((h) => h.host_id === "http-host"), "a failure with its code in `code`").toMatchObject({ event: "failed", code: "NO_SIGNATURE" });

    // The summary view (what a rollout polls): the event and its time, not the receipt's counters and interfaces.
    const summary = (await admin.status(v1, { summary: true })).hosts.find((h) => h.host_id === "http-host");
    expect(summary, "the summary view").toMatchObject({ event: "attached", time: shown!.time });
    expect(Object.keys(summary!).filter((k) => ["counters", "interfaces", "program_id", "since"].includes(k)), "receipt fields in the summary").toEqual([]);
    await expect(admin.call("GET", `/artifacts/${v1}/status?view=bogus`), "an unknown view").rejects.toMatchObject({ code: "BAD_REQUEST" });

    // The drop counter rises: the next pass's receipt says so.
    datapath.setCounters(v1, [5]);
    await agent.reconcile();
    expect((await admin.status(v1)).hosts.find((h) => h.host_id === "http-host")?.counters, "counters of the next receipt").toEqual({ rule0: 5 });

    // Counters that cannot be read: the receipt still goes, without them, and that is said once.
    const receipts = () => events.filter((e) => e.event === "attached" && e.id === v1);
    for (let pass = 0; pass < 2; pass++) {
      datapath.failNext("counters");
      const before = receipts().length;
      await agent.reconcile();
      expect(receipts().slice(before), `pass ${pass}: one receipt, with no counters`).toEqual([expect.not.objectContaining({ counters: expect.anything() })]);
    }
    expect(logs.filter((l) => l.startsWith("cannot read the counters of http-telemetry")), logs.join("\n")).toHaveLength(1);
    await agent.reconcile();
    expect(receipts().at(-1)?.counters, "read again").toEqual({ rule0: 5 });
  });

  it("without NATS, keeps the signed messages while the assigner cannot take them, and delivers them at the next pass", async () => {
    const v1 = await publish("6.3.0", ciKey, "http-outage");
    const unsigned = await publish("6.4.0", null, "http-outage-refused");
    const { agent, logs } = await agentFor("outage-telemetry-host", { assigner: liar.url });
    await admin.assign(v1, "outage-telemetry-host");
    await admin.assign(unsigned, "outage-telemetry-host");
    liar.telemetryDown = true;
    try {
      await agent.reconcile();
      expect((await admin.status(unsigned)).hosts.filter((h) => h.host_id === "outage-telemetry-host"), "nothing delivered yet").toEqual([]);
      expect(logs.filter((l) => l.startsWith("telemetry over HTTP failed [UNAVAILABLE")), logs.join("\n")).toHaveLength(1);
    } finally {
      liar.telemetryDown = false;
    }
    await agent.reconcile();
    // The failure is reported once, during the outage: only the kept message can bring it.
    expect((await admin.status(unsigned)).hosts.find((h) => h.host_id === "outage-telemetry-host"), "the kept failure, delivered").toMatchObject({ event: "failed", code: "NO_SIGNATURE" });
    expect((await admin.status(v1)).hosts.find((h) => h.host_id === "outage-telemetry-host")?.event, "and the receipt").toBe("attached");
  });

  it("restores a filter someone deleted or replaced, reporting drift, and attaches on a configured interface once it appears", async () => {
    const v1 = await publish("7.0.0");
    const { agent, datapath, events, logs } = await agentFor("drift-host", { ifaces: ["eth0", "eth9"] });
    const pref = basePref("block-icmp-8888");
    const shown = async () => (await admin.status(v1)).hosts.find((h) => h.host_id === "drift-host");
    await admin.assign(v1, "drift-host");
    await agent.reconcile();
    expect(await filters(datapath), "only the interface that exists").toEqual([`eth0 egress ${pref} ${v1}`]);
    expect(logs.filter((l) => l.startsWith("interface eth9")), "the missing interface, logged once").toHaveLength(1);
    const since = (await shown())?.since;
    expect(since, "attached since, from the receipt").toBeTruthy();

    await datapath.detach({ iface: "eth0", direction: "egress", pref });
    await agent.reconcile();
    expect(await filters(datapath), "deleted filter restored").toEqual([`eth0 egress ${pref} ${v1}`]);
    expect(events.filter((e) => e.event === "drift").map((e) => e.reason), "drift reported").toEqual([`eth0 egress pref ${pref} deleted: restoring`]);
    expect(logs.some((l) => l.startsWith(`drift block-icmp-8888 7.0.0 ${v1}`)), logs.join("\n")).toBe(true);
    const restored = await shown();
    expect(restored?.event, "drift, then the receipt: attached").toBe("attached");
    expect(restored?.since, "since starts again after a lapse").not.toBe(since);

    const foreign = datapath.kernel.nextProgramId;
    datapath.attachForeign({ iface: "eth0", direction: "egress", pref });
    await agent.reconcile();
    expect(await filters(datapath), "replaced filter restored").toEqual([`eth0 egress ${pref} ${v1}`]);
    expect(events.filter((e) => e.event === "drift").at(-1)?.reason, "replaced: by which program").toBe(`eth0 egress pref ${pref} replaced by program id ${1_000_000 + foreign}: restoring`);

    datapath.kernel.addInterface("eth9");
    await agent.reconcile();
    expect(await filters(datapath), "eth9 once it appears").toEqual([`eth0 egress ${pref} ${v1}`, `eth9 egress ${pref} ${v1}`]);
    expect(events.filter((e) => e.event === "drift"), "a new interface is no drift").toHaveLength(2);
    expect((await shown())?.interfaces, "the receipt names both interfaces").toEqual([
      { iface: "eth0", direction: "egress", pref },
      { iface: "eth9", direction: "egress", pref },
    ]);
    await agent.reconcile();
    expect(logs.filter((l) => l.startsWith("interface eth9")), "still logged once").toHaveLength(1);
  });

  it("--dry-run verifies and says plainly that nothing is enforced, and touches nothing", async () => {
    const v1 = await publish("8.0.0");
    const unsigned = await publish("8.1.0", null, "other-policy");
    // Where BPF cannot load, reading the kernel fails too: a dry run goes on.
    const noBpf = new MemoryDatapath();
    const { loaded, attached } = noBpf;
    noBpf.loaded = () => Promise.reject(new Error("bpftool: Operation not permitted"));
    noBpf.attached = noBpf.loaded as never;
    const { agent, datapath, events, logs } = await agentFor("dry-host", { dryRun: true, datapath: noBpf });
    await admin.assign(v1, "dry-host");
    await admin.assign(unsigned, "dry-host");
    await agent.reconcile();
    await agent.reconcile();
    datapath.loaded = loaded.bind(datapath);
    datapath.attached = attached.bind(datapath);
    expect([await datapath.loaded(), await datapath.attached()], "nothing loaded or attached").toEqual([[], []]);
    expect(logs.some((l) => l.startsWith("dry run: cannot read the datapath")), logs.join("\n")).toBe(true);
    expect(logs.some((l) => l.includes("NOTHING IS ENFORCED")), logs.join("\n")).toBe(true);
    expect(logs.filter((l) => l.startsWith(`dry run: would load and attach block-icmp-8888 8.0.0 ${v1}`)), "said once").toHaveLength(1);
    expect(events.filter((e) => e.id === v1).map((e) => e.event), "verified once").toEqual(["received", "verified"]);
    expect(events.filter((e) => e.id === unsigned).map((e) => [e.event, e.code]), "unsigned refused once").toEqual([["received", undefined], ["failed", "NO_SIGNATURE"]]);
  });

  it("recovers from a crash between loading and recording: names an attached program from its bundle, attaches an unattached one", async () => {
    const v1 = await publish("9.0.0");
    const first = await agentFor("crash-host");
    await admin.assign(v1, "crash-host");
    await first.agent.reconcile();
    await first.agent.stop();
    const kernel = first.datapath.kernel;
    const before = await filters(first.datapath);
    rmSync(join(first.stateDir, "installed.json"));

    const second = await agentFor("crash-host", { kernel, stateDir: first.stateDir });
    await second.agent.reconcile();
    expect(await filters(second.datapath), "attached program kept as it was").toEqual(before);
    const installed = JSON.parse(readFileSync(join(first.stateDir, "installed.json"), "utf8")) as Record<string, { name: string; pref: number }>;
    expect(installed[v1], "record rebuilt from the verified bundle").toMatchObject({ name: "block-icmp-8888", pref: basePref("block-icmp-8888") });
    await second.agent.stop();

    // Loaded, never attached: the next agent attaches it without loading another program.
    for (const hook of await second.datapath.attached()) await second.datapath.detach(hook);
    rmSync(join(first.stateDir, "installed.json"));
    const programs = kernel.nextProgramId;
    const third = await agentFor("crash-host", { kernel, stateDir: first.stateDir });
    await third.agent.reconcile();
    expect([await filters(third.datapath), kernel.nextProgramId], "attached, same program").toEqual([before, programs]);
  });

  it("pulls from the mirrors in order, refusing a tampering one, and falls back to the reference", async () => {
    const v1 = await publish("10.0.0");
    const v2 = await publish("10.1.0", ciKey, "mirror-only");
    const tampering = await startRegistryProxy(registry.url, { tamperBlobs: true });
    try {
      const layout = join(work, "mirror-layout");
      await copy(new RemoteRepository(registry.host, "policies/agent"), v1, new OciLayoutTarget(layout), undefined, { referrers: true });
      const { agent, events, logs } = await agentFor("mirror-host", { mirrors: [`${tampering.host}/policies/agent`, `oci:${layout}`] });
      await admin.assign(v1, "mirror-host");
      await admin.assign(v2, "mirror-host");
      await agent.reconcile();
      // By id: the assigner lists digests sorted, so which comes first depends on the bundles' bytes.
      const sources = new Map(events.filter((e) => e.event === "verified").map((e) => [e.id, e.reason?.replace(/^.*, from /, "")]));
      // The whole pass, should this fail (it once did under heavy load, with no message kept to say why).
      const pass = `v1 ${v1}, v2 ${v2}\nevents: ${JSON.stringify(events)}\nlog:\n${logs.join("\n")}`;
      expect(sources, `v1 from the layout mirror (the tampering one refused), v2 (in no mirror) from its reference\n${pass}`).toEqual(
        new Map([
          [v1, `oci:${layout}@${v1}`],
          [v2, `${registry.host}/policies/agent@${v2}`],
        ]),
      );
      expect(tampering.requests.some((r) => r.path.includes("/blobs/")), `the tampering mirror was tried first\n${pass}`).toBe(true);
    } finally {
      await tampering.stop();
    }
  });

  it("does not read a reference naming a directory on this host, nor one outside the allowed registries: the assigner's copy is asked instead", async () => {
    const digest = await publish("10.4.0", ciKey, "where-references-point");
    // The layout holds a good copy of the artifact: were it read, it would be the source.
    const layout = join(work, "local-reference-layout");
    await copy(new RemoteRepository(registry.host, "policies/agent"), digest, new OciLayoutTarget(layout), undefined, { referrers: true });
    const source = (r: Running) => r.events.find((e) => e.id === digest && e.event === "verified")?.reason?.replace(/^.*, from /, "");
    const run = async (host: string, options: Parameters<typeof runAgent>[1]) => {
      const r = await agentFor(host, options);
      await admin.assign(digest, host);
      await r.agent.reconcile();
      return r;
    };
    liar.rewrite = (path, body) => (path.startsWith("/artifacts/for-host/") ? Buffer.from(body.toString().replaceAll(`"${registry.host}/policies/agent@${digest}"`, `"oci:${layout}@${digest}"`)) : body);
    try {
      const local = await run("local-reference-host", { assigner: liar.url });
      expect(source(local), `a reference to oci:${layout}: ${JSON.stringify(local.events)}`).toBe(`the assigner at ${liar.url}`);
      // With the assigner's copy out of reach too, the code is the assigner's (the only source asked), and the reason
      // also says why the reference was not read.
      liar.stall = (path) => path.startsWith(`/artifacts/${digest}/`);
      const stalled = await run("local-reference-stalled", { assigner: liar.url, requestTimeoutMs: 1_000 });
      const failed = stalled.events.find((e) => e.id === digest && e.event === "failed");
      expect(failed?.code, `oci: reference, assigner stalled: ${JSON.stringify(stalled.events)}`).toBe("UNAVAILABLE");
      expect(failed?.reason, "the reason names the reference and why it was not read").toContain(`oci:${layout}@${digest}: not read: references from the assigner must name a registry, not a directory on this host`);
    } finally {
      delete liar.rewrite;
      delete liar.stall;
      liar.server.closeAllConnections();
    }
    const elsewhere = await run("allow-other-host", { allowedRegistries: ["registry.example:5000"] });
    expect(source(elsewhere), `a registry not allowed: ${JSON.stringify(elsewhere.events)}`).toBe(`the assigner at ${assigner.url}`);
    const allowed = await run("allow-this-host", { allowedRegistries: ["registry.example:5000", registry.host.toUpperCase()] });
    expect(source(allowed), `an allowed registry (any case): ${JSON.stringify(allowed.events)}`).toBe(`${registry.host}/policies/agent@${digest}`);
  });

  it("reports a mirror's verdict, not the unreachable reference tried after it, naming both sources", async () => {
    const untrusted = await publish("10.2.0", otherKey, "mirror-verdict");
    const layout = join(work, "verdict-layout");
    await copy(new RemoteRepository(registry.host, "policies/agent"), untrusted, new OciLayoutTarget(layout), undefined, { referrers: true });
    liar.rewrite = (path, body) => (path.startsWith("/artifacts/for-host/") ? Buffer.from(body.toString().replaceAll(`"${registry.host}/`, '"127.0.0.1:1/')) : body);
    try {
      const { agent, events } = await agentFor("mirror-verdict-host", { assigner: liar.url, mirrors: [`oci:${layout}`], requestTimeoutMs: 2_000 });
      await admin.assign(untrusted, "mirror-verdict-host");
      await agent.reconcile();
      const failed = events.filter((e) => e.id === untrusted && e.event === "failed");
      expect(failed.map((e) => e.code), `the mirror's verdict is the code reported: ${JSON.stringify(failed)}`).toEqual(["UNTRUSTED_KEY"]);
      expect(failed[0]?.reason, "the reason names the mirror and its verdict").toContain(`oci:${layout}: `);
      expect(failed[0]?.reason, "the reason names the unreachable reference and its code").toContain(`127.0.0.1:1/policies/agent@${untrusted}: UNREACHABLE`);
      const counted = (await agent.metrics.text()).split("\n").filter((l) => l.startsWith("aegis_agent_failures_total{"));
      expect(counted, "the failure metric counts the verdict").toEqual([`aegis_agent_failures_total{code="UNTRUSTED_KEY"} 1`]);
      expect(liar.paths.filter((p) => p.startsWith(`/artifacts/${untrusted}/`)), "a registry's verdict stands: the assigner is not asked").toEqual([]);
    } finally {
      delete liar.rewrite;
    }
  });

  it("reports a registry's refusal by code and HTTP status, never with the text it answered, which only the local log keeps", async () => {
    const digest = await publish("10.3.0", ciKey, "secret-registry");
    const secret = "AKIAIOSFODNN7EXAMPLE-internal-admin-token";
    const forbidding = createServer((_req, res) => res.writeHead(403, { "content-type": "text/plain" }).end(`denied: ${secret}\nmore of the internal page`));
    await new Promise<void>((resolve) => forbidding.listen(0, "127.0.0.1", resolve));
    const host = `127.0.0.1:${(forbidding.address() as AddressInfo).port}`;
    // The reference points at the forbidding host; the assigner's own copy cannot be had (never answered), so the registry's failure is the one reported.
    liar.rewrite = (path, body) => (path.startsWith("/artifacts/for-host/") ? Buffer.from(body.toString().replaceAll(`"${registry.host}/`, `"${host}/`)) : body);
    liar.stall = (path) => path.startsWith(`/artifacts/${digest}/`);
    try {
      const { agent, events, logs } = await agentFor("secret-host", { assigner: liar.url, requestTimeoutMs: 1_000 });
      await admin.assign(digest, "secret-host");
      await agent.reconcile();
      const failed = events.find((e) => e.id === digest && e.event === "failed");
      expect(failed?.code, `the registry's refusal: ${JSON.stringify(failed)}`).toBe("DENIED");
      expect(failed?.reason, "the reason names the registry, the code and the status").toContain(`${host}/policies/agent@${digest}: DENIED (HTTP 403)`);
      expect(failed?.reason, "the reason carries none of the registry's text").not.toContain(secret);
      expect(logs.some((l) => l.includes(secret)), "the local log keeps the registry's text").toBe(true);
    } finally {
      delete liar.rewrite;
      delete liar.stall;
      liar.server.closeAllConnections();
      forbidding.close();
    }
  });

  it("with no registry reachable, installs over the assigner path and refuses an assigner that lies, keeping the previous version in force", async () => {
    const [v1, v2, swapped, forged, copied, stalled, unlisted] = [
      await publish("20.0.0", ciKey, "assigner-path"),
      await publish("20.1.0", ciKey, "assigner-path"),
      await publish("20.2.0", ciKey, "assigner-path"),
      await publish("20.3.0", ciKey, "assigner-path"),
      await publish("20.4.0", ciKey, "assigner-path"),
      await publish("20.5.0", ciKey, "assigner-path"),
      await publish("20.6.0", ciKey, "assigner-path"),
    ];
    const read = async (path: string) => Buffer.from(await (await fetch(new URL(path, assigner.url), { headers: { authorization: "Bearer operator-secret" } })).arrayBuffer());
    const v1Manifest = await read(`/artifacts/${v1}/manifest`);
    const v1Signatures = (await read(`/artifacts/${v1}/signatures`)).toString();
    const v1Binary = await read(`/artifacts/${v1}/binary`);
    // The registry is unreachable from this host: every reference the assigner gives names a closed port.
    const unreachable = (path: string, body: Buffer) => (path.startsWith("/artifacts/for-host/") ? Buffer.from(body.toString().replaceAll(`"${registry.host}/`, '"127.0.0.1:1/')) : body);
    liar.rewrite = unreachable;
    try {
      const { agent, datapath, events } = await agentFor("assigner-path-host", { assigner: liar.url, requestTimeoutMs: 2_000 });
      const pref = basePref("assigner-path");
      await admin.assign(v1, "assigner-path-host");
      await agent.reconcile();
      const before = await filters(datapath);
      expect(before, `v1 attached: ${JSON.stringify(events.filter((e) => e.event === "failed"))}`).toEqual([`eth0 egress ${pref} ${v1}`, `eth1 egress ${pref} ${v1}`]);
      expect(events.find((e) => e.id === v1 && e.event === "verified")?.reason, "verified from the assigner").toContain(`from the assigner at ${liar.url}`);

      const lies: [string, string, (path: string, body: Buffer) => Buffer, string][] = [
        // Another artifact's layer, cut to the announced size.
        ["a swapped binary", swapped, (path, body) => (path === `/artifacts/${swapped}/binary` ? Buffer.concat([v1Binary, Buffer.alloc(body.length)]).subarray(0, body.length) : body), "DIGEST_MISMATCH"],
        ["a manifest that does not match the digest", forged, (path, body) => (path === `/artifacts/${forged}/manifest` ? v1Manifest : body), "DIGEST_MISMATCH"],
        ["a signature for another digest", copied, (path, body) => (path === `/artifacts/${copied}/signatures` ? Buffer.from(v1Signatures.replace(v1, copied)) : body), "SUBJECT_MISMATCH"],
        ["signatures that are not a list", unlisted, (path, body) => (path === `/artifacts/${unlisted}/signatures` ? Buffer.from(JSON.stringify({ artifact_id: unlisted, signatures: "none" })) : body), "BAD_ASSIGNMENT"],
      ];
      for (const [lie, digest, rewrite, code] of lies) {
        liar.rewrite = (path, body) => rewrite(path, unreachable(path, body));
        await admin.assign(digest, "assigner-path-host");
        await agent.reconcile();
        expect(await filters(datapath), `${lie}: v1 still in force`).toEqual(before);
        const failed = events.filter((e) => e.id === digest && e.event === "failed").at(-1);
        expect(failed?.code, `${lie}: ${failed?.reason}`).toBe(code);
        expect(liar.paths, `${lie}: read from the assigner`).toContain(`/artifacts/${digest}/manifest`);
        await admin.unassign(digest, "assigner-path-host");
      }

      // A poll answer without a list of artifacts: the pass fails naming it, and nothing changes.
      liar.rewrite = (path, body) => (path.startsWith("/artifacts/for-host/") ? Buffer.from(JSON.stringify({ artifacts: "all of them" })) : body);
      await admin.assign(swapped, "assigner-path-host"); // moves the host's version: the poll is answered in full
      await expect(agent.reconcile(), "a poll answer without a list").rejects.toMatchObject({ code: "BAD_ASSIGNMENT" });
      expect(await filters(datapath), "a poll answer without a list: v1 still in force").toEqual(before);
      // More artifacts than an agent takes, each a digest to fetch from wherever the answer says: refused whole, none asked for.
      const flood = Array.from({ length: MAX_ASSIGNED + 1 }, (_, i) => `sha256:${i.toString(16).padStart(64, "f")}`);
      const malformed: [string, unknown[], string][] = [
        [`${flood.length} artifacts`, flood.map((id) => ({ id, name: "flood", version: "1", description: "", signature: "", size: 1, checksum: `sha256-${id.slice(7)}`, metadata: {}, reference: `127.0.0.1:1/flood@${id}` })), `more than the ${MAX_ASSIGNED}`],
        ["a null artifact", [null], "artifacts.0"],
        ["an artifact without a digest", [{ name: "x", version: "1" }], "artifacts.0.id"],
      ];
      for (const [lie, artifacts, says] of malformed) {
        liar.rewrite = (path, body) => (path.startsWith("/artifacts/for-host/") ? Buffer.from(JSON.stringify({ artifacts, total: artifacts.length })) : body);
        await expect(agent.reconcile(), `a poll answer with ${lie}`).rejects.toMatchObject({ code: "BAD_ASSIGNMENT", message: expect.stringContaining(says) });
        expect(await filters(datapath), `a poll answer with ${lie}: v1 still in force`).toEqual(before);
      }
      expect(liar.paths.filter((p) => flood.some((id) => p.includes(id))), "requests for the flood's digests").toEqual([]);
      await admin.unassign(swapped, "assigner-path-host");

      liar.rewrite = unreachable;
      liar.stall = (path) => path === `/artifacts/${stalled}/binary`;
      await admin.assign(stalled, "assigner-path-host");
      await agent.reconcile();
      expect(await filters(datapath), "a stalled binary: v1 still in force").toEqual(before);
      const timedOut = events.filter((e) => e.id === stalled && e.event === "failed").at(-1);
      expect(liar.paths, "the binary was asked for").toContain(`/artifacts/${stalled}/binary`);
      // The pass ends at the request timeout; an assigner that cannot answer says nothing, so the registries' failure is reported.
      expect(timedOut?.code, `a stalled binary fails the pull within the request timeout: ${timedOut?.reason}`).toBe("UNREACHABLE");
      delete liar.stall;
      await admin.unassign(stalled, "assigner-path-host");

      await admin.assign(v2, "assigner-path-host");
      await agent.reconcile();
      expect(await filters(datapath), "an honest assigner: v2 replaces v1").toEqual([`eth0 egress ${pref} ${v2}`, `eth1 egress ${pref} ${v2}`]);
      expect(events.find((e) => e.id === v2 && e.event === "verified")?.reason, "v2 from the assigner").toContain("from the assigner");
    } finally {
      delete liar.rewrite;
      delete liar.stall;
      liar.server.closeAllConnections();
    }
  });

  it("over the assigner path, a large bundle on a slow link gets its size's time at 64 KiB/s beyond the request timeout", async () => {
    // A layer of a few hundred KiB: 30,000 random /32s in a CIDR file (which compress little).
    const digest = await publish("1.0.0", ciKey, "assigner-slow-link", registry.host, (yaml, dir) => {
      writeFileSync(join(dir, "deny.txt"), Array.from({ length: 30_000 }, () => `${[...randomBytes(4)].join(".")}/32`).join("\n"));
      return yaml.replace("dst: 8.8.8.8/32", "dst: { file: deny.txt }");
    });
    const binary = await fetch(new URL(`/artifacts/${digest}/binary`, assigner.url), { headers: { authorization: "Bearer operator-secret" } });
    const size = (await binary.arrayBuffer()).byteLength;
    // The binary comes in over 2.5 s, past the 1 s request timeout; its size at 64 KiB/s is allowed on top of that.
    const trickleMs = 2_500;
    expect(size, "the layer's allowance at 64 KiB/s covers the trickle past the request timeout, with room").toBeGreaterThan(64 * 1024 * (trickleMs / 1000));
    liar.rewrite = (path, body) => (path.startsWith("/artifacts/for-host/") ? Buffer.from(body.toString().replaceAll(`"${registry.host}/`, '"127.0.0.1:1/')) : body);
    liar.trickle = (path) => (path === `/artifacts/${digest}/binary` ? trickleMs : 0);
    try {
      const { agent, datapath, events } = await agentFor("assigner-slow-link-host", { assigner: liar.url, requestTimeoutMs: 1_000 });
      await admin.assign(digest, "assigner-slow-link-host");
      await agent.reconcile();
      expect(await runs(datapath), `attached: ${JSON.stringify(events.filter((e) => e.event === "failed"))}`).toEqual([digest, digest]);
      expect(events.find((e) => e.id === digest && e.event === "verified")?.reason, "verified from the assigner").toContain(`from the assigner at ${liar.url}`);
    } finally {
      delete liar.rewrite;
      delete liar.trickle;
    }
  });

  it("stops during a stalled pull: the pull is cancelled, nothing is installed and no partial blob is left", async () => {
    const v1 = await publish("11.0.0", ciKey, "stalled");
    const stalling = await startRegistryProxy(registry.url, { stallBlobsAfter: 10 });
    try {
      const r = await runAgent("stall-host", { mirrors: [`${stalling.host}/policies/agent`] });
      await admin.assign(v1, "stall-host");
      const pass = r.agent.reconcile();
      await until("the layer is being pulled", () => stalling.requests.some((q) => q.path.includes("/blobs/") && q.status === 200));
      await r.agent.stop();
      await expect(pass, "the reconcile in flight ends with the stop").rejects.toThrow(/agent stopping/);
      expect(await r.datapath.loaded(), "nothing installed").toEqual([]);
      // Under load the stop can come before the cache layout was even created: then there is no blob at all.
      const blobs = join(r.stateDir, "cache", "blobs", "sha256");
      expect(existsSync(blobs) ? readdirSync(blobs).filter((n) => n.startsWith(".tmp-")) : [], "no partial blob").toEqual([]);
    } finally {
      await stalling.stop();
    }
  });

  it("assigning v2 before unassigning v1 replaces v1 at its pref (newest per policy name)", async () => {
    const v1 = await publish("12.0.0", ciKey, "rolling");
    const v2 = await publish("12.1.0", ciKey, "rolling");
    const { agent, datapath, logs } = await agentFor("rolling-host");
    const pref = basePref("rolling");
    await admin.assign(v1, "rolling-host");
    await agent.reconcile();
    await admin.assign(v2, "rolling-host");
    await agent.reconcile();
    expect(await filters(datapath), "v2 at v1's pref").toEqual([`eth0 egress ${pref} ${v2}`, `eth1 egress ${pref} ${v2}`]);
    expect(logs.some((l) => l.startsWith(`superseded rolling 12.0.0 ${v1}`)), logs.join("\n")).toBe(true);
    await admin.unassign(v1, "rolling-host");
    await agent.reconcile();
    expect(await filters(datapath), "unassigning the superseded v1 changes nothing").toEqual([`eth0 egress ${pref} ${v2}`, `eth1 egress ${pref} ${v2}`]);
  });
});

describe("trust that changes while a program runs", () => {
  /** `host`'s agent, trusting both keys, runs one policy signed by each; stopped: the state and kernel a next agent starts from. */
  async function bothInstalled(host: string, names: [string, string]): Promise<{ byCi: string; byOther: string; first: Running }> {
    const byCi = await publish("1.0.0", ciKey, names[0]);
    const byOther = await publish("1.0.0", otherKey, names[1]);
    writeFileSync(join(work, "other.pub"), otherKey.publicKey);
    const first = await agentFor(host, { trust: await loadTrust([join(work, "ci.pub"), join(work, "other.pub")]) });
    for (const digest of [byCi, byOther]) await admin.assign(digest, host);
    await first.agent.reconcile();
    await first.agent.stop();
    expect(await runs(first.datapath), "both installed, each on eth0 and eth1").toEqual([byCi, byCi, byOther, byOther].sort());
    return { byCi, byOther, first };
  }

  /**
   * `host` as bothInstalled leaves it (`prepare` may change its kernel first), then its next agent, which trusts
   * the other key only, with the assigner away or not.
   */
  async function restartedTrustingOther(host: string, names: [string, string], away: boolean, prepare: (installed: Awaited<ReturnType<typeof bothInstalled>>) => Promise<void> = async () => {}) {
    const installed = await bothInstalled(host, names);
    await prepare(installed);
    writeFileSync(join(work, "other.pub"), otherKey.publicKey);
    const assignerAway = away ? { assigner: "http://127.0.0.1:1", requestTimeoutMs: 2_000 } : {};
    const second = await runAgent(host, { kernel: installed.first.datapath.kernel, stateDir: installed.first.stateDir, trust: await loadTrust([join(work, "other.pub")]), ...assignerAway });
    running.push(second);
    return { ...installed, second };
  }

  /** The digest attached at each hook, sorted. */

  /** Every datapath call `r` makes that changes the kernel, in order. */
  function kernelChanges(r: Running): string[] {
    const ops: string[] = [];
    for (const op of ["load", "attach", "detach", "unpin"] as const) {
      const original = r.datapath[op].bind(r.datapath) as (...args: unknown[]) => Promise<unknown>;
      (r.datapath as unknown as Record<string, unknown>)[op] = (...args: unknown[]) => (ops.push(op), original(...args));
    }
    return ops;
  }

  it("an agent started with a --trust that drops a key stops enforcing what that key signed, the assigner away or not; the rest runs on untouched", async () => {
    for (const away of [true, false]) {
      const { byCi, byOther, first, second } = await restartedTrustingOther(`trust-drop-${away ? "away" : "up"}-host`, [`trust-drop-ci-${away}`, `trust-drop-other-${away}`], away);
      const changes = kernelChanges(second);
      const pass = second.agent.reconcile();
      if (away) await expect(pass, "the pass fails: the assigner is away").rejects.toMatchObject({ code: "UNAVAILABLE" });
      else await pass;
      const what = away ? "assigner away" : "assigner up";
      const left = await runs(second.datapath);
      expect(left, `${what}: only the program signed by the key still trusted is attached`).toEqual([byOther, byOther]);
      expect((await second.datapath.loaded()).map((p) => p.id), `${what}: and loaded`).toEqual([byOther]);
      expect(changes, `${what}: the other program detached (two hooks) and unpinned, nothing loaded or attached`).toEqual(["detach", "detach", "unpin"]);
      const failed = second.events.filter((e) => e.id === byCi && e.event === "failed");
      expect(failed.map((e) => e.code), `${what}: reported once with the verdict: ${JSON.stringify(failed)}`).toEqual(["UNTRUSTED_KEY"]);
      expect(second.logs.some((l) => l.startsWith(`trust-drop-ci-${away} 1.0.0 ${byCi} no longer verifies under the trust in force`)), `${what}: said\n${second.logs.join("\n")}`).toBe(true);
      expect((await new StateDir(first.stateDir).installed()).has(byCi), `${what}: no longer recorded`).toBe(false);
      // The next pass neither brings it back nor says it again.
      await second.agent.reconcile().catch(() => undefined);
      expect(await runs(second.datapath), `${what}: the next pass`).toEqual([byOther, byOther]);
      expect(second.events.filter((e) => e.id === byCi && e.event === "failed"), `${what}: not reported again`).toHaveLength(1);
      await second.agent.stop();
    }
  });

  it("a program taken out while the assigner is away does not lose another the kernel lost: that one is loaded again", async () => {
    // The kernel lost the other key's program (its filters and pins gone), as a crash of another tool might do.
    const { byCi, byOther, first, second } = await restartedTrustingOther("trust-drop-lost-host", ["trust-lost-ci", "trust-lost-other"], true, async (installed) => {
      const pref = basePref("trust-lost-other");
      for (const iface of ["eth0", "eth1"]) await installed.first.datapath.detach({ iface, direction: "egress", pref });
      await installed.first.datapath.unpin(installed.byOther);
    });
    await expect(second.agent.reconcile(), "the assigner is away").rejects.toMatchObject({ code: "UNAVAILABLE" });
    expect(await runs(second.datapath), "the CI key's program out, the other's loaded again from the cache").toEqual([byOther, byOther]);
    expect((await new StateDir(first.stateDir).installed()).has(byOther), "and on file").toBe(true);
    expect(second.events.filter((e) => e.id === byCi && e.event === "failed").map((e) => e.code)).toEqual(["UNTRUSTED_KEY"]);
  });

  it("an orphan (its pins lost, tc still running it) that the trust refuses is taken out too, the assigner away or not", async () => {
    for (const away of [true, false]) {
      const names: [string, string] = [`trust-orphan-ci-${away}`, `trust-orphan-other-${away}`];
      const { byCi, byOther, second } = await restartedTrustingOther(`trust-orphan-${away ? "away" : "up"}-host`, names, away, async ({ first }) => first.datapath.kernel.losePins());
      await second.agent.reconcile().catch(() => undefined);
      const what = away ? "assigner away" : "assigner up";
      const orphans = (await second.datapath.attached()).filter((a) => a.id === undefined).map((a) => a.pref);
      expect(orphans.includes(basePref(`trust-orphan-ci-${away}`)), `${what}: the CI key's orphan is detached (orphans at ${orphans.join(", ")})`).toBe(false);
      expect(second.events.filter((e) => e.id === byCi && e.event === "failed").map((e) => e.code), `${what}: reported`).toEqual(["UNTRUSTED_KEY"]);
      const other = await second.datapath.attached();
      expect(other.some((a) => a.pref === basePref(`trust-orphan-other-${away}`) || a.id === byOther), `${what}: the other key's program still runs (as an orphan, or afresh)`).toBe(true);
      await second.agent.stop();
    }
  });

  it("a key whose validUntil passes: what it alone signed is taken out at the next pass; what was signed again by the next key runs on", async () => {
    const host = "trust-expiry-host";
    const digest = await publish("1.0.0", ciKey, "trust-expiry");
    const rotated = await publish("1.0.0", ciKey, "trust-expiry-rotated");
    // A window that closes seconds after the install: the agent reads no clock but the real one.
    const validUntil = new Date(Date.now() + 8_000);
    const keys = [trustedKey("ci-expiring", parsePublicKey(ciKey.publicKey, "ci"), { validUntil }), trustedKey("next", parsePublicKey(otherKey.publicKey, "next"))];
    const r = await agentFor(host, { trust: { keys } });
    for (const id of [digest, rotated]) await admin.assign(id, host);
    await r.agent.reconcile();
    expect(Date.now() < validUntil.getTime(), "installed within the key's window (a test machine this slow needs a longer one)").toBe(true);
    expect(await runs(r.datapath), "installed while the key is valid").toEqual([digest, digest, rotated, rotated].sort());
    // The rotation, prepared: one program signed by the next key too, before the first one's window closes.
    const repo = new RemoteRepository(registry.host, "policies/agent");
    await signArtifact(repo, await repo.resolve(rotated), new KeySigner(createPrivateKey(otherKey.privateKey)), repo.name);
    await r.agent.reconcile();
    expect(await runs(r.datapath), "kept at a pass within the window").toEqual([digest, digest, rotated, rotated].sort());
    const changes = kernelChanges(r);
    await new Promise((resolve) => setTimeout(resolve, validUntil.getTime() - Date.now() + 50));
    await r.agent.reconcile();
    expect(await runs(r.datapath), "once the window closed: the one signed by the expired key alone is out").toEqual([rotated, rotated]);
    expect(changes, "its two hooks detached and its pin removed, nothing else: the rotated one was never off").toEqual(["detach", "detach", "unpin"]);
    const failed = r.events.filter((e) => [digest, rotated].includes(e.id) && e.event === "failed");
    expect(failed.map((e) => `${e.id === digest ? "alone" : "rotated"} ${e.code}`), JSON.stringify(failed)).toEqual(["alone KEY_NOT_VALID"]);
    // The one signed by the expired key alone was fetched again once, in vain, and not a second time in the pass.
    const tries = r.logs.filter((l) => l.startsWith(`${digest}: its registries give no signature`) || l.startsWith(`fetching ${digest} failed`));
    expect(tries, `its fetches in vain, as logged:\n${r.logs.join("\n")}`).toEqual([expect.stringContaining("its registries give no signature the trust in force accepts either")]);
  });

  it("a followed trust root that drops a key: what that key signed is taken out at the next pass, and runs again once signed by a key the root holds", async () => {
    const operator = generateKeyPair("ecdsa-p256");
    const rootBytes = Buffer.from(JSON.stringify(trustedRoot({ fulcio: [new TestFulcio()], rekor: [new TestRekor()] })));
    const roots = new RemoteRepository(registry.host, "trust/agent");
    const rootWith = (version: number, keys: (typeof ciKey)[]) =>
      pushTrustRoot(roots, rootBytes, {
        version,
        tag: "current",
        signer: new KeySigner(createPrivateKey(operator.privateKey)),
        policy: { keys: keys.map((k, i) => ({ name: k === ciKey ? "ci" : `other-${i}`, key: k.publicKey })) },
      });
    await rootWith(1, [ciKey, otherKey]);
    const host = "trust-root-drop-host";
    const byCi = await publish("1.0.0", ciKey, "root-drop-ci");
    const byOther = await publish("1.0.0", otherKey, "root-drop-other");
    const resigned = await publish("1.0.0", ciKey, "root-drop-resigned");
    writeFileSync(join(work, "operator.pub"), operator.publicKey);
    // everyMs 0: every pass looks for a newer root (by default, at most every 5 minutes).
    const r = await agentFor(host, { trust: { keys: [] }, trustRoot: { reference: `${registry.host}/trust/agent:current`, operator: await loadTrust([join(work, "operator.pub")]), everyMs: 0 } });
    for (const digest of [byCi, byOther, resigned]) await admin.assign(digest, host);
    await r.agent.reconcile();
    expect(await runs(r.datapath), "all three run under root version 1").toEqual([byCi, byCi, byOther, byOther, resigned, resigned].sort());

    // Version 2 holds the other key only (the CI key was stolen, say); one program was signed with it beforehand.
    const repo = new RemoteRepository(registry.host, "policies/agent");
    const signWithOther = (digest: string) => repo.resolve(digest).then((desc) => signArtifact(repo, desc, new KeySigner(createPrivateKey(otherKey.privateKey)), repo.name));
    await signWithOther(resigned);
    await rootWith(2, [otherKey]);
    const changes = kernelChanges(r);
    const before = r.events.length;
    await r.agent.reconcile();
    expect(r.logs.some((l) => l.includes("version 2 from") && l.includes("replaces version 1")), r.logs.join("\n")).toBe(true);
    expect(await runs(r.datapath), "the CI key's program is out; the one signed again runs").toEqual([byOther, byOther, resigned, resigned].sort());
    expect(r.events.filter((e) => e.id === byCi && e.event === "failed").map((e) => e.code), "reported with the verdict").toEqual(["UNTRUSTED_KEY"]);
    // The cache held the CI signature of each: the registry's signatures were fetched again before either was taken out.
    expect(r.events.slice(before).filter((e) => e.id === resigned && ["failed", "verified"].includes(e.event)), "the re-signed program: neither refused nor verified anew").toEqual([]);
    expect(r.logs.some((l) => l.startsWith(`root-drop-resigned 1.0.0 ${resigned} verifies under the trust in force with a signature fetched again (signed by other-0`)), r.logs.join("\n")).toBe(true);
    expect(changes, "only the CI key's program detached (two hooks) and unpinned: the one signed again was never off").toEqual(["detach", "detach", "unpin"]);

    // Signed again by the key the root holds: it runs again at the next pass.
    await signWithOther(byCi);
    await admin.call("POST", "/artifacts", { reference: `${registry.host}/policies/agent@${byCi}` });
    await r.agent.reconcile();
    expect(await runs(r.datapath), "all three run again").toEqual([byCi, byCi, byOther, byOther, resigned, resigned].sort());
  });

  it("a program whose signatures are to be fetched again is left as it is until then: the early hold of a pass with a new digest neither restores nor widens it", async () => {
    const host = "trust-defer-host";
    const { byCi, byOther, second } = await restartedTrustingOther(host, ["trust-defer-ci", "trust-defer-other"], false, async ({ first }) => {
      // Its filter on eth0 deleted, a new interface, and a new digest assigned (the pass holds what runs before fetching it).
      await first.datapath.detach({ iface: "eth0", direction: "egress", pref: basePref("trust-defer-ci") });
      first.datapath.kernel.addInterface("eth2");
      await admin.assign(await publish("1.0.0", otherKey, "trust-defer-new"), host);
    });
    const attached: string[] = [];
    const attach = second.datapath.attach.bind(second.datapath);
    second.datapath.attach = (id, hook) => (attached.push(`${id === byCi ? "ci" : id === byOther ? "other" : "new"} ${hook.iface}`), attach(id, hook));
    await second.agent.reconcile();
    expect(attached.filter((a) => a.startsWith("ci")), `attaches of the CI key's program (all: ${attached.join(", ")})`).toEqual([]);
    expect(attached, "the other key's program covers the new interface").toContain("other eth2");
    expect(await runs(second.datapath), "the CI key's program out").not.toContain(byCi);
    await second.agent.stop();
  });

  it("a fetch of signatures again that stalls keeps what the trust refuses running for one pull timeout at most", async () => {
    const host = "trust-stall-host";
    const { byCi, byOther, first } = await bothInstalled(host, ["trust-stall-ci", "trust-stall-other"]);
    // The mirror sends ten bytes of each blob (a signature's bundle among them), then nothing.
    const stalling = await startRegistryProxy(registry.url, { stallBlobsAfter: 10 });
    try {
      writeFileSync(join(work, "other.pub"), otherKey.publicKey);
      const second = await runAgent(host, { kernel: first.datapath.kernel, stateDir: first.stateDir, trust: await loadTrust([join(work, "other.pub")]), mirrors: [`${stalling.host}/policies/agent`], pullTimeoutMs: 1_500 });
      running.push(second);
      await second.agent.reconcile();
      expect(await runs(second.datapath), "the CI key's program out, the other's untouched").toEqual([byOther, byOther]);
      // One pull timeout for the whole fetch: not the mirror's and then the registry's own (which would answer with
      // its CI signature only, a verdict, after the mirror's 1.5 s).
      const said = second.logs.find((l) => l.startsWith(`${byCi}: its registries give no signature`));
      expect(said, second.logs.join("\n")).toContain("signatures not fetched again within 1500 ms");
      expect(stalling.requests.some((q) => q.path.includes("/blobs/")), "the mirror was asked for a blob").toBe(true);
      await second.agent.stop();
    } finally {
      await stalling.stop();
    }
  });

  it("a damaged cache is no verdict: what runs stays while the assigner is away, and the cache is repaired from the registry once it answers", async () => {
    const host = "trust-damaged-host";
    const digest = await publish("1.0.0", ciKey, "trust-damaged");
    const first = await agentFor(host);
    await admin.assign(digest, host);
    await first.agent.reconcile();
    await first.agent.stop();
    // The signature's bundle blob in the cache, overwritten: its bytes no longer match their digest.
    const cache = new OciLayoutTarget(join(first.stateDir, "cache"));
    const [signature] = await cache.referrers(await cache.resolve(digest));
    const bundleLayer = (parseManifest(await readAll(await cache.fetch(signature!), signature!.size, "signature"), signature!.mediaType) as Manifest).layers[0]!;
    const blob = join(first.stateDir, "cache", "blobs", "sha256", bundleLayer.digest.slice("sha256:".length));
    writeFileSync(blob, Buffer.alloc(statSync(blob).size, 0x20));

    const away = await runAgent(host, { kernel: first.datapath.kernel, stateDir: first.stateDir, assigner: "http://127.0.0.1:1", requestTimeoutMs: 2_000 });
    running.push(away);
    const awayChanges = kernelChanges(away);
    await expect(away.agent.reconcile(), "the assigner is away").rejects.toMatchObject({ code: "UNAVAILABLE" });
    await expect(away.agent.reconcile()).rejects.toMatchObject({ code: "UNAVAILABLE" });
    expect(await runs(away.datapath), "assigner away: it stays").toEqual([digest, digest]);
    expect(awayChanges, "assigner away: nothing changed in the kernel").toEqual([]);
    expect(away.logs.filter((l) => l.startsWith(`trust-damaged 1.0.0 ${digest} cannot be verified again under the trust in force from the cache`)), `said once\n${away.logs.join("\n")}`).toHaveLength(1);
    expect(away.events.filter((e) => e.event === "failed"), "nothing reported failed").toEqual([]);
    await away.agent.stop();

    const up = await runAgent(host, { kernel: first.datapath.kernel, stateDir: first.stateDir });
    running.push(up);
    const upChanges = kernelChanges(up);
    await up.agent.reconcile();
    expect(await runs(up.datapath), "assigner up: it stays").toEqual([digest, digest]);
    expect(upChanges, "assigner up: nothing changed in the kernel").toEqual([]);
    expect(readFileSync(blob).equals(Buffer.alloc(statSync(blob).size, 0x20)), "the bundle blob fetched again from the registry").toBe(false);
    const logged = up.logs.length;
    await up.agent.reconcile();
    expect(up.logs.slice(logged).filter((l) => l.includes("cannot be verified again")), "verified from the repaired cache: nothing more said").toEqual([]);
  });
});

describe("another tool's filter", () => {
  it("is never taken over: a new policy goes past the pref a foreign filter holds, which stays in force", async () => {
    const v1 = await publish("1.0.0", ciKey, "beside-foreign");
    const pref = basePref("beside-foreign");
    const datapath = new MemoryDatapath({ interfaces: ["lo", "eth0", "eth1"] });
    datapath.attachForeign({ iface: "eth0", direction: "egress", pref });
    const { agent } = await agentFor("foreign-host", { datapath });
    await admin.assign(v1, "foreign-host");
    await agent.reconcile();
    const attached = await datapath.attached();
    expect(attached.filter((a) => a.id === undefined).map((a) => `${a.iface} ${a.pref}`), "the foreign filter, untouched").toEqual([`eth0 ${pref}`]);
    expect(attached.filter((a) => a.id === v1).map((a) => a.pref), "the policy, beside it at the next pref").toEqual([pref + 1, pref + 1]);
  });
});

describe("pins lost (bpffs remounted)", () => {
  /** Filters as "iface pref digest", an orphan (no pin names it) as "iface pref #<program id>", sorted as text. */
  const hooks = async (d: MemoryDatapath) => (await d.attached()).map((a) => `${a.iface} ${a.pref} ${a.id ?? `#${a.programId}`}`).sort((a, b) => a.localeCompare(b));

  it("the digest still assigned runs afresh beside its old program, which is then removed; one unassigned is removed and reported detached", async () => {
    const kept = await publish("1.0.0", ciKey, "lost-kept");
    const dropped = await publish("1.0.0", ciKey, "lost-dropped");
    const { agent, datapath, events, logs } = await agentFor("lost-host");
    await admin.assign(kept, "lost-host");
    await admin.assign(dropped, "lost-host");
    await agent.reconcile();
    const programs = new Map((await datapath.loaded()).map((p) => [p.id, p.programId]));
    const [keptPref, droppedPref] = [basePref("lost-kept"), basePref("lost-dropped")];
    datapath.kernel.losePins();
    expect(await hooks(datapath), "still attached, no pin names them").toEqual(
      [`eth0 ${keptPref} #${programs.get(kept)}`, `eth1 ${keptPref} #${programs.get(kept)}`, `eth0 ${droppedPref} #${programs.get(dropped)}`, `eth1 ${droppedPref} #${programs.get(dropped)}`].sort((a, b) => a.localeCompare(b)),
    );

    const ops: string[] = [];
    const attach = datapath.attach.bind(datapath);
    const detach = datapath.detach.bind(datapath);
    datapath.attach = (id, hook) => (ops.push(`attach ${hook.iface} ${hook.pref}`), attach(id, hook));
    datapath.detach = (hook) => (ops.push(`detach ${hook.iface} ${hook.pref}`), detach(hook));
    await admin.unassign(dropped, "lost-host");
    await agent.reconcile();
    // The old program's pref is in use: the fresh one goes to the next, and the old is removed only once it runs.
    expect(await hooks(datapath), "the kept digest afresh, nothing else").toEqual([`eth0 ${keptPref + 1} ${kept}`, `eth1 ${keptPref + 1} ${kept}`]);
    expect(ops.slice(0, 2), "attached first").toEqual([`attach eth0 ${keptPref + 1}`, `attach eth1 ${keptPref + 1}`]);
    expect(events.filter((e) => e.id === dropped).at(-1), "the unassigned one").toMatchObject({ event: "detached", reason: expect.stringContaining(`program id ${programs.get(dropped)}, whose pins were lost`) as unknown });
    expect(events.filter((e) => e.id === kept && e.event === "detached"), "the kept digest is not reported detached").toEqual([]);
    expect(logs.some((l) => l.includes(`program id ${programs.get(kept)}, whose pins were lost, removed`)), logs.join("\n")).toBe(true);
  });

  it("the host's only policy, orphaned then unassigned: removed in a pass with no step, and neither it nor its record is kept", async () => {
    const v1 = await publish("1.0.0", ciKey, "lost-only");
    const { agent, datapath, events, stateDir } = await agentFor("lost-only-host");
    await admin.assign(v1, "lost-only-host");
    await agent.reconcile();
    datapath.kernel.losePins();
    await admin.unassign(v1, "lost-only-host");
    await agent.reconcile();
    expect(await hooks(datapath), "nothing attached").toEqual([]);
    expect(events.at(-1), "reported").toMatchObject({ event: "detached", id: v1 });
    const state = new StateDir(stateDir);
    expect([...(await state.installed()).keys()], "installed records").toEqual([]);
    expect(await state.orphans(), "orphans").toEqual([]);
  });

  it("a removal that fails is tried again at the next pass, though the same digest runs afresh", async () => {
    const v1 = await publish("1.0.0", ciKey, "lost-retried");
    const { agent, datapath, logs } = await agentFor("lost-retried-host");
    await admin.assign(v1, "lost-retried-host");
    await agent.reconcile();
    const pref = basePref("lost-retried");
    const { programId } = (await datapath.loaded())[0]!;
    datapath.kernel.losePins();
    datapath.failNext("detach");
    await agent.reconcile();
    expect(await hooks(datapath), "afresh beside it, the old one still there").toEqual([`eth0 ${pref} #${programId}`, `eth0 ${pref + 1} ${v1}`, `eth1 ${pref} #${programId}`, `eth1 ${pref + 1} ${v1}`]);
    expect(logs.some((l) => l.startsWith(`cannot remove program id ${programId}`)), logs.join("\n")).toBe(true);
    await agent.reconcile();
    expect(await hooks(datapath), "removed at the next pass").toEqual([`eth0 ${pref + 1} ${v1}`, `eth1 ${pref + 1} ${v1}`]);
  });

  it("after a reboot, another tool's filter that got a recorded program id is not taken for one of the agent's", async () => {
    const v1 = await publish("1.0.0", ciKey, "lost-rebooted");
    const first = await agentFor("lost-rebooted-host");
    await admin.assign(v1, "lost-rebooted-host");
    await first.agent.reconcile();
    const { programId } = (await first.datapath.loaded())[0]!;
    await first.agent.stop();
    // The reboot: filters and pins gone, program ids from 1 again; another tool's program comes up first with the recorded id.
    const rebooted = new MemoryDatapath({ interfaces: ["lo", "eth0", "eth1"] });
    rebooted.attachForeign({ iface: "eth0", direction: "egress", pref: 100 }, programId);
    const second = await agentFor("lost-rebooted-host", { datapath: rebooted, stateDir: first.stateDir });
    await second.agent.reconcile();
    const pref = basePref("lost-rebooted");
    expect(await hooks(rebooted), "the other tool's filter stays").toEqual([`eth0 100 #${programId}`, `eth0 ${pref} ${v1}`, `eth1 ${pref} ${v1}`]);
  });

  it("stays in force while its policy cannot run afresh (a failed load, an assigner outage), and is removed once it does", async () => {
    const v1 = await publish("1.0.0", ciKey, "lost-held");
    // A second policy, which runs afresh at once: its steps save the agent's records on every pass.
    const other = await publish("1.0.0", ciKey, "lost-held-other");
    const first = await agentFor("lost-held-host");
    await admin.assign(v1, "lost-held-host");
    await admin.assign(other, "lost-held-host");
    await first.agent.reconcile();
    const [pref, otherPref] = [basePref("lost-held"), basePref("lost-held-other")];
    const programId = (await first.datapath.loaded()).find((p) => p.id === v1)!.programId;
    first.datapath.kernel.losePins();
    const orphaned = [`eth0 ${pref} #${programId}`, `eth1 ${pref} #${programId}`];
    const withOther = [...orphaned, `eth0 ${otherPref + 1} ${other}`, `eth1 ${otherPref + 1} ${other}`].sort((a, b) => a.localeCompare(b));

    first.datapath.failNext("load"); // v1's: the names are taken in order
    await first.agent.reconcile();
    expect(await hooks(first.datapath), "a failed load: the old program stays").toEqual(withOther);
    await first.agent.stop();

    // The next agent on this host finds no assigner: nothing is removed, and the old program is still known after.
    const away = await runAgent("lost-held-host", { kernel: first.datapath.kernel, stateDir: first.stateDir, assigner: "http://127.0.0.1:1", requestTimeoutMs: 2_000 });
    await expect(away.agent.reconcile(), "the assigner is away").rejects.toMatchObject({ code: "UNAVAILABLE" });
    await away.agent.stop();
    expect(await hooks(first.datapath), "during the outage").toEqual(withOther);

    const back = await agentFor("lost-held-host", { kernel: first.datapath.kernel, stateDir: first.stateDir });
    await back.agent.reconcile();
    expect((await hooks(back.datapath)).filter((h) => !h.endsWith(other)), "afresh, the old program removed").toEqual([`eth0 ${pref + 1} ${v1}`, `eth1 ${pref + 1} ${v1}`]);
  });
});

describe("bookkeeping", () => {
  it("forgets a digest once it is neither assigned nor installed: assigned again, it is reported again", async () => {
    const untrusted = await publish("3.9.0", otherKey, "forgotten");
    const { agent, events } = await agentFor("forget-host");
    const failures = () => events.filter((e) => e.id === untrusted && e.event === "failed").length;
    await admin.assign(untrusted, "forget-host");
    await agent.reconcile();
    await agent.reconcile();
    expect(failures(), "a refusal is reported once, however many passes").toBe(1);
    await admin.unassign(untrusted, "forget-host");
    await agent.reconcile();
    await admin.assign(untrusted, "forget-host");
    await agent.reconcile();
    expect(failures(), "assigned again after it was forgotten").toBe(2);
  });
});

describe("a digest that keeps failing", () => {
  it("is fetched again at the next pass, then not within its wait, whatever the assigner changes in its entry but what is fetched; another reference ends the wait at once", async () => {
    const proxy = await startRegistryProxy(registry.url);
    const other = await startRegistryProxy(registry.url);
    try {
      const digest = await publish("3.8.0", null, "backed-off", proxy.host);
      const reference = `${proxy.host}/policies/agent@${digest}`;
      const { agent, datapath, events, logs } = await agentFor("backoff-host", { assigner: liar.url, fetchRetryMs: 60_000 });
      // The loop's first pass (at start) is over before the digest is assigned: the passes below are the test's alone.
      await agent.reconcile();
      await admin.assign(digest, "backoff-host");
      const asked = async (registry = proxy) => {
        for (const r of [proxy, other]) r.requests.length = 0;
        await agent.reconcile();
        return registry.requests.filter((r) => r.path.startsWith("/v2/policies/agent/")).length;
      };
      expect(await asked(), "pass 1: fetched").toBeGreaterThan(0);
      expect(await asked(), "pass 2: the first failure is tried again at the next pass").toBeGreaterThan(0);
      const said = new RegExp(`^fetching ${digest} failed 2 times in a row, the last after \\d+\\.\\d s \\[NO_SIGNATURE\\]: not tried again for 60 s$`);
      expect(logs.filter((l) => said.test(l)), `the wait is said: ${logs.join("\n")}`).toHaveLength(1);
      expect(await asked(), "pass 3: within its wait, the registry is not asked").toBe(0);
      expect(events.filter((e) => e.id === digest && e.event === "failed").map((e) => e.code), "reported once").toEqual(["NO_SIGNATURE"]);
      const repo = new RemoteRepository(registry.host, "policies/agent");
      await signArtifact(repo, await repo.resolve(digest), new KeySigner(createPrivateKey(ciKey.privateKey)), repo.name);
      expect(await asked(), "pass 4: signed in the registry, but its entry is the same: still waiting").toBe(0);
      expect((await admin.call<{ signature: string }>("POST", "/artifacts", { reference })).signature, "registered again, the assigner fills in the signature").not.toBe("");
      // What the entry says beside what is fetched (its signature, name, version) is the assigner's to change at every poll.
      liar.rewrite = (path, body) => (path.startsWith("/artifacts/for-host/") ? Buffer.from(body.toString().replace(/"version":"3\.8\.0"/, '"version":"3.8.1"')) : body);
      expect(await asked(), "pass 5: its signature filled in and its version changed, not what is fetched: still waiting").toBe(0);
      liar.rewrite = (path, body) => (path.startsWith("/artifacts/for-host/") ? Buffer.from(body.toString().replaceAll(`"${proxy.host}/`, `"${other.host}/`)) : body);
      expect(await asked(other), "pass 6: another reference, fetched from it at once").toBeGreaterThan(0);
      expect(await filters(datapath), "installed").toEqual([`eth0 egress ${basePref("backed-off")} ${digest}`, `eth1 egress ${basePref("backed-off")} ${digest}`]);
      expect(events.filter((e) => e.id === digest).map((e) => e.event), "its steps").toEqual(["received", "failed", "verified", "program_loaded", "attached", "attached"]);
    } finally {
      delete liar.rewrite;
      await Promise.all([proxy.stop(), other.stop()]);
    }
  });
});

describe("a digest whose attempts are slow", () => {
  it("waits at least as long as its last attempt took, the first failure too", async () => {
    // Published and registered through the proxy before it stalls; from then on its blobs trickle to a halt.
    const stalling = await startRegistryProxy(registry.url);
    try {
      const digest = await publish("3.9.5", ciKey, "slow-fails", stalling.host);
      stalling.set({ stallBlobsAfter: 10 });
      const { agent, logs } = await agentFor("slow-host", { fetchRetryMs: 200, pullTimeoutMs: 300, requestTimeoutMs: 1_000 });
      await agent.reconcile();
      await admin.assign(digest, "slow-host");
      const failures = () => logs.filter((l) => l.startsWith(`fetching ${digest} failed`));
      await agent.reconcile();
      expect(failures(), `pass 1: fetched (the registry stalls, then the assigner, which reads from it, times out)\n${logs.join("\n")}`).toEqual([expect.stringMatching(/failed after \d+\.\d s \[\w+\]: not tried again for \d+\.\d s$/)]);
      await agent.reconcile();
      expect(failures(), "pass 2, at once: a first failure that took longer than the base waits as long as it took (no attempt, none said)").toHaveLength(1);
    } finally {
      await stalling.stop();
    }
  });
});

describe("a pass whose fetches stall", () => {
  /**
   * The for-host answer names `stalling` at `silent` (a registry that takes
   * connections and never answers), and the assigner never answers for them
   * either: each fetch of one stalls at every source until its deadline.
   */
  function stallAt(silent: SilentPort, stalling: string[]): void {
    liar.rewrite = (path, body) => {
      if (!path.startsWith("/artifacts/for-host/")) return body;
      let text = body.toString();
      for (const digest of stalling) text = text.replaceAll(`"${registry.host}/policies/agent@${digest}"`, `"${silent.host}/policies/agent@${digest}"`);
      return Buffer.from(text);
    };
    liar.stall = (path) => stalling.some((digest) => path.startsWith(`/artifacts/${digest}/`));
  }

  it("attaches a good digest and removes an unassigned one in the first pass, however long the stalling ones would take: those are cut off at the fetch budget, their connections closed", async () => {
    const host = "stall-budget-host";
    const silent = await startSilentPort();
    try {
      const old = await publish("1.0.0", ciKey, "stall-budget-old");
      const good = await publish("1.0.0", ciKey, "stall-budget-good");
      const stalling = [await publish("1.0.0", null, "stall-budget-a"), await publish("1.0.0", null, "stall-budget-b"), await publish("1.0.0", null, "stall-budget-c")];
      stallAt(silent, stalling);
      // Each stalling fetch would take a minute at its reference and another at the assigner; the pass's fetches get 1.5 s.
      const { agent, datapath, events } = await agentFor(host, { assigner: liar.url, pullTimeoutMs: 60_000, requestTimeoutMs: 60_000, fetchBudgetMs: 1_500 });
      await admin.assign(old, host);
      await agent.reconcile();
      expect(await runs(datapath), "the old policy installed first").toEqual([old, old]);
      await admin.unassign(old, host);
      for (const digest of [...stalling, good]) await admin.assign(digest, host);
      await within(30_000, "the first pass with stalling digests", agent.reconcile(), () => `connections open at the silent registry: ${silent.open()}`);
      expect(await runs(datapath), "the first pass: the good digest attached, the unassigned one removed").toEqual([good, good]);
      for (const digest of stalling) {
        const failed = events.filter((e) => e.id === digest && e.event === "failed");
        expect(failed.map((e) => `${e.code} ${e.reason}`), `stalling digest ${digest}: reported cut off by the budget`).toEqual([expect.stringMatching(/^UNAVAILABLE .*fetch budget of 1500 ms/)]);
      }
      expect(silent.dials(), "the stalling digests were asked of the silent registry").toBeGreaterThan(0);
      await until("the stalled connections are closed (the fetches aborted)", () => silent.open() === 0);
    } finally {
      delete liar.rewrite;
      delete liar.stall;
      await silent.close();
    }
  });

  it("fetches a few digests at a time, and one that stalled waits its backoff from the end of the pass's fetches: the next pass does not ask for it again", async () => {
    const host = "stall-retry-host";
    const silent = await startSilentPort();
    try {
      const good = await publish("1.0.0", ciKey, "stall-retry-good");
      const stalling: string[] = [];
      for (const x of ["a", "b", "c", "d", "e", "f"]) stalling.push(await publish("1.0.0", null, `stall-retry-${x}`));
      stallAt(silent, stalling);
      // Each stalling fetch takes 1.5 s at its reference and 1.5 s at the assigner, over the 0.5 s base: it waits
      // at least as long as it took, 3 s. One after another, the six took 18 s: the first's wait was long over by
      // the end of the pass, and every pass asked for all six again.
      const { agent, datapath, logs } = await agentFor(host, { assigner: liar.url, pullTimeoutMs: 1_500, requestTimeoutMs: 1_500, fetchRetryMs: 500 });
      // The loop's first pass (at start) is over before the digests are assigned: the passes below are the test's alone.
      await agent.reconcile();
      for (const digest of [...stalling, good]) await admin.assign(digest, host);
      const asked = (digest: string) => liar.paths.filter((p) => p.startsWith(`/artifacts/${digest}/`)).length;
      await within(50_000, "the first pass", agent.reconcile());
      expect(await runs(datapath), "the first pass: the good digest attached").toEqual([good, good]);
      const fetchedOnce = stalling.map(asked);
      expect(fetchedOnce.every((n) => n > 0), `each stalling digest fetched in the first pass (asked of the assigner: ${fetchedOnce.join(", ")})`).toBe(true);
      const dials = silent.dials();
      await agent.reconcile();
      expect(stalling.map(asked), `the second pass, at once: no stalling digest asked of the assigner again\n${logs.join("\n")}`).toEqual(fetchedOnce);
      expect(silent.dials(), "the second pass, at once: nor of its registry").toBe(dials);
    } finally {
      delete liar.rewrite;
      delete liar.stall;
      await silent.close();
    }
  });
});

describe("outages", () => {
  /** `name` at `version` installed on `host` by an agent that then stopped: the state and kernel a next agent starts from. */
  async function installedThenStopped(version: string, name: string, host: string): Promise<{ v1: string; first: Running; before: string[] }> {
    const v1 = await publish(version, ciKey, name);
    const first = await agentFor(host);
    await admin.assign(v1, host);
    await first.agent.reconcile();
    await first.agent.stop();
    const before = await filters(first.datapath);
    expect(before, "installed").toHaveLength(2);
    return { v1, first, before };
  }

  it("while the assigner cannot be asked, what is installed stays in force: a deleted filter comes back, a new interface is covered, nothing is removed", async () => {
    const { v1, first, before } = await installedThenStopped("13.1.0", "outage-hold", "outage-hold-host");

    // The same host's next agent finds no assigner at all.
    const second = await runAgent("outage-hold-host", { kernel: first.datapath.kernel, stateDir: first.stateDir, assigner: "http://127.0.0.1:1", requestTimeoutMs: 2_000 });
    running.push(second);
    const pref = basePref("outage-hold");
    await second.datapath.detach({ iface: "eth0", direction: "egress", pref });
    second.datapath.kernel.addInterface("eth2");
    await expect(second.agent.reconcile(), "the pass fails: the assigner is away").rejects.toMatchObject({ code: "UNAVAILABLE" });
    expect(await filters(second.datapath), "restored on eth0, added on eth2, nothing removed").toEqual([...before, `eth2 egress ${pref} ${v1}`].sort());
    expect(second.events.some((e) => e.event === "drift" && e.id === v1), "the deleted filter reported as drift").toBe(true);
  });

  it("a new digest whose registry stalls does not hold up what runs: while its pull waits, a deleted filter is back, one just unassigned is not, and the assigner has the receipt and the digest received", async () => {
    const { v1, first } = await installedThenStopped("13.6.0", "outage-slow", "outage-slow-host");
    // A second policy on the host, unassigned in the same change that assigns the new digest.
    const gone = await publish("1.0.0", ciKey, "outage-slow-gone");
    const v2 = await publish("1.0.0", ciKey, "outage-slow-new");
    const third = await runAgent("outage-slow-host", { kernel: first.datapath.kernel, stateDir: first.stateDir });
    await admin.assign(gone, "outage-slow-host");
    await third.agent.reconcile();
    await third.agent.stop();
    const hostOf = async (digest: string) => (await admin.status(digest)).hosts.find((h) => h.host_id === "outage-slow-host");
    const since = (await hostOf(v1))?.since;
    const stalling = await startRegistryProxy(registry.url, { stallBlobsAfter: 10 });
    try {
      // All before the next agent starts: its first pass (at start) is the one that holds, then stalls.
      const held = await filters(first.datapath);
      expect(held, "both installed").toHaveLength(4);
      for (const name of ["outage-slow", "outage-slow-gone"]) await first.datapath.detach({ iface: "eth0", direction: "egress", pref: basePref(name) });
      await admin.unassign(gone, "outage-slow-host");
      await admin.assign(v2, "outage-slow-host");
      const second = await runAgent("outage-slow-host", { kernel: first.datapath.kernel, stateDir: first.stateDir, mirrors: [`${stalling.host}/policies/agent`] });
      running.push(second);
      const pass = second.agent.reconcile();
      await until("the new digest's blobs are being pulled", () => stalling.requests.some((q) => q.path.includes("/blobs/") && q.status === 200));
      const pref = basePref("outage-slow-gone");
      expect(await filters(second.datapath), "the assigned policy restored, the unassigned one left as it was").toEqual(held.filter((f) => f !== `eth0 egress ${pref} ${gone}`));
      expect(second.events.filter((e) => e.event === "drift").map((e) => e.id), "drift reported for the assigned policy only").toEqual([v1]);
      const restarted = (await hostOf(v1))?.since;
      expect(restarted !== undefined && restarted !== since, `the receipt after the drift reached the assigner (since ${since} → ${restarted})`).toBe(true);
      expect((await hostOf(v2))?.event, "the new digest, received, reached the assigner before its pull").toBe("received");
      await second.agent.stop();
      await expect(pass, "the pass in flight ends with the stop").rejects.toThrow(/agent stopping/);
      expect((await filters(second.datapath)).some((f) => f.endsWith(v2)), "the new digest never went in").toBe(false);
    } finally {
      await stalling.stop();
    }
  });

  it("after a reboot while the assigner cannot be asked, what was installed is loaded again from the cache, verified there", async () => {
    const { v1, first, before } = await installedThenStopped("13.2.0", "outage-reboot", "outage-reboot-host");
    // A new kernel is a reboot: no pins, no filters. The first load fails (in the pass the agent starts with): the
    // next pass without the assigner, this one, tries again.
    const rebooted = new MemoryDatapath({ interfaces: ["lo", "eth0", "eth1"] });
    rebooted.failNext("load");
    const second = await runAgent("outage-reboot-host", { stateDir: first.stateDir, assigner: "http://127.0.0.1:1", requestTimeoutMs: 2_000, datapath: rebooted });
    running.push(second);
    await expect(second.agent.reconcile(), "the pass fails: the assigner is away").rejects.toMatchObject({ code: "UNAVAILABLE" });
    expect(second.events.filter((e) => e.id === v1 && e.event === "failed").map((e) => e.code), "the first load").toEqual(["LOAD_FAILED"]);
    expect(await filters(second.datapath), "in force again, as before the reboot").toEqual(before);
    expect(second.logs.some((l) => l.startsWith(`outage-reboot 13.2.0 ${v1} is no longer loaded (a reboot?)`) && l.endsWith("loading it again from the cache")), second.logs.join("\n")).toBe(true);
    const record = (await new StateDir(first.stateDir).installed()).get(v1);
    expect(record?.name, "recorded again").toBe("outage-reboot");

    // A cache that cannot give it verified (its manifest gone): nothing is loaded, and that is said (by the next agent, the state dir being one agent's at a time).
    await second.agent.stop();
    const blobs = join(first.stateDir, "cache", "blobs", "sha256");
    rmSync(join(blobs, v1.slice("sha256:".length)));
    const third = await runAgent("outage-reboot-host", { stateDir: first.stateDir, assigner: "http://127.0.0.1:1", requestTimeoutMs: 2_000 });
    running.push(third);
    await expect(third.agent.reconcile()).rejects.toMatchObject({ code: "UNAVAILABLE" });
    await expect(third.agent.reconcile()).rejects.toMatchObject({ code: "UNAVAILABLE" });
    expect(await filters(third.datapath), "nothing unverified is loaded").toEqual([]);
    expect(third.logs.filter((l) => l.includes(`${v1} is no longer loaded`) && l.endsWith("it stays off until the assigner answers")), third.logs.join("\n")).toHaveLength(1);
  });

  /**
   * `name` v1 installed on `host`, then v2 (unsigned) assigned in its place, and the host rebooted: a new kernel (no
   * pins, no filters; `prepare` may set it up) under the same state, and an agent started on it.
   */
  async function rebootedOntoUnsigned(versions: [string, string], name: string, host: string, prepare: (kernel: MemoryDatapath) => void = () => {}, fetchRetryMs?: number) {
    const { v1, first, before } = await installedThenStopped(versions[0], name, host);
    const v2 = await publish(versions[1], null, name);
    await admin.unassign(v1, host);
    await admin.assign(v2, host);
    const rebooted = new MemoryDatapath({ interfaces: ["lo", "eth0", "eth1"] });
    prepare(rebooted);
    const second = await runAgent(host, { stateDir: first.stateDir, datapath: rebooted, ...(fetchRetryMs ? { fetchRetryMs } : {}) });
    running.push(second);
    return { v1, v2, first, before, rebooted, second };
  }

  it("after a reboot, a policy whose new version cannot be had runs its previous version again from the cache, until the new one can", async () => {
    // A 200 ms base: v2's wait after its failures in a row is over within 2 s.
    const { v1, v2, first, before, rebooted, second } = await rebootedOntoUnsigned(["13.7.0", "13.8.0"], "reboot-fallback", "reboot-fallback-host", () => {}, 200);
    await second.agent.reconcile();
    expect(second.events.filter((e) => e.id === v2 && e.event === "failed").map((e) => e.code), "v2 refused").toEqual(["NO_SIGNATURE"]);
    expect(await filters(rebooted), "v1 in force again, as before the reboot").toEqual(before);
    expect(second.logs, "said").toContain(`reboot-fallback 13.7.0 ${v1} is no longer loaded (a reboot?) and its assigned version cannot be fetched or verified: loading it again from the cache`);
    await second.agent.reconcile();
    expect(await filters(rebooted), "and it stays").toEqual(before);
    expect(existsSync(join(first.stateDir, "cache", "blobs", "sha256", v1.slice("sha256:".length))), "v1 kept in the cache").toBe(true);

    // v2 signed: once its wait is over, it replaces v1 at the same pref.
    const repo = new RemoteRepository(registry.host, "policies/agent");
    await signArtifact(repo, await repo.resolve(v2), new KeySigner(createPrivateKey(ciKey.privateKey)), repo.name);
    const pref = basePref("reboot-fallback");
    const replaced = [`eth0 egress ${pref} ${v2}`, `eth1 egress ${pref} ${v2}`].join();
    await until(`v2 replaces it once its wait is over (${second.logs.filter((l) => l.startsWith("fetching")).at(-1)})`, async () => (await second.agent.reconcile(), (await filters(rebooted)).join() === replaced));
  });

  it("after a reboot, a previous version that the kernel refuses pass after pass is reported and said once", async () => {
    // The pass the agent starts with refuses the first load; two more passes, each refused again.
    const { v1, before, rebooted, second } = await rebootedOntoUnsigned(["13.9.0", "13.9.1"], "reboot-refused", "reboot-refused-host", (kernel) => kernel.failNext("load"));
    await until("the first pass refused v1's load", () => second.events.some((e) => e.id === v1 && e.event === "failed"));
    for (let pass = 0; pass < 2; pass++) {
      rebooted.failNext("load");
      await second.agent.reconcile();
    }
    expect(await filters(rebooted), "nothing loads").toEqual([]);
    expect(second.events.filter((e) => e.id === v1 && e.event === "failed").map((e) => e.code), "v1's failure, once").toEqual(["LOAD_FAILED"]);
    expect(second.logs.filter((l) => l.includes(`${v1} is no longer loaded`)), "said once").toHaveLength(1);
    await second.agent.reconcile();
    expect(await filters(rebooted), "then it loads").toEqual(before);
  });

  it("a pass that fails after the assigner answered holds what is installed, and the metric of the last pass stays as it was", async () => {
    const { v1, first, before } = await installedThenStopped("13.3.0", "outage-late", "outage-late-host");
    const second = await runAgent("outage-late-host", { kernel: first.datapath.kernel, stateDir: first.stateDir });
    running.push(second);
    await admin.assign(v1, "outage-late-host");
    await second.agent.reconcile();
    const lastPass = async () => (await second.agent.metrics.text()).split("\n").find((l) => l.startsWith("aegis_agent_last_successful_poll_timestamp_seconds "));
    const passed = await lastPass();
    // The kernel's interfaces cannot be read once: the pass fails after the poll, with a filter deleted meanwhile.
    await second.datapath.detach({ iface: "eth0", direction: "egress", pref: basePref("outage-late") });
    const interfaces = second.datapath.interfaces.bind(second.datapath);
    let failing = true;
    second.datapath.interfaces = () => (failing ? ((failing = false), Promise.reject(new Error("netlink went away"))) : interfaces());
    await new Promise((resolve) => setTimeout(resolve, 5));
    await expect(second.agent.reconcile(), "the pass fails").rejects.toThrow("netlink went away");
    expect(await filters(second.datapath), "held: the deleted filter restored").toEqual(before);
    expect(await lastPass(), "the last pass's time unchanged").toBe(passed);
  });

  it("after a reboot while the assigner cannot be asked, a recorded program whose pref a filter holds is not loaded beside it", async () => {
    const { first } = await installedThenStopped("13.4.0", "outage-pref", "outage-pref-host");
    // Rebooted, and something runs at the policy's pref (a replacement the agent crashed before recording, say).
    const rebooted = new MemoryDatapath({ interfaces: ["lo", "eth0", "eth1"] });
    rebooted.attachForeign({ iface: "eth0", direction: "egress", pref: basePref("outage-pref") });
    const before = await filters(rebooted);
    const second = await runAgent("outage-pref-host", { stateDir: first.stateDir, assigner: "http://127.0.0.1:1", requestTimeoutMs: 2_000, datapath: rebooted });
    running.push(second);
    await expect(second.agent.reconcile()).rejects.toMatchObject({ code: "UNAVAILABLE" });
    expect(await filters(second.datapath), "only what ran").toEqual(before);
    expect(second.logs.filter((l) => l.includes("is no longer loaded")), "not a candidate").toEqual([]);
  });

  it("an assigner that hangs fails the pass with UNAVAILABLE, enforcement holds, and a stop does not wait for it", async () => {
    // Each step has a limit of its own, well under the test's: this test timed out whole twice (once under load, once
    // in CI) and never alone, so a step that hangs must say which it is.
    // The agent's log is told with a step that times out: the pass itself once did, in a whole-suite run only.
    let agentLogs: string[] = [];
    const step = <T,>(what: string, work: Promise<T>): Promise<T> => within(20_000, what, work, () => `its agent's log:\n${agentLogs.join("\n")}`);
    const { first, before } = await step("install, then stop the first agent", installedThenStopped("13.0.0", "outage", "outage-host"));

    const hung = createServer(() => undefined);
    await new Promise<void>((resolve) => hung.listen(0, "127.0.0.1", resolve));
    try {
      const url = `http://127.0.0.1:${(hung.address() as AddressInfo).port}`;
      const second = await step("start the second agent", runAgent("outage-host", { kernel: first.datapath.kernel, stateDir: first.stateDir, assigner: url, requestTimeoutMs: 300 }));
      agentLogs = second.logs;
      await expect(step("the second agent's pass", second.agent.reconcile()), "timed out").rejects.toMatchObject({ code: "UNAVAILABLE" });
      expect(await filters(second.datapath), "enforcement holds").toEqual(before);
      await step("stop the second agent", second.agent.stop());
      const third = await step("start the third agent", runAgent("outage-host", { kernel: first.datapath.kernel, stateDir: first.stateDir, assigner: url, requestTimeoutMs: 3_600_000 }));
      agentLogs = third.logs;
      const pass = third.agent.reconcile();
      await step("stop the third agent", third.agent.stop());
      await expect(step("the third agent's pass", pass), "the stop ends the pass").rejects.toThrow(/agent stopping/);
      expect(await filters(third.datapath), "nothing detached by the stops").toEqual(before);
    } finally {
      // Listening stops first, then the open connections are cut: a registration the agents abandoned (left to finish
      // on its own) may connect late under load, and would hold close() until its hour-long deadline.
      const closed = new Promise((resolve) => hung.close(resolve));
      hung.closeAllConnections();
      await step("close the hung assigner", closed);
    }
  });
});
