// Drift on the real kernel: someone runs `tc filter del` on the agent's
// filter. The agent notices at its next pass, reports `drift`, and attaches
// the same program at the same pref again, so the port is dropped again.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentLab, kill } from "./lab.js";

const execFileAsync = promisify(execFile);
const lab = new AgentLab("drift", 208);
const HOST = "drift-host";
const PORT = 6100;

beforeAll(() => lab.start({ udp: [PORT], tcp: [] }), 120_000);
afterAll(() => lab.stop());

describe("aegis agent run: a filter deleted by someone else", () => {
  it("is restored at the next pass and reported as drift", async () => {
    const digest = await lab.policy("e2e-drift", "1.0.0", "egress", [{ action: "drop", dst: `${lab.farIp}/32`, protocol: "udp", ports: String(PORT) }]);
    const agent = await lab.enforcing(HOST, digest);
    expect(await lab.udpReaches(PORT), "the policy drops the port").toBe(false);
    const ours = async () => (await lab.datapath.attached()).filter((a) => a.iface === lab.near && a.id === digest);
    const [filter] = await ours();
    expect(filter, "the agent's filter is on the link").toBeDefined();

    await execFileAsync("tc", ["filter", "del", "dev", lab.near, filter!.direction, "pref", String(filter!.pref)]);
    // Restored within a few 1 s passes, however the deletion and a pass interleave.
    await lab.until("the filter is back", async () => (await ours()).length === 1, agent.output);
    const [restored] = await ours();
    expect({ pref: restored!.pref, programId: restored!.programId }, "the same program at the same pref").toEqual({ pref: filter!.pref, programId: filter!.programId });
    expect(agent.output(), "the agent reported drift").toMatch(new RegExp(`drift e2e-drift 1\\.0\\.0 ${digest}`));
    expect(await lab.udpReaches(PORT), "the port is dropped again").toBe(false);
    await kill(agent, "SIGTERM");
  });
});
