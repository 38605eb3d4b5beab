// The assigner's signature check is verifyArtifact too: with a trust file of
// keyless identities (and the trusted root pinned by digest in a registry),
// a keyless-signed artifact is registered with its signature, one signed by
// another identity with none (agents refuse it). `aegis apply --trust` reads
// the same trust file, its root from the registry, before changing anything.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createPrivateKey } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AssignerClient } from "../../assigner/api/index.js";
import { startAssigner, type RunningAssigner } from "../../assigner/index.js";
import { buildBundle, pushBundle } from "../../bundle/index.js";
import { RemoteRepository } from "../../registry/index.js";
import { generateKeyPair, KeySigner, pushTrustRoot } from "../../signing/index.js";
import { aegis, expectOneErrorLine } from "../cli/run.js";
import { startRegistry, type RegistryServer } from "../harness/registry.js";
import { signKeyless, TestFulcio, TestRekor, trustedRoot } from "../harness/sigstore.js";

const ISSUER = "https://token.actions.githubusercontent.com";
const SUBJECT = "https://github.com/acme/policies/.github/workflows/release.yml@refs/tags/v1.0.0";
const fulcio = new TestFulcio();
const rekor = new TestRekor();
let registry: RegistryServer;
let assigner: RunningAssigner;
let work: string;

beforeAll(async () => {
  registry = await startRegistry();
  work = mkdtempSync(join(tmpdir(), "aegis-assigner-keyless-"));
  const roots = new RemoteRepository(registry.host, "trust/root");
  const operator = generateKeyPair("ecdsa-p256");
  const root = await pushTrustRoot(roots, Buffer.from(JSON.stringify(trustedRoot({ fulcio: [fulcio], rekor: [rekor] }))), { version: 1, signer: new KeySigner(createPrivateKey(operator.privateKey)) });
  writeFileSync(join(work, "trust.yaml"), ["identities:", "  - name: release", `    issuer: ${ISSUER}`, `    subject: ${SUBJECT}`, `trustedRoot: ${registry.host}/trust/root@${root.manifest.digest}`, ""].join("\n"));
  assigner = await startAssigner({ port: 0, dataDir: join(work, "assigner"), registry: `${registry.host}/aegis/uploads`, adminToken: "operator-secret", trust: join(work, "trust.yaml") });
});
afterAll(async () => {
  await assigner?.close();
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

async function keylessPolicy(version: string, subject: string): Promise<string> {
  const repo = new RemoteRepository(registry.host, "policies/keyless");
  const { bytes, policy } = await buildBundle("policies/block-icmp-8888");
  const { manifest } = await pushBundle(bytes, { ...policy, version }, repo, version);
  await signKeyless(repo, manifest, { fulcio, rekor, identity: { issuer: ISSUER, subject } });
  return `${registry.host}/policies/keyless@${manifest.digest}`;
}

describe("the assigner checks keyless signatures", () => {
  it("registers the trusted identity's signature, and none for another identity", async () => {
    const admin = new AssignerClient(assigner.url, "operator-secret");
    const trusted = (await admin.call("POST", "/artifacts", { reference: await keylessPolicy("1.0.0", SUBJECT) })) as { signature: string };
    expect(trusted.signature, "the keyless signature is recorded").toMatch(/^[A-Za-z0-9+/]{20,}={0,2}$/);
    const other = (await admin.call("POST", "/artifacts", { reference: await keylessPolicy("1.0.1", "https://github.com/mallory/x/.github/workflows/r.yml@refs/heads/main") })) as { signature: string };
    expect(other.signature, "another identity's signature is not trusted").toBe("");
  });
});

describe("aegis apply --trust with the root in a registry", () => {
  it("applies the trusted identity's digest and refuses another identity's, before changing anything", async () => {
    const env = { AEGIS_ASSIGNER_URL: assigner.url, AEGIS_ADMIN_TOKEN: "operator-secret" };
    const admin = new AssignerClient(assigner.url, "operator-secret");
    const fleet = (name: string, ref: string) => {
      const file = join(work, name);
      writeFileSync(file, ["policies:", "  - name: keyless", `    ref: ${ref}`, "    hosts: [keyless-host]", ""].join("\n"));
      return file;
    };
    const other = fleet("other.yaml", await keylessPolicy("2.0.1", "https://github.com/mallory/x/.github/workflows/r.yml@refs/heads/main"));
    const before = await admin.desiredState();
    const refused = await aegis(["apply", "-f", other, "--trust", join(work, "trust.yaml")], env);
    expect(expectOneErrorLine(refused), "another identity's digest").toMatch(/is not signed by a trusted key/);
    expect((await admin.desiredState()).version, "nothing applied").toBe(before.version);
    const trusted = await keylessPolicy("2.0.0", SUBJECT);
    const applied = await aegis(["apply", "-f", fleet("trusted.yaml", trusted), "--trust", join(work, "trust.yaml")], env);
    expect(applied.code, `apply: ${applied.stdout}${applied.stderr}`).toBe(0);
    expect((await admin.desiredState()).assignments.map((a) => a.artifact_id), "applied").toEqual([trusted.slice(trusted.indexOf("@") + 1)]);
  });
});
