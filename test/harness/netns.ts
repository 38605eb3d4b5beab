// Network namespaces and veth pairs for tests that send real traffic or need
// no network at all. Names carry a random suffix so concurrent test files
// and runs never collide; each test file deletes its own in afterAll, and
// whatever a crashed run leaves is deleted when the process exits.
import { execFile, execFileSync, spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);
const live = new Set<string>();

// 'exit' handlers must be synchronous.
process.on("exit", () => {
  for (const name of live) {
    try {
      execFileSync("ip", ["netns", "del", name], { stdio: "ignore" });
    } catch {
      // already gone
    }
  }
});

export interface Netns {
  name: string;
  /** Runs a command inside the namespace; rejects on a non-zero exit. */
  exec(command: string, ...args: string[]): Promise<{ stdout: string; stderr: string }>;
  /** Starts a long-running command inside the namespace. */
  spawn(command: string, args: string[], options?: SpawnOptions): ChildProcess;
}

export interface VethEnd {
  ns: Netns;
  iface: string;
  v4: string;
  v6: string;
}

/** Two namespaces joined by a veth pair, both ends up with a v4 /24 and a v6 /64. */
export interface VethPair {
  a: VethEnd;
  b: VethEnd;
}

let pairs = 0;

/** Namespaces one test file makes; destroy() deletes all of them. */
export class NetnsLab {
  private readonly made: string[] = [];

  /** A fresh namespace with only a loopback device (down): no address, no route. */
  async namespace(label: string): Promise<Netns> {
    if (process.getuid?.() !== 0) throw new Error(`test harness: network namespaces need root (creating "${label}")`);
    const name = `aegis-${label}-${randomBytes(4).toString("hex")}`;
    await execFileAsync("ip", ["netns", "add", name]);
    live.add(name);
    this.made.push(name);
    return {
      name,
      exec: (command, ...args) => execFileAsync("ip", ["netns", "exec", name, command, ...args], { encoding: "utf8" }),
      spawn: (command, args, options = {}) => spawn("ip", ["netns", "exec", name, command, ...args], options),
    };
  }

  /**
   * Namespaces `<label>-a` and `<label>-b` joined by veth-a and veth-b, with
   * 10.200.N.1/2 and fd00:ae:N::1/2, loopback up, and neighbour discovery
   * settled so the first packet a test sends is not lost to it.
   */
  async vethPair(label: string): Promise<VethPair> {
    const a = await this.namespace(`${label}-a`);
    const b = await this.namespace(`${label}-b`);
    const net = (process.pid + pairs++) % 250;
    await execFileAsync("ip", ["link", "add", "veth-a", "netns", a.name, "type", "veth", "peer", "name", "veth-b", "netns", b.name]);
    const ends: VethEnd[] = [];
    for (const [ns, iface, host] of [[a, "veth-a", 1], [b, "veth-b", 2]] as const) {
      const end = { ns, iface, v4: `10.200.${net}.${host}`, v6: `fd00:ae:${net.toString(16)}::${host}` };
      await execFileAsync("ip", ["-n", ns.name, "addr", "add", `${end.v4}/24`, "dev", iface]);
      await execFileAsync("ip", ["-n", ns.name, "addr", "add", `${end.v6}/64`, "dev", iface, "nodad"]);
      await execFileAsync("ip", ["-n", ns.name, "link", "set", iface, "up"]);
      await execFileAsync("ip", ["-n", ns.name, "link", "set", "lo", "up"]);
      ends.push(end);
    }
    const [endA, endB] = ends as [VethEnd, VethEnd];
    // Neighbour discovery on a fresh link takes about a second.
    for (let i = 0; i < 20; i++) {
      const ok = await a.exec("ping", "-c1", "-W1", endB.v6).then(() => true, () => false);
      if (ok) break;
    }
    return { a: endA, b: endB };
  }

  async destroy(): Promise<void> {
    for (const name of this.made.splice(0)) {
      await execFileAsync("ip", ["netns", "del", name]).catch(() => undefined);
      live.delete(name);
    }
  }
}
