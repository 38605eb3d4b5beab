// Pins lost on the real kernel: someone removes the agent's pin directory
// (as a remount of bpffs would), and tc keeps running the program it holds.
// The agent loads the digest afresh beside it at the next pref, then removes
// the old filter, which it knows by the program id it recorded; the port
// stays dropped.
import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pinName } from "../../ebpf/index.js";
import { AgentLab, kill } from "./lab.js";

const lab = new AgentLab("pins", 210);
const HOST = "pins-host";
const PORT = 6110;

beforeAll(() => lab.start({ udp: [PORT], tcp: [] }), 120_000);
afterAll(() => lab.stop());

describe("aegis agent run: its pins removed under it", () => {
  it("runs the digest afresh, then removes the old filter, and the port stays dropped", async () => {
    const digest = await lab.policy("e2e-pins", "1.0.0", "egress", [{ action: "drop", dst: `${lab.farIp}/32`, protocol: "udp", ports: String(PORT) }]);
    const agent = await lab.enforcing(HOST, digest);
    const onLink = async () => (await lab.datapath.attached()).filter((a) => a.iface === lab.near);
    const [before] = await onLink();
    expect(before, "the agent's filter").toMatchObject({ id: digest });

    rmSync(join(lab.pinRoot, pinName(digest)), { recursive: true });
    expect(await onLink(), "the filter runs on, no pin names it").toEqual([{ ...before, id: undefined }]);
    expect(await lab.udpReaches(PORT), "dropped by the old filter").toBe(false);
    await lab.until("the digest afresh, alone on the link", async () => {
      const now = await onLink();
      return now.length === 1 && now[0]!.id === digest && now[0]!.programId !== before!.programId;
    }, agent.output);
    expect((await onLink())[0]!.pref, "at the next pref: the old filter's was in use").toBe(before!.pref + 1);
    expect(agent.output(), "the agent said what it removed").toContain(`program id ${before!.programId}, whose pins were lost, removed`);
    expect(await lab.udpReaches(PORT), "the port is dropped").toBe(false);
    await kill(agent, "SIGTERM");
  });
});
