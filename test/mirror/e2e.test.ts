// Acceptance 3 (issue 11), end to end as root: a signed policy is exported
// from a source registry into a capsule; the source registry is stopped; the
// capsule is imported into the site's registry (registry 2.8.2, the only one
// left), registered there with the site's assigner, and a real `aegis agent
// run` enforces it on a veth: ping to the peer fails, the signed receipt says
// attached.
import { createPrivateKey } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildBundle, pushBundle } from "../../bundle/index.js";
import { RemoteRepository } from "../../registry/index.js";
import { KeySigner, signArtifact } from "../../signing/index.js";
import { AgentLab } from "../agent/lab.js";
import { aegis } from "../cli/run.js";
import { startRegistry, type RegistryServer } from "../harness/registry.js";

const lab = new AgentLab("mirror", 219);
let source: RegistryServer;

beforeAll(async () => {
  await lab.start({ udp: [9219], tcp: [] });
  source = await startRegistry();
}, 120_000);

afterAll(async () => {
  await source?.stop();
  await lab.stop();
});

describe("an air-gapped site", () => {
  it("enforces a policy that reached it only as a capsule, with its source registry gone", async () => {
    const dir = join(lab.work, "airgap-icmp");
    mkdirSync(dir);
    writeFileSync(
      join(dir, "policy.yaml"),
      ["name: airgap-icmp", "version: 1.0.0", "description: no ping to the test peer", "program: aegis_net", "attach: { hook: tc, direction: egress }", "rules:", `  - { action: drop, dst: ${lab.farIp}/32, protocol: icmp }`, ""].join("\n"),
    );
    const { bytes, policy } = await buildBundle(dir);
    const outside = new RemoteRepository(source.host, "policies/outside");
    const { manifest } = await pushBundle(bytes, policy, outside, "1.0.0");
    await signArtifact(outside, manifest, new KeySigner(createPrivateKey(lab.ciKey.privateKey)), outside.name);
    const id = manifest.digest;

    const capsule = join(lab.work, "capsule.tar");
    const exported = await aegis(["mirror", "export", `${outside.name}@${id}`, "-o", capsule]);
    expect(exported.code, exported.stderr).toBe(0);
    await source.stop();
    expect(await fetch(`${source.url}/v2/`).then(() => "reachable", () => "unreachable"), "the source registry is gone").toBe("unreachable");

    const site = `${lab.registry.host}/site/policies`;
    const imported = await aegis(["mirror", "import", capsule, site, "--key", join(lab.work, "ci.pub"), "--json"]);
    expect(imported.code, imported.stderr).toBe(0);
    expect(JSON.parse(imported.stdout).artifacts.map((a: { reference: string }) => a.reference), "imported").toEqual([`${site}@${id}`]);

    await lab.admin.call("POST", "/artifacts", { reference: `${site}@${id}` });
    const agent = lab.startAgent("airgap-host");
    await lab.registered("airgap-host", agent);
    expect(await lab.ping(), "ping passes before the policy").toBe(true);
    await lab.admin.assign(id, "airgap-host");
    await lab.until("ping to the peer fails", async () => !(await lab.ping()), agent.output);
    await lab.until("the assigner shows the signed receipt: attached", () => lab.status(id, "airgap-host", "attached"), agent.output);
    expect(agent.output(), "the agent verified and attached the policy").toContain(`attached airgap-icmp 1.0.0 ${id}`);
  });
});
