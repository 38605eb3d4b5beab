// The agent enforces more than ICMP, on the real kernel with real traffic: a
// TCP port range, UDP and IPv6 rules; two policies at once both enforce, and
// removing one leaves the other in force. Ports outside the rules still pass,
// so each case can fail both ways.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentLab, kill } from "./lab.js";

const lab = new AgentLab("rules", 202);
const HOST = "rules-host";

beforeAll(() => lab.start({ udp: [5353, 5400], tcp: [7001, 7005, 7010] }), 120_000);
afterAll(() => lab.stop());

describe("aegis agent run: TCP port ranges, UDP and IPv6", () => {
  it("enforces two policies at once and keeps one when the other is removed", async () => {
    const tcpRange = await lab.policy("e2e-tcp-range", "1.0.0", "egress", [{ action: "drop", dst: `${lab.farIp}/32`, protocol: "tcp", ports: "7000-7005" }]);
    const udpV6 = await lab.policy("e2e-udp-v6", "1.0.0", "egress", [
      { action: "drop", dst: `${lab.farIp}/32`, protocol: "udp", ports: "5353" },
      { action: "drop", dst: `${lab.farIp6}/128` },
    ]);
    for (const [what, check] of [
      ["tcp 7001 before", () => lab.tcpConnects(7001)],
      ["tcp 7005 before", () => lab.tcpConnects(7005)],
      ["udp 5353 before", () => lab.udpReaches(5353)],
      ["v6 tcp 7010 before", () => lab.tcpConnects(7010, true)],
    ] as const) expect(await check(), `${what}: passes without a policy`).toBe(true);

    const agent = lab.startAgent(HOST);
    await lab.registered(HOST, agent);
    await lab.admin.assign(tcpRange, HOST);
    await lab.admin.assign(udpV6, HOST);
    await lab.until("both policies attached", async () => (await lab.status(tcpRange, HOST, "attached")) && (await lab.status(udpV6, HOST, "attached")), agent.output);

    expect(await lab.tcpConnects(7001), "tcp 7001 (in 7000-7005) is dropped").toBe(false);
    expect(await lab.tcpConnects(7005), "tcp 7005 (the range's end) is dropped").toBe(false);
    expect(await lab.tcpConnects(7010), "tcp 7010 (outside the range) connects").toBe(true);
    expect(await lab.udpReaches(5353), "udp 5353 is dropped").toBe(false);
    expect(await lab.udpReaches(5400), "udp 5400 (another port) reaches the peer").toBe(true);
    expect(await lab.ping6(), "ping6 to the peer is dropped").toBe(false);
    expect(await lab.tcpConnects(7010, true), "v6 tcp to the peer is dropped").toBe(false);
    expect(await lab.udpReaches(5400, true), "v6 udp to the peer is dropped").toBe(false);
    expect(await lab.ping(), "v4 ping (no rule) passes").toBe(true);
    const [tcpDrops] = await lab.datapath.counters(tcpRange);
    const [udpDrops, v6Drops] = await lab.datapath.counters(udpV6);
    expect(tcpDrops, "the TCP range rule counted drops").toBeGreaterThan(0);
    expect(udpDrops, "the UDP rule counted drops").toBeGreaterThan(0);
    expect(v6Drops, "the IPv6 rule counted drops").toBeGreaterThan(0);

    await lab.admin.unassign(udpV6, HOST);
    await lab.until("the UDP/IPv6 policy is detached", () => lab.status(udpV6, HOST, "detached"), agent.output);
    expect(await lab.udpReaches(5353), "udp 5353 passes once its policy is removed").toBe(true);
    expect(await lab.ping6(), "ping6 passes once its policy is removed").toBe(true);
    expect(await lab.tcpConnects(7001), "tcp 7001 is still dropped by the other policy").toBe(false);
    expect(await lab.tcpConnects(7010), "tcp 7010 still connects").toBe(true);
    expect((await lab.datapath.loaded()).map((p) => p.id), "only the TCP policy is loaded").toEqual([tcpRange]);

    await lab.admin.unassign(tcpRange, HOST);
    await lab.until("tcp 7001 connects again", () => lab.tcpConnects(7001), agent.output);
    await lab.until("nothing is loaded", async () => (await lab.datapath.loaded()).length === 0, agent.output);
    await kill(agent, "SIGTERM");
  });
});
