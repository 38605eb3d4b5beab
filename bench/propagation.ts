// How fast an assignment takes effect (issue 9 "Benchmark"), as root on the
// real kernel: a real `aegis agent run` on a veth into a namespace of the
// bench's own (test/agent/lab.ts), a real assigner, registry 2.8.2 and NATS.
// Each round assigns a new signed digest (so every round pulls, verifies,
// loads and attaches), measures from `assign` returning to
//   (a) `attached` in the assigner's /artifacts/{id}/status, polled every 5 ms;
//   (b) the first packet dropped at the host: a UDP datagram carrying a
//       sequence number leaves every millisecond for the peer, which keeps the
//       last one it received; the first dropped is the next one sent,
// then unassigns and waits for traffic to pass again. With NATS the agent is
// woken by aegis.assignments.<host>; polling only, it is connected to a second
// NATS nobody publishes assignments on, whose telemetry this bench relays to
// the assigner's (so (a) is measured the same way), and polls every 5 s.
// Last, the agent's idle RSS and CPU with 10 policies attached.
import { createPrivateKey } from "node:crypto";
import { createSocket } from "node:dgram";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { buildBundle, pushBundle } from "../bundle/index.js";
import { RemoteRepository } from "../registry/index.js";
import { KeySigner, signArtifact } from "../signing/index.js";
import { AgentLab, kill, type RunningAgent } from "../test/agent/lab.js";
import { startNats } from "../test/harness/tcp-server.js";
import type { BenchResult, Row } from "./report.js";

const NATS_ROUNDS = 100;
const POLL_ROUNDS = 12;
const IDLE_POLICIES = 10;
const IDLE_SECONDS = 30;
const PORT = 6000;

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `count` signed digests of one policy (versions 1.0.<i>), registered with the assigner. */
async function digests(lab: AgentLab, name: string, rules: string[], count: number): Promise<string[]> {
  const dir = join(lab.work, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "policy.yaml"), [`name: ${name}`, "version: 1.0.0", "description: propagation bench", "program: aegis_net", "attach: { hook: tc, direction: egress }", "rules:", ...rules, ""].join("\n"));
  const { bytes, policy } = await buildBundle(dir);
  const repo = new RemoteRepository(lab.registry.host, "policies/bench");
  const signer = new KeySigner(createPrivateKey(lab.ciKey.privateKey));
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const version = `1.0.${i}`;
    const artifact = await pushBundle(bytes, { ...policy, version }, repo, version);
    await signArtifact(repo, artifact.manifest, signer, repo.name);
    await lab.admin.call("POST", "/artifacts", { reference: `${lab.registry.host}/policies/bench@${artifact.manifest.digest}` });
    ids.push(artifact.manifest.digest);
  }
  return ids;
}

/** Sequence-numbered datagrams to the peer, one per millisecond tick; the send time of each. */
function sequencer(lab: AgentLab) {
  const socket = createSocket("udp4");
  const sentAt: number[] = [];
  const timer = setInterval(() => {
    const seq = sentAt.length;
    sentAt.push(performance.now());
    socket.send(String(seq), PORT, lab.farIp);
  }, 1);
  return { sentAt, stop: () => (clearInterval(timer), socket.close()) };
}

async function lastSeq(lab: AgentLab): Promise<number> {
  return (await lab.counts())[`seq/${PORT}`] ?? -1;
}

async function rounds(lab: AgentLab, agent: RunningAgent, host: string, ids: string[]): Promise<{ attached: number[]; dropped: number[] }> {
  const attached: number[] = [];
  const dropped: number[] = [];
  const seq = sequencer(lab);
  try {
    for (const id of ids) {
      await lab.until("traffic passes before the round", async () => {
        const before = await lastSeq(lab);
        await sleep(20);
        return (await lastSeq(lab)) > before;
      }, agent.output);
      await lab.admin.assign(id, host);
      const t0 = performance.now();
      for (;;) {
        if (await lab.status(id, host, "attached")) break;
        if (performance.now() - t0 > 60_000) throw new Error(`no attached for ${id}\n${agent.output()}`);
        await sleep(5);
      }
      attached.push(performance.now() - t0);
      await sleep(50); // datagrams in flight land
      const first = (await lastSeq(lab)) + 1;
      const at = seq.sentAt[first];
      if (at === undefined) throw new Error(`no datagram was dropped after ${id} attached`);
      dropped.push(at - t0);
      await lab.admin.unassign(id, host);
      await lab.until(`${id} detached`, () => lab.status(id, host, "detached"), agent.output);
    }
  } finally {
    seq.stop();
  }
  return { attached, dropped };
}

/** CPU time of the agent and of the children it waited for (bpftool, tc), in clock ticks. */
function cpuTicks(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]); // utime stime cutime cstime
}

function rssMiB(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmRSS:"))!;
  return Number(line.split(/\s+/)[1]) / 1024;
}

export default async function propagationBench(): Promise<BenchResult> {
  const lab = new AgentLab("bench", 205);
  const quiet = await startNats();
  const relay: NatsConnection[] = [];
  try {
    await lab.start({ udp: [PORT], tcp: [] });
    const rule = `  - { action: drop, dst: ${lab.farIp}/32, protocol: udp, ports: "${PORT}" }`;
    const natsIds = await digests(lab, "bench-nats", [rule], NATS_ROUNDS);
    const pollIds = await digests(lab, "bench-poll", [rule], POLL_ROUNDS);
    const rows: Row[] = [];
    const row = (mode: string, what: string, values: number[]) => rows.push({ mode, measure: what, rounds: values.length, p50_ms: percentile(values, 50), p99_ms: percentile(values, 99), max_ms: Math.max(...values) });

    // With NATS wake-up (the agent's poll interval stays the default 30 s, so polling does not help).
    const woken = lab.startAgent("bench-nats", ["--poll-interval", "30s"]);
    await lab.registered("bench-nats", woken);
    const withNats = await rounds(lab, woken, "bench-nats", natsIds);
    row("nats", "assign → attached at assigner", withNats.attached);
    row("nats", "assign → first packet dropped", withNats.dropped);

    // Idle with 10 policies, the same agent (NATS, default 30 s poll).
    const idleIds: string[] = [];
    for (let i = 0; i < IDLE_POLICIES; i++) idleIds.push(...(await digests(lab, `bench-idle-${i}`, [`  - { action: drop, dst: ${lab.farIp}/32, protocol: tcp, ports: "${7100 + i}" }`], 1)));
    for (const id of idleIds) await lab.admin.assign(id, "bench-nats");
    await lab.until("10 policies attached", async () => (await Promise.all(idleIds.map((id) => lab.status(id, "bench-nats", "attached")))).every(Boolean), woken.output);
    await sleep(5000);
    const pid = woken.process.pid!;
    const ticks = cpuTicks(pid);
    const start = performance.now();
    await sleep(IDLE_SECONDS * 1000);
    const seconds = (performance.now() - start) / 1000;
    const cpuPercent = ((cpuTicks(pid) - ticks) / 100 / seconds) * 100; // USER_HZ is 100 on Linux
    const idleRss = rssMiB(pid);
    for (const id of idleIds) await lab.admin.unassign(id, "bench-nats");
    await lab.until("idle policies detached", async () => (await lab.datapath.loaded()).length === 0, woken.output);
    await kill(woken, "SIGTERM");

    // Polling only, every 5 s: the agent's NATS is one nobody wakes it on; its telemetry is relayed.
    const from = await connect({ servers: quiet.url });
    const to = await connect({ servers: lab.nats.url });
    relay.push(from, to);
    void (async () => {
      for await (const message of from.subscribe("aegis.telemetry.>")) to.publish(message.subject, message.data);
    })();
    const polling = lab.startAgent("bench-poll", ["--poll-interval", "5s"], { AEGIS_NATS_URL: quiet.url });
    await lab.registered("bench-poll", polling);
    const pollOnly = await rounds(lab, polling, "bench-poll", pollIds);
    row("poll 5s", "assign → attached at assigner", pollOnly.attached);
    row("poll 5s", "assign → first packet dropped", pollOnly.dropped);
    await kill(polling, "SIGTERM");

    rows.push({ mode: "idle", measure: `${IDLE_POLICIES} policies: RSS ${idleRss.toFixed(1)} MiB, CPU ${cpuPercent.toFixed(2)}% of a core over ${IDLE_SECONDS} s` });
    return {
      name: "propagation",
      rows,
      ratio: percentile(withNats.attached, 99),
      ratioOf: "p99 ms from assign to attached at the assigner with NATS (aim < 1000)",
      idle: { policies: IDLE_POLICIES, rss_mib: idleRss, cpu_percent_of_core: cpuPercent, seconds: IDLE_SECONDS },
      samples: { nats: withNats, poll: pollOnly },
      node: process.version,
    };
  } finally {
    for (const connection of relay) await connection.close().catch(() => undefined);
    await lab.stop();
    await quiet.stop();
  }
}
