// An object the kernel verifier rejects, in a bundle signed by the trusted
// key: the signature and every digest check out, so only the kernel can
// refuse it. The agent reports `failed` with the load error's code, and the
// version it meant to replace stays in force (a UDP port it drops stays
// dropped), on the real kernel.
import { createPrivateKey } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildBundle, encodeBundle, pushBundle } from "../../bundle/index.js";
import { compileSource } from "../../ebpf/index.js";
import { RemoteRepository } from "../../registry/index.js";
import { KeySigner, signArtifact } from "../../signing/index.js";
import { AgentLab, kill } from "./lab.js";

const lab = new AgentLab("verifier", 206);
const HOST = "verifier-host";
const PORT = 6000;

// Reads packet data with no bounds check: valid C, a valid BPF object, refused by the verifier.
const UNSAFE = `
#include <linux/bpf.h>
__attribute__((section("tc"), used)) int aegis_net(struct __sk_buff *skb) {
  return *(volatile unsigned char *)(long)skb->data;
}
char _license[] __attribute__((section("license"), used)) = "GPL";
`;

beforeAll(() => lab.start({ udp: [PORT], tcp: [] }), 120_000);
afterAll(() => lab.stop());

describe("aegis agent run: a signed object the kernel verifier rejects", () => {
  it("is refused with a failed event naming the code, and the previous version stays in force", async () => {
    const drop = { action: "drop" as const, dst: `${lab.farIp}/32`, protocol: "udp" as const, ports: String(PORT) };
    const good = await lab.policy("e2e-verifier", "1.0.0", "egress", [drop]);

    const dir = join(lab.work, "e2e-verifier-2.0.0");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "policy.yaml"), ["name: e2e-verifier", "version: 2.0.0", "description: the verifier says no", "program: aegis_net", "attach: { hook: tc, direction: egress }", "rules:", `  - ${JSON.stringify(drop)}`, ""].join("\n"));
    const { policy } = await buildBundle(dir);
    const bytes = await encodeBundle({ policy, program: await compileSource("unsafe", UNSAFE) });
    const repo = new RemoteRepository(lab.registry.host, "policies/e2e");
    const artifact = await pushBundle(bytes, policy, repo, "2.0.0");
    await signArtifact(repo, artifact.manifest, new KeySigner(createPrivateKey(lab.ciKey.privateKey)), repo.name);
    const bad = artifact.manifest.digest;
    await lab.admin.call("POST", "/artifacts", { reference: `${lab.registry.host}/policies/e2e@${bad}` });

    const agent = lab.startAgent(HOST);
    await lab.registered(HOST, agent);
    await lab.admin.assign(good, HOST);
    await lab.until("1.0.0 attached", () => lab.status(good, HOST, "attached"), agent.output);
    expect(await lab.udpReaches(PORT), "1.0.0 drops the UDP port").toBe(false);
    const before = JSON.stringify((await lab.datapath.attached()).filter((a) => a.iface === lab.near));

    await lab.admin.assign(bad, HOST);
    await lab.until("2.0.0 reported failed", () => lab.status(bad, HOST, "failed"), agent.output);
    const report = (await lab.admin.status(bad)).hosts.find((h) => h.host_id === HOST)!;
    expect(report.code, `the failed event names the load error's code\n${agent.output()}`).toBe("LOAD_FAILED");
    expect(agent.output(), "verified before the kernel refused it").toContain(`verified e2e-verifier 2.0.0 ${bad}`);
    expect(agent.output(), "the log line names the code").toContain(`failed e2e-verifier 2.0.0 ${bad} [LOAD_FAILED]`);
    expect(JSON.stringify((await lab.datapath.attached()).filter((a) => a.iface === lab.near)), "1.0.0's filter is untouched").toBe(before);
    expect((await lab.datapath.loaded()).map((p) => p.id), "nothing of 2.0.0 is left pinned").toEqual([good]);
    expect(await lab.udpReaches(PORT), "1.0.0 still drops the UDP port").toBe(false);
    expect(await lab.status(good, HOST, "attached"), "the assigner still shows 1.0.0 attached").toBe(true);
    await kill(agent, "SIGTERM");
  });
});
