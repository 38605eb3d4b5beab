// The real thing, as root: an `aegis agent run` process enforces a signed
// policy assigned through a real assigner, pulled from registry 2.8.2, on a
// veth whose near end is in the root namespace (where the agent, like the
// assigner and registry on 127.0.0.1, lives) and whose peer is in a test
// namespace. Ping to the peer fails while TCP still connects and the drop
// counter rises; SIGTERM leaves it in force; a restarted agent adopts it;
// unassigning lets ping through again. Pins go under a test-only pin root.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createPrivateKey, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AssignerClient } from "../../assigner/api/index.js";
import { startAssigner, type RunningAssigner } from "../../assigner/index.js";
import { buildBundle, pushBundle } from "../../bundle/index.js";
import { BpftoolDatapath } from "../../ebpf/index.js";
import { RemoteRepository } from "../../registry/index.js";
import { generateKeyPair, KeySigner, signArtifact } from "../../signing/index.js";
import { AEGIS } from "../cli/run.js";
import { NetnsLab, type Netns } from "../harness/netns.js";
import { startRegistry, type RegistryServer } from "../harness/registry.js";
import { startNats, type TcpServer } from "../harness/tcp-server.js";

const execFileAsync = promisify(execFile);
const lab = new NetnsLab();
const suffix = randomBytes(3).toString("hex");
const near = `aegr${suffix}`;
const far = `aegp${suffix}`;
const net = 1 + (process.pid % 250);
const nearIp = `10.201.${net}.1`;
const farIp = `10.201.${net}.2`;
const pinRoot = `/sys/fs/bpf/aegis-test-agent-${process.pid}-${suffix}`;
const TCP_PORT = 8099;
const ciKey = generateKeyPair("ed25519");

let peer: Netns;
let server: ChildProcess;
let registry: RegistryServer;
let nats: TcpServer;
let assigner: RunningAssigner;
let admin: AssignerClient;
let work: string;
const agents: ChildProcess[] = [];

async function ping(): Promise<boolean> {
  return execFileAsync("ping", ["-c1", "-W1", "-I", near, farIp]).then(() => true, () => false);
}

async function tcpConnects(): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: farIp, port: TCP_PORT, timeout: 3000 });
    socket.once("data", (data) => (socket.destroy(), resolve(data.toString() === "ok")));
    socket.once("error", () => resolve(false));
    socket.once("timeout", () => (socket.destroy(), resolve(false)));
  });
}

async function until(what: string, check: () => Promise<boolean>, log: () => string = () => ""): Promise<void> {
  for (let i = 0; i < 120; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`gave up waiting: ${what}\n${log()}`);
}

/** Starts `aegis agent run` for this veth; its output is collected for the failure messages. */
function startAgent(): { process: ChildProcess; output: () => string } {
  let output = "";
  const child = spawn(
    process.execPath,
    [AEGIS, "agent", "run", "--iface", near, "--state-dir", join(work, "state"), "--pin-root", pinRoot, "--poll-interval", "1s", "--label", "lab=e2e"],
    { env: { ...process.env, AEGIS_ASSIGNER_URL: assigner.url, AEGIS_HOST_ID: "e2e-host", AEGIS_TRUST: join(work, "ci.pub"), AEGIS_NATS_URL: nats.url }, stdio: ["ignore", "pipe", "pipe"] },
  );
  child.stdout!.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (output += d.toString()));
  agents.push(child);
  return { process: child, output: () => output };
}

async function stop(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  child.kill("SIGTERM");
  return exited;
}

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error("test/agent/e2e.test.ts loads eBPF programs and creates a veth pair: run it as root");
  peer = await lab.namespace("agent-peer");
  await execFileAsync("ip", ["link", "add", near, "type", "veth", "peer", "name", far, "netns", peer.name]);
  await execFileAsync("ip", ["addr", "add", `${nearIp}/24`, "dev", near]);
  await execFileAsync("ip", ["link", "set", near, "up"]);
  await peer.exec("ip", "addr", "add", `${farIp}/24`, "dev", far);
  await peer.exec("ip", "link", "set", far, "up");
  await peer.exec("ip", "link", "set", "lo", "up");
  server = peer.spawn(process.execPath, ["-e", `require("node:net").createServer((s) => s.end("ok")).listen(${TCP_PORT}, "${farIp}")`], { stdio: "ignore" });
  await until("the link and the peer's TCP server", async () => (await ping()) && (await tcpConnects()));

  [registry, nats] = await Promise.all([startRegistry(), startNats()]);
  work = mkdtempSync(join(tmpdir(), "aegis-agent-e2e-"));
  writeFileSync(join(work, "ci.pub"), ciKey.publicKey);
  assigner = await startAssigner({ port: 0, natsUrl: nats.url, dataDir: join(work, "assigner"), registry: `${registry.host}/aegis/uploads`, adminToken: "operator-secret" });
  admin = new AssignerClient(assigner.url, "operator-secret");
}, 120_000);

afterAll(async () => {
  for (const child of agents) if (child.exitCode === null) child.kill("SIGKILL");
  server?.kill("SIGKILL");
  // Deleting the veth removes its clsact filters; then nothing holds the pins.
  await execFileAsync("ip", ["link", "del", near]).catch(() => undefined);
  await lab.destroy();
  rmSync(pinRoot, { recursive: true, force: true });
  await assigner?.close();
  await Promise.all([registry?.stop(), nats?.stop()]);
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("aegis agent run on the real kernel", () => {
  it("drops ICMP to the peer while TCP connects, holds it across SIGTERM and a restart, and lets ping through once unassigned", async () => {
    const dir = join(work, "block-peer-icmp");
    mkdirSync(dir);
    writeFileSync(
      join(dir, "policy.yaml"),
      ["name: block-peer-icmp", "version: 1.0.0", "description: no ping to the test peer", "program: aegis_net", "attach: { hook: tc, direction: egress }", "rules:", `  - { action: drop, dst: ${farIp}/32, protocol: icmp }`, ""].join("\n"),
    );
    const { bytes, policy } = await buildBundle(dir);
    const repo = new RemoteRepository(registry.host, "policies/e2e");
    const artifact = await pushBundle(bytes, policy, repo, "1.0.0");
    await signArtifact(repo, artifact.manifest, new KeySigner(createPrivateKey(ciKey.privateKey)), repo.name);
    const id = artifact.manifest.digest;
    await admin.call("POST", "/artifacts", { reference: `${registry.host}/policies/e2e@${id}` });

    const first = startAgent();
    await until("the agent registered", async () => (await admin.hosts()).agents.some((a) => a.host_id === "e2e-host"), first.output);
    await admin.assign(id, "e2e-host");
    await until("ping to the peer fails", async () => !(await ping()), first.output);
    expect(await tcpConnects(), "TCP to the peer still connects").toBe(true);
    const datapath = new BpftoolDatapath({ pinRoot });
    const before = (await datapath.counters(id))[0]!;
    expect(await ping(), "ping while enforced").toBe(false);
    expect((await datapath.counters(id))[0]!, "the drop counter rises").toBeGreaterThan(before);
    expect(first.output(), "one line per step, with policy name and digest").toContain(`attached block-peer-icmp 1.0.0 ${id}`);
    const status = async (event: string) => (await admin.status(id)).hosts.some((h) => h.host_id === "e2e-host" && h.event === event);
    await until("the assigner shows attached (telemetry over NATS)", () => status("attached"), first.output);
    const [program] = await datapath.loaded();
    const receipt = (await admin.status(id)).hosts.find((h) => h.host_id === "e2e-host");
    expect(receipt, "the signed receipt names the kernel's program and the hook").toMatchObject({ program_id: program!.programId, interfaces: [expect.objectContaining({ iface: near, direction: "egress" })] });

    expect(await stop(first.process), `SIGTERM exits cleanly\n${first.output()}`).toBe(0);
    expect(await ping(), "still enforced after the agent stopped").toBe(false);
    const attached = await datapath.attached();

    const second = startAgent();
    await until("the restarted agent adopted the program", async () => second.output().includes(`adopted block-peer-icmp ${id}`), second.output);
    expect((await datapath.attached()).filter((a) => a.iface === near), "the same filter, not re-attached").toEqual(attached.filter((a) => a.iface === near));

    await admin.unassign(id, "e2e-host");
    await until("ping to the peer passes again", ping, second.output);
    await until("the program is unpinned", async () => (await datapath.loaded()).length === 0, second.output);
    await until("the assigner shows detached", () => status("detached"), second.output);
    expect(existsSync(join(pinRoot, id.replace(":", "-"))), "no pin left").toBe(false);
    expect(await stop(second.process), second.output()).toBe(0);
  });
});
