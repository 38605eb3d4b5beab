// `kill -9` of the agent, in steady state and in the middle of a pull (a
// registry proxy that stalls blob bodies): the kernel keeps the programs in
// force, so a continuous UDP flood to a dropped port gets zero datagrams to
// the peer the whole time; the restarted agent adopts the pins without
// attaching again (same program ids) and reconciles what changed while it
// was down.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRegistryProxy, type RegistryProxy } from "../harness/proxy.js";
import { AgentLab, kill } from "./lab.js";

const lab = new AgentLab("crash", 204);
const HOST = "crash-host";
const FLOOD = 6000;
let proxy: RegistryProxy;

beforeAll(async () => {
  await lab.start({ udp: [FLOOD], tcp: [7001, 7002] });
  proxy = await startRegistryProxy(lab.registry.url);
}, 120_000);
afterAll(async () => {
  await proxy?.stop();
  await lab.stop();
});

/** The filters on this test's interface (digest, program id, direction, pref), in digest order. */
async function filters(): Promise<string> {
  const mine = (await lab.datapath.attached()).filter((a) => a.iface === lab.near);
  return JSON.stringify(mine.sort((a, b) => (a.id ?? "").localeCompare(b.id ?? "")));
}

describe("aegis agent run: kill -9", () => {
  it("never lets enforcement lapse, and the restarted agent adopts and reconciles", async () => {
    const flooded = await lab.policy("e2e-crash-flood", "1.0.0", "egress", [{ action: "drop", dst: `${lab.farIp}/32`, protocol: "udp", ports: String(FLOOD) }]);
    const later = await lab.policy("e2e-crash-later", "1.0.0", "egress", [{ action: "drop", dst: `${lab.farIp}/32`, protocol: "tcp", ports: "7001" }]);
    const stalled = await lab.policy("e2e-crash-stalled", "1.0.0", "egress", [{ action: "drop", dst: `${lab.farIp}/32`, protocol: "tcp", ports: "7002" }], proxy.host);
    const flood = lab.flood(FLOOD);
    try {
      const first = lab.startAgent(HOST);
      await lab.registered(HOST, first);
      await lab.admin.assign(flooded, HOST);
      await lab.until("the flood policy attached", () => lab.status(flooded, HOST, "attached"), first.output);
      const baseline = await lab.settledCount(FLOOD);
      const steady = await filters();
      let sent = flood.sent();

      // Steady state: kill -9, then a change while it is down.
      await kill(first);
      await lab.admin.assign(later, HOST);
      await new Promise((r) => setTimeout(r, 1000));
      expect((await lab.counts())[`udp/${FLOOD}`], "datagrams through while the agent is dead").toBe(baseline);
      expect(await lab.tcpConnects(7001), "the change made while down is not in force yet").toBe(true);
      // The restart switches loaders: bpftool adopts what libbpf pinned (same layout).
      expect(first.output(), "auto picks libbpf here").toContain("aegis agent: datapath libbpf\n");
      const second = lab.startAgent(HOST, ["--datapath", "bpftool"]);
      await lab.until("the restarted agent adopted the program", async () => second.output().includes(`adopted e2e-crash-flood ${flooded}`), second.output);
      expect(second.output(), "--datapath bpftool").toContain("aegis agent: datapath bpftool\n");
      await lab.until("the change made while it was down is attached", () => lab.status(later, HOST, "attached"), second.output);
      expect(await lab.tcpConnects(7001), "the policy assigned while the agent was down is in force").toBe(false);
      const adopted = JSON.parse(await filters()) as { id: string }[];
      expect(JSON.stringify(adopted.filter((a) => a.id === flooded)), "the adopted filter is the same program at the same pref").toBe(
        JSON.stringify((JSON.parse(steady) as { id: string }[]).filter((a) => a.id === flooded)),
      );
      expect(flood.sent() - sent, "the flood ran across the crash").toBeGreaterThan(500);
      expect((await lab.counts())[`udp/${FLOOD}`], "datagrams through across kill -9 and the restart").toBe(baseline);

      // During a pull: the registry stalls the new policy's blob, the agent is killed mid-pull.
      const beforePull = await filters();
      sent = flood.sent();
      proxy.set({ stallBlobsAfter: 16 });
      proxy.requests.length = 0;
      await lab.admin.assign(stalled, HOST);
      await lab.until("the agent is pulling a blob through the stalling proxy", async () => proxy.requests.some((r) => r.method === "GET" && r.path.includes("/blobs/")), second.output);
      await kill(second);
      proxy.set({ stallBlobsAfter: undefined });
      await new Promise((r) => setTimeout(r, 1000));
      expect((await lab.counts())[`udp/${FLOOD}`], "datagrams through after kill -9 during a pull").toBe(baseline);
      expect(await filters(), "kill -9 during a pull leaves the filters as they were").toBe(beforePull);
      const third = lab.startAgent(HOST);
      await lab.until("the stalled policy is attached after the restart", () => lab.status(stalled, HOST, "attached"), third.output);
      expect(await lab.tcpConnects(7002), "the policy whose pull was interrupted is in force").toBe(false);
      const after = JSON.parse(await filters()) as { id: string }[];
      const kept = (JSON.parse(beforePull) as { id: string }[]).filter((a) => a.id !== stalled);
      expect(JSON.stringify(after.filter((a) => a.id !== stalled)), "the programs in force before were adopted, not attached again").toBe(JSON.stringify(kept));
      expect(flood.sent() - sent, "the flood ran across the second crash").toBeGreaterThan(500);
      expect((await lab.counts())[`udp/${FLOOD}`], "datagrams through across both crashes").toBe(baseline);
      await kill(third, "SIGTERM");
    } finally {
      flood.stop();
    }
  });
});
