// v1 → v2 of one policy under a continuous UDP flood to a port both versions
// drop: the agent replaces the filter at the same pref (`tc filter replace`),
// so not one datagram reaches the peer during the swap. The peer's listener
// counts every datagram it receives, exactly.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentLab, kill } from "./lab.js";

const lab = new AgentLab("swap", 203);
const HOST = "swap-host";
const FLOOD = 6000;

beforeAll(() => lab.start({ udp: [FLOOD], tcp: [7001] }), 120_000);
afterAll(() => lab.stop());

describe("aegis agent run: a new version under a flood", () => {
  it("lets zero packets through while v1 is replaced by v2", async () => {
    const drop = { action: "drop" as const, dst: `${lab.farIp}/32`, protocol: "udp" as const, ports: String(FLOOD) };
    const v1 = await lab.policy("e2e-flood", "1.0.0", "egress", [drop]);
    const v2 = await lab.policy("e2e-flood", "2.0.0", "egress", [drop, { action: "drop", dst: `${lab.farIp}/32`, protocol: "tcp", ports: "7001" }]);
    const flood = lab.flood(FLOOD);
    try {
      await lab.until("the flood reaches the peer before any policy", async () => ((await lab.counts())[`udp/${FLOOD}`] ?? 0) > 100);
      const agent = lab.startAgent(HOST);
      await lab.registered(HOST, agent);
      await lab.admin.assign(v1, HOST);
      await lab.until("v1 attached", () => lab.status(v1, HOST, "attached"), agent.output);
      const baseline = await lab.settledCount(FLOOD);
      const sentBefore = flood.sent();
      expect(await lab.tcpConnects(7001), "v1 does not drop tcp 7001").toBe(true);

      await lab.admin.assign(v2, HOST);
      await lab.until("v2 attached", () => lab.status(v2, HOST, "attached"), agent.output);
      await lab.admin.unassign(v1, HOST);
      await lab.until("only v2 is loaded", async () => (await lab.datapath.loaded()).map((p) => p.id).join() === v2, agent.output);
      await new Promise((r) => setTimeout(r, 500));
      expect(await lab.tcpConnects(7001), "v2 is in force (drops tcp 7001)").toBe(false);
      const sentDuring = flood.sent() - sentBefore;
      expect(sentDuring, "the flood ran during the swap").toBeGreaterThan(500);
      expect((await lab.counts())[`udp/${FLOOD}`], `datagrams that reached the peer during the swap (of ${sentDuring} sent)`).toBe(baseline);
      expect((await lab.datapath.counters(v2))[0], "v2's rule counts the flood").toBeGreaterThan(0);
      await kill(agent, "SIGTERM");
    } finally {
      flood.stop();
    }
  });
});
