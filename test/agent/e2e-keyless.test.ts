// Issue 12, acceptance 3, on the real kernel: an agent given only the trust
// root reference and the operator's public key (no --trust) enforces a
// policy signed keylessly (test Fulcio CA and Rekor log, harness
// sigstore.ts), pulled with the trust root from a mirror: the origin
// registry is stopped before the agent starts, so the mirror and the
// assigner are all it can reach, and no Sigstore service exists at all.
// A policy signed keylessly by another workflow is refused with IDENTITY_MISMATCH.
import { createPrivateKey } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildBundle, pushBundle } from "../../bundle/index.js";
import { RemoteRepository } from "../../registry/index.js";
import { generateKeyPair, KeySigner, pushTrustRoot } from "../../signing/index.js";
import { aegis } from "../cli/run.js";
import { startRegistry, type RegistryServer } from "../harness/registry.js";
import { signKeyless, TestFulcio, TestRekor, trustedRoot, type Identity } from "../harness/sigstore.js";
import { AgentLab, kill } from "./lab.js";

const lab = new AgentLab("keyless", 209);
const HOST = "keyless-host";
const PORT = 6200;
const ISSUER = "https://token.actions.githubusercontent.com";
const RELEASE: Identity = { issuer: ISSUER, subject: "https://github.com/acme/policies/.github/workflows/release.yml@refs/tags/v1.0.0" };
const fulcio = new TestFulcio();
const rekor = new TestRekor();
const operator = generateKeyPair("ecdsa-p256");
let mirror: RegistryServer;

beforeAll(async () => {
  await lab.start({ udp: [PORT], tcp: [] });
  mirror = await startRegistry();
}, 120_000);
afterAll(async () => {
  await lab.stop();
  await mirror?.stop();
});

/** Builds and pushes a policy to the origin, signs it keylessly as `identity`; returns its digest. */
async function keylessPolicy(name: string, identity: Identity): Promise<string> {
  const dir = join(lab.work, name);
  mkdirSync(dir, { recursive: true });
  const drop = { action: "drop", dst: `${lab.farIp}/32`, protocol: "udp", ports: String(PORT) };
  writeFileSync(join(dir, "policy.yaml"), [`name: ${name}`, "version: 1.0.0", "description: keyless e2e", "program: aegis_net", "attach: { hook: tc, direction: egress }", "rules:", `  - ${JSON.stringify(drop)}`, ""].join("\n"));
  const { bytes, policy } = await buildBundle(dir);
  const repo = new RemoteRepository(lab.registry.host, "policies/keyless");
  const { manifest } = await pushBundle(bytes, policy, repo, name);
  await signKeyless(repo, manifest, { fulcio, rekor, identity });
  return manifest.digest;
}

describe("aegis agent run with only --trust-root-ref and the operator key", () => {
  it("enforces a keyless-signed policy pulled from a mirror, and refuses one signed by another identity", async () => {
    const good = await keylessPolicy("e2e-keyless", RELEASE);
    const other = await keylessPolicy("e2e-keyless-other", { ...RELEASE, subject: "https://github.com/mallory/policies/.github/workflows/release.yml@refs/tags/v1.0.0" });

    // The operator ships the trusted root and the identity policy as one signed artifact.
    const roots = new RemoteRepository(lab.registry.host, "trust/root");
    const root = await pushTrustRoot(roots, Buffer.from(JSON.stringify(trustedRoot({ fulcio: [fulcio], rekor: [rekor] }))), {
      version: 1,
      tag: "current",
      signer: new KeySigner(createPrivateKey(operator.privateKey)),
      policy: { identities: [{ name: "release", issuer: ISSUER, subject: "^https://github.com/acme/policies/.github/workflows/release.yml@refs/tags/v.*$" }] },
    });

    // The mirror gets everything with its signatures; then the origin goes away.
    const mirrorRepo = `${mirror.host}/mirror/aegis`;
    for (const ref of [`${lab.registry.host}/policies/keyless@${good}`, `${lab.registry.host}/policies/keyless@${other}`, `${lab.registry.host}/trust/root@${root.manifest.digest}`]) {
      const copied = await aegis(["copy", "-r", ref, mirrorRepo]);
      expect(copied.code, `copy ${ref} to the mirror: ${copied.stderr}`).toBe(0);
    }
    // The good one is registered at the origin (so only the mirror can serve it), the other at the
    // mirror (so every source the agent tries refuses it for its identity, and that is the code reported).
    await lab.admin.call("POST", "/artifacts", { reference: `${lab.registry.host}/policies/keyless@${good}` });
    await lab.admin.call("POST", "/artifacts", { reference: `${mirrorRepo}@${other}` });
    await lab.registry.stop();

    writeFileSync(join(lab.work, "operator.pub"), operator.publicKey);
    const agent = lab.startAgent(
      HOST,
      ["--trust-root-ref", `${lab.registry.host}/trust/root@${root.manifest.digest}`, "--trust-root-key", join(lab.work, "operator.pub"), "--registry-mirror", mirrorRepo],
      { AEGIS_TRUST: "" },
    );
    await lab.registered(HOST, agent);
    expect(await lab.udpReaches(PORT), "UDP passes before anything is assigned").toBe(true);
    await lab.admin.assign(good, HOST);
    await lab.until("the keyless-signed policy attached", () => lab.status(good, HOST, "attached"), agent.output);
    expect(await lab.udpReaches(PORT), "the keyless-signed policy drops the UDP port").toBe(false);
    const output = agent.output();
    expect(output, "the trust root came from the mirror, signed by the operator").toMatch(new RegExp(`trust root ${root.manifest.digest} version 1 from ${mirrorRepo}@`));
    expect(output, "verified as the release identity, from the mirror").toMatch(new RegExp(`verified e2e-keyless 1.0.0 ${good}.*signed by release, from ${mirrorRepo}@`));

    await lab.admin.assign(other, HOST);
    await lab.until("the other identity's policy reported failed", () => lab.status(other, HOST, "failed"), agent.output);
    const report = (await lab.admin.status(other)).hosts.find((h) => h.host_id === HOST)!;
    expect(report.code, `refused for its identity\n${agent.output()}`).toBe("IDENTITY_MISMATCH");
    expect((await lab.datapath.loaded()).map((p) => p.id), "only the release-signed policy is loaded").toEqual([good]);
    await kill(agent, "SIGTERM");
  });
});
