// Outages, each a few seconds with a short poll interval: the assigner down
// (stopped, then started again on the same port and data dir), the registry
// down (every request answered 503 by a proxy in front of it) and NATS down
// (killed, then started again on the same port). Through all of them a
// continuous UDP flood to a dropped port gets zero datagrams to the peer; the
// agent backs off while the assigner is away and catches up with what was
// assigned once each service is back.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRegistryProxy, type RegistryProxy } from "../harness/proxy.js";
import { AgentLab, kill } from "./lab.js";

const lab = new AgentLab("outage", 207);
const HOST = "outage-host";
const FLOOD = 6000;
let proxy: RegistryProxy;

beforeAll(async () => {
  await lab.start({ udp: [FLOOD], tcp: [7001, 7002, 7003, 7004] });
  proxy = await startRegistryProxy(lab.registry.url);
}, 120_000);
afterAll(async () => {
  await proxy?.stop();
  await lab.stop();
});

const dropTcp = (port: number) => [{ action: "drop" as const, dst: `${lab.farIp}/32`, protocol: "tcp" as const, ports: String(port) }];

describe("aegis agent run: the assigner, the registry and NATS go away and come back", () => {
  it("holds enforcement through each outage and catches up after it", async () => {
    const flooded = await lab.policy("e2e-out-flood", "1.0.0", "egress", [{ action: "drop", dst: `${lab.farIp}/32`, protocol: "udp", ports: String(FLOOD) }]);
    const afterAssigner = await lab.policy("e2e-out-assigner", "1.0.0", "egress", dropTcp(7001));
    const afterRegistry = await lab.policy("e2e-out-registry", "1.0.0", "egress", dropTcp(7002), proxy.host);
    const duringNats = await lab.policy("e2e-out-nats", "1.0.0", "egress", dropTcp(7003));
    const afterNats = await lab.policy("e2e-out-nats-back", "1.0.0", "egress", dropTcp(7004));
    const flood = lab.flood(FLOOD);
    try {
      const agent = lab.startAgent(HOST, ["--poll-interval", "2s"]);
      await lab.registered(HOST, agent);
      await lab.admin.assign(flooded, HOST);
      await lab.until("the flood policy attached", () => lab.status(flooded, HOST, "attached"), agent.output);
      const baseline = await lab.settledCount(FLOOD);
      const through = async () => (await lab.counts())[`udp/${FLOOD}`]! - baseline;

      // The assigner: stopped for a few seconds, started again on the same port and data dir.
      let sent = flood.sent();
      await lab.assigner.close();
      await lab.until("the agent backs off", async () => /reconcile failed \[[A-Z_]+\].*backing off/.test(agent.output()), agent.output);
      await new Promise((r) => setTimeout(r, 3000));
      expect(await through(), "datagrams through while the assigner is down").toBe(0);
      await lab.startAssigner();
      await lab.admin.assign(afterAssigner, HOST);
      await lab.until("the agent caught up with the assigner back", () => lab.status(afterAssigner, HOST, "attached"), agent.output);
      expect(await lab.tcpConnects(7001), "the policy assigned after the assigner came back is in force").toBe(false);
      expect(flood.sent() - sent, "the flood ran through the assigner outage").toBeGreaterThan(500);

      // The registry: every request refused with 503 while a new digest is assigned.
      sent = flood.sent();
      proxy.set({ throttle: { status: 503, times: 1_000_000 } });
      proxy.requests.length = 0;
      await lab.admin.assign(afterRegistry, HOST);
      await lab.until("the agent tried the registry and was refused", async () => proxy.requests.filter((r) => r.status === 503).length >= 2, agent.output);
      await new Promise((r) => setTimeout(r, 3000));
      expect(await lab.tcpConnects(7002), "not installed while the registry is down").toBe(true);
      expect(await lab.tcpConnects(7001), "what was in force stays in force").toBe(false);
      expect(await through(), "datagrams through while the registry is down").toBe(0);
      proxy.set({ throttle: { status: 503, times: 0 } });
      await lab.until("the agent caught up with the registry back", () => lab.status(afterRegistry, HOST, "attached"), agent.output);
      expect(await lab.tcpConnects(7002), "the policy assigned while the registry was down is in force").toBe(false);
      expect(flood.sent() - sent, "the flood ran through the registry outage").toBeGreaterThan(500);

      // NATS: killed; the agent keeps polling and installs what is assigned meanwhile.
      sent = flood.sent();
      await lab.nats.kill();
      await lab.admin.assign(duringNats, HOST);
      await lab.until("installed by polling while NATS is down", async () => !(await lab.tcpConnects(7003)), agent.output);
      expect(agent.output(), "the agent logged the attach").toContain(`attached e2e-out-nats 1.0.0 ${duringNats}`);
      expect(await through(), "datagrams through while NATS is down").toBe(0);
      // Reported meanwhile over HTTP (the outbox): nats.js would drop what is published while it reconnects.
      await lab.until("the attach reaches the assigner over HTTP while NATS is down", () => lab.status(duringNats, HOST, "attached"), agent.output);
      await lab.nats.start();
      await lab.admin.assign(afterNats, HOST);
      await lab.until("telemetry reaches the assigner again once NATS is back", () => lab.status(afterNats, HOST, "attached"), agent.output);
      expect(await lab.tcpConnects(7004), "the policy assigned after NATS came back is in force").toBe(false);
      expect(flood.sent() - sent, "the flood ran through the NATS outage").toBeGreaterThan(500);
      expect(await through(), "datagrams through across all three outages").toBe(0);
      await kill(agent, "SIGTERM");
    } finally {
      flood.stop();
    }
  });
});
