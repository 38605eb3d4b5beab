// What the root e2e tests of the agent share: a veth whose near end is in the
// root namespace (where the agent, assigner, registry and NATS live on
// 127.0.0.1) and whose peer is in a namespace of the test's own, with v4 and
// v6 addresses; a counting listener at the peer (UDP datagrams and TCP
// connections, exact, per port); signed policies pushed to registry 2.8.2 and
// registered with a real assigner; and `aegis agent run` processes. Traffic
// goes only to the peer's addresses. Pins go under a test-only pin root.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createPrivateKey, randomBytes } from "node:crypto";
import { createSocket } from "node:dgram";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { AssignerClient } from "../../assigner/api/index.js";
import { startAssigner, type AssignerOptions, type RunningAssigner } from "../../assigner/index.js";
import { buildBundle, pushBundle } from "../../bundle/index.js";
import { BpftoolDatapath } from "../../ebpf/index.js";
import { RemoteRepository } from "../../registry/index.js";
import { generateKeyPair, KeySigner, signArtifact } from "../../signing/index.js";
import { AEGIS } from "../cli/run.js";
import { NetnsLab, type Netns } from "../harness/netns.js";
import { startRegistry, type RegistryServer } from "../harness/registry.js";
import { startNats, type TcpServer } from "../harness/tcp-server.js";

const execFileAsync = promisify(execFile);

/**
 * The peer's listener: counts per port ("udp/PORT", "tcp/PORT") and the last
 * sequence number a datagram carried ("seq/PORT"), answered on stdin "?" with one JSON line.
 */
const LISTENER = `
const dgram = require("node:dgram"), net = require("node:net"), readline = require("node:readline");
const [udp, tcp] = JSON.parse(process.argv[1]);
const counts = {};
let pending = udp.length + tcp.length;
const up = () => --pending === 0 && process.stdout.write("ready\\n");
for (const port of udp) {
  counts["udp/" + port] = 0;
  const s = dgram.createSocket({ type: "udp6", ipv6Only: false });
  s.on("message", (m) => {
    counts["udp/" + port]++;
    const seq = Number(m.toString());
    if (Number.isFinite(seq)) counts["seq/" + port] = seq;
  });
  s.bind(port, "::", up);
}
for (const port of tcp) {
  counts["tcp/" + port] = 0;
  net.createServer((c) => { counts["tcp/" + port]++; c.end("ok"); }).listen(port, "::", up);
}
readline.createInterface({ input: process.stdin }).on("line", () => process.stdout.write(JSON.stringify(counts) + "\\n"));
`;

export interface RunningAgent {
  process: ChildProcess;
  output(): string;
}

export interface PolicyRule {
  action: "drop" | "allow";
  dst?: string;
  src?: string;
  protocol?: "tcp" | "udp" | "icmp" | "any";
  ports?: string;
}

export class AgentLab {
  readonly suffix = randomBytes(3).toString("hex");
  readonly near = `aegn${this.suffix}`;
  readonly far = `aegf${this.suffix}`;
  readonly net: number;
  readonly nearIp: string;
  readonly farIp: string;
  readonly nearIp6: string;
  readonly farIp6: string;
  readonly pinRoot: string;
  readonly ciKey = generateKeyPair("ed25519");
  readonly datapath: BpftoolDatapath;
  readonly agents: RunningAgent[] = [];
  work = "";
  ns!: Netns;
  registry!: RegistryServer;
  nats!: TcpServer;
  assigner!: RunningAssigner;
  admin!: AssignerClient;
  private readonly netns = new NetnsLab();
  private listener: ChildProcess | undefined;
  private readonly answers: ((line: string) => void)[] = [];
  private assignerOptions: AssignerOptions = {};

  /** `octet` keeps the files' subnets apart (10.<octet>.N.0/24, fd00:<octet>:N::/64). */
  constructor(private readonly label: string, octet: number) {
    this.net = 1 + (process.pid % 250);
    this.nearIp = `10.${octet}.${this.net}.1`;
    this.farIp = `10.${octet}.${this.net}.2`;
    this.nearIp6 = `fd00:${octet}:${this.net.toString(16)}::1`;
    this.farIp6 = `fd00:${octet}:${this.net.toString(16)}::2`;
    this.pinRoot = `/sys/fs/bpf/aegis-test-${label}-${process.pid}-${this.suffix}`;
    this.datapath = new BpftoolDatapath({ pinRoot: this.pinRoot });
  }

  /** The link, a peer listening on the given ports, registry, NATS and the assigner. */
  async start(ports: { udp: number[]; tcp: number[] }): Promise<void> {
    if (process.getuid?.() !== 0) throw new Error(`test/agent ${this.label}: loads eBPF programs and creates a veth pair: run it as root`);
    this.ns = await this.netns.namespace(this.label);
    await execFileAsync("ip", ["link", "add", this.near, "type", "veth", "peer", "name", this.far, "netns", this.ns.name]);
    await execFileAsync("ip", ["addr", "add", `${this.nearIp}/24`, "dev", this.near]);
    await execFileAsync("ip", ["addr", "add", `${this.nearIp6}/64`, "dev", this.near, "nodad"]);
    await execFileAsync("ip", ["link", "set", this.near, "up"]);
    await this.ns.exec("ip", "addr", "add", `${this.farIp}/24`, "dev", this.far);
    await this.ns.exec("ip", "addr", "add", `${this.farIp6}/64`, "dev", this.far, "nodad");
    await this.ns.exec("ip", "link", "set", this.far, "up");
    await this.ns.exec("ip", "link", "set", "lo", "up");
    this.listener = this.ns.spawn(process.execPath, ["-e", LISTENER, JSON.stringify([ports.udp, ports.tcp])], { stdio: ["pipe", "pipe", "inherit"] });
    const lines = createInterface({ input: this.listener.stdout! });
    const ready = new Promise<void>((resolve) => lines.once("line", () => resolve()));
    await ready;
    lines.on("line", (line) => this.answers.shift()?.(line));
    await this.until("the link passes v4 and v6 pings", async () => (await this.ping()) && (await this.ping6()));

    [this.registry, this.nats] = await Promise.all([startRegistry(), startNats()]);
    this.work = mkdtempSync(join(tmpdir(), `aegis-${this.label}-`));
    writeFileSync(join(this.work, "ci.pub"), this.ciKey.publicKey);
    this.assignerOptions = { port: 0, natsUrl: this.nats.url, dataDir: join(this.work, "assigner"), registry: `${this.registry.host}/aegis/uploads`, adminToken: "operator-secret" };
    await this.startAssigner();
  }

  /** (Re)starts the assigner on its data dir; the same port as before once it has one. */
  async startAssigner(): Promise<void> {
    this.assigner = await startAssigner(this.assignerOptions);
    this.assignerOptions.port = Number(new URL(this.assigner.url).port);
    this.admin = new AssignerClient(this.assigner.url, "operator-secret");
  }

  async stop(): Promise<void> {
    for (const agent of this.agents) if (agent.process.exitCode === null && agent.process.signalCode === null) agent.process.kill("SIGKILL");
    this.listener?.kill("SIGKILL");
    // Deleting the veth removes its clsact filters; then nothing holds the pins.
    await execFileAsync("ip", ["link", "del", this.near]).catch(() => undefined);
    await this.netns.destroy();
    rmSync(this.pinRoot, { recursive: true, force: true });
    await this.assigner?.close().catch(() => undefined);
    await Promise.all([this.registry?.stop(), this.nats?.stop()]);
    if (this.work) rmSync(this.work, { recursive: true, force: true });
  }

  /**
   * Builds, pushes, signs by the trusted key and registers a policy; returns
   * its digest. `via` is the registry host in the registered reference (a proxy).
   */
  async policy(name: string, version: string, direction: "egress" | "ingress", rules: PolicyRule[], via?: string): Promise<string> {
    const repository = "policies/e2e";
    const dir = join(this.work, `${name}-${version}`);
    mkdirSync(dir, { recursive: true });
    const yaml = rules.map((r) => `  - ${JSON.stringify(r)}`);
    writeFileSync(join(dir, "policy.yaml"), [`name: ${name}`, `version: ${version}`, `description: e2e ${name}`, "program: aegis_net", `attach: { hook: tc, direction: ${direction} }`, "rules:", ...yaml, ""].join("\n"));
    const { bytes, policy } = await buildBundle(dir);
    const repo = new RemoteRepository(this.registry.host, repository);
    const artifact = await pushBundle(bytes, policy, repo, version);
    await signArtifact(repo, artifact.manifest, new KeySigner(createPrivateKey(this.ciKey.privateKey)), repo.name);
    const id = artifact.manifest.digest;
    await this.admin.call("POST", "/artifacts", { reference: `${via ?? this.registry.host}/${repository}@${id}` });
    return id;
  }

  /** Starts `aegis agent run` on the near end; output collected for failure messages. */
  startAgent(hostId: string, extra: string[] = [], env: Record<string, string> = {}): RunningAgent {
    let output = "";
    const child = spawn(
      process.execPath,
      [AEGIS, "agent", "run", "--iface", this.near, "--state-dir", join(this.work, `state-${hostId}`), "--pin-root", this.pinRoot, "--poll-interval", "1s", ...extra],
      { env: { ...process.env, AEGIS_ASSIGNER_URL: this.assigner.url, AEGIS_HOST_ID: hostId, AEGIS_TRUST: join(this.work, "ci.pub"), AEGIS_NATS_URL: this.nats.url, ...env }, stdio: ["ignore", "pipe", "pipe"] },
    );
    child.stdout!.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (output += d.toString()));
    const agent = { process: child, output: () => output };
    this.agents.push(agent);
    return agent;
  }

  async registered(hostId: string, agent: RunningAgent): Promise<void> {
    await this.until(`${hostId} registered`, async () => (await this.admin.hosts()).agents.some((a) => a.host_id === hostId), agent.output);
  }

  /** An agent for `hostId` that has registered, been assigned `digest` and reported it attached. */
  async enforcing(hostId: string, digest: string): Promise<RunningAgent> {
    const agent = this.startAgent(hostId);
    await this.registered(hostId, agent);
    await this.admin.assign(digest, hostId);
    await this.until("attached", () => this.status(digest, hostId, "attached"), agent.output);
    return agent;
  }

  /** True once the assigner's status for `id` on `hostId` is `event`. */
  async status(id: string, hostId: string, event: string): Promise<boolean> {
    return (await this.admin.status(id)).hosts.some((h) => h.host_id === hostId && h.event === event);
  }

  counts(): Promise<Record<string, number>> {
    return new Promise((resolve) => {
      this.answers.push((line) => resolve(JSON.parse(line) as Record<string, number>));
      this.listener!.stdin!.write("?\n");
    });
  }

  ping(): Promise<boolean> {
    return execFileAsync("ping", ["-c1", "-W1", "-I", this.near, this.farIp]).then(() => true, () => false);
  }

  ping6(): Promise<boolean> {
    return execFileAsync("ping", ["-6", "-c1", "-W1", "-I", this.near, this.farIp6]).then(() => true, () => false);
  }

  /** Whether a TCP connection to the peer is accepted (and answered "ok"). */
  tcpConnects(port: number, v6 = false): Promise<boolean> {
    return new Promise((resolve) => {
      const socket = connect({ host: v6 ? this.farIp6 : this.farIp, port, timeout: 1500 });
      socket.once("data", (data) => (socket.destroy(), resolve(data.toString() === "ok")));
      socket.once("error", () => resolve(false));
      socket.once("timeout", () => (socket.destroy(), resolve(false)));
    });
  }

  /** Whether UDP datagrams reach the peer: sends `n` and compares the peer's exact count before and after. */
  async udpReaches(port: number, v6 = false, n = 3): Promise<boolean> {
    const key = `udp/${port}`;
    const before = (await this.counts())[key] ?? 0;
    const socket = createSocket(v6 ? "udp6" : "udp4");
    for (let i = 0; i < n; i++) await new Promise<void>((resolve) => socket.send("x", port, v6 ? this.farIp6 : this.farIp, () => resolve()));
    socket.close();
    await new Promise((r) => setTimeout(r, 300));
    return ((await this.counts())[key] ?? 0) > before;
  }

  /** A continuous UDP flood to the peer's port (one datagram every millisecond or so); stop() returns how many were sent. */
  flood(port: number): { sent: () => number; stop: () => number } {
    const socket = createSocket("udp4");
    let sent = 0;
    const timer = setInterval(() => {
      for (let i = 0; i < 5; i++) socket.send("f", port, this.farIp, (err) => (err ? undefined : sent++));
    }, 2);
    return { sent: () => sent, stop: () => (clearInterval(timer), socket.close(), sent) };
  }

  /**
   * The peer's count on a UDP port once it has stopped changing (packets in
   * flight at an attach have landed); fails if it still moves after 10 s,
   * which means traffic is getting through.
   */
  async settledCount(port: number): Promise<number> {
    const key = `udp/${port}`;
    let last = (await this.counts())[key]!;
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, 500));
      const now = (await this.counts())[key]!;
      if (now === last) return now;
      last = now;
    }
    throw new Error(`the peer's count on udp/${port} is still rising (${last}): traffic is getting through`);
  }

  async until(what: string, check: () => Promise<boolean>, log: () => string = () => ""): Promise<void> {
    for (let i = 0; i < 160; i++) {
      if (await check().catch(() => false)) return;
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`gave up waiting: ${what}\n${log()}`);
  }
}

/** Ends an agent the hard way (`kill -9`) or cleanly, and waits for it to be gone. */
export async function kill(agent: RunningAgent, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
  const child = agent.process;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill(signal);
  await exited;
}
