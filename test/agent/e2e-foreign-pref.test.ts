// A pref held by a filter that runs no BPF program (a u32 filter, as OVS
// offload or an operator leaves): tc refuses a BPF filter there, so the agent
// counts it as in use and attaches the policy at the next free pref, leaving
// the u32 filter as it was; the port is dropped.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { basePref, prefFor } from "../../agent/index.js";
import { AgentLab, kill } from "./lab.js";

const execFileAsync = promisify(execFile);
const lab = new AgentLab("foreign", 212);
const HOST = "foreign-pref-host";
const PORT = 6120;
const NAME = "e2e-foreign-pref";

beforeAll(() => lab.start({ udp: [PORT], tcp: [] }), 120_000);
afterAll(() => lab.stop());

/** The u32 filters on the link's egress, as `tc -j filter show` gives them (chain entries left out). */
async function u32Filters(): Promise<unknown[]> {
  const { stdout } = await execFileAsync("tc", ["-j", "filter", "show", "dev", lab.near, "egress"]);
  return (JSON.parse(stdout || "[]") as { kind?: string }[]).filter((f) => f.kind === "u32");
}

describe("aegis agent run: a u32 filter at the policy's pref", () => {
  it("attaches the policy at another pref and leaves the u32 filter untouched", async () => {
    const pref = basePref(NAME);
    await execFileAsync("tc", ["qdisc", "replace", "dev", lab.near, "clsact"]);
    // Matches nothing the test sends (another port), and classifies only (no action): it just holds the pref.
    await execFileAsync("tc", ["filter", "add", "dev", lab.near, "egress", "pref", String(pref), "protocol", "ip", "u32", "match", "ip", "dport", "9", "0xffff", "flowid", "1:1"]);
    const before = await u32Filters();
    expect(before.length, "the u32 filter is in place").toBeGreaterThan(0);

    const digest = await lab.policy(NAME, "1.0.0", "egress", [{ action: "drop", dst: `${lab.farIp}/32`, protocol: "udp", ports: String(PORT) }]);
    const agent = await lab.enforcing(HOST, digest);
    const ours = (await lab.datapath.attached()).filter((a) => a.iface === lab.near && a.id === digest);
    expect(ours.map((a) => a.pref), `the policy at a pref other than the u32 filter's ${pref}`).toEqual([prefFor(NAME, new Set([pref]))]);
    expect(await u32Filters(), "the u32 filter, untouched").toEqual(before);
    expect(await lab.udpReaches(PORT), "the policy drops the port").toBe(false);
    await kill(agent, "SIGTERM");
  });
});
