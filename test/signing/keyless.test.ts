// Keyless signatures (issue 12, acceptance 1 and 4), offline: bundles made by
// the harness's test Fulcio CA and Rekor log (test/harness/sigstore.ts),
// stored as referrers in registry 2.8.2 beside key-based ones, verified
// against a trusted_root.json by identity; each refusal has its own code,
// and `aegis verify --explain` names the check that failed.
import { createPrivateKey } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildBundle, pushBundle } from "../../bundle/index.js";
import { RemoteRepository, type Descriptor, type Target } from "../../registry/index.js";
import { explainArtifact, generateKeyPair, KeySigner, loadTrust, signArtifact, verifyArtifact, type TrustPolicy } from "../../signing/index.js";
import { aegis, expectOneErrorLine } from "../cli/run.js";
import { NetnsLab } from "../harness/netns.js";
import { startRegistry, type RegistryServer } from "../harness/registry.js";
import { signKeyless, TestFulcio, TestRekor, trustedRoot, type Identity, type KeylessOptions } from "../harness/sigstore.js";

const ISSUER = "https://token.actions.githubusercontent.com";
const RELEASE: Identity = {
  issuer: ISSUER,
  subject: "https://github.com/acme/policies/.github/workflows/release.yml@refs/tags/v1.2.0",
  repository: "https://github.com/acme/policies",
  ref: "refs/tags/v1.2.0",
};

let registry: RegistryServer;
let work: string;
let counter = 0;
const fulcio = new TestFulcio();
const rekor = new TestRekor();
const otherFulcio = new TestFulcio("another fulcio");
const otherRekor = new TestRekor();
const ci = generateKeyPair("ecdsa-p256");
const lab = new NetnsLab();

beforeAll(async () => {
  registry = await startRegistry();
  work = mkdtempSync(join(tmpdir(), "aegis-keyless-"));
  writeFileSync(join(work, "trusted_root.json"), JSON.stringify(trustedRoot({ fulcio: [fulcio], rekor: [rekor] })));
  writeFileSync(join(work, "other_root.json"), JSON.stringify(trustedRoot({ fulcio: [otherFulcio], rekor: [rekor] })));
  writeFileSync(join(work, "ct_root.json"), JSON.stringify(trustedRoot({ fulcio: [fulcio], rekor: [rekor], ctlogs: [otherRekor] })));
  writeFileSync(join(work, "ci.pub"), ci.publicKey);
});
afterAll(async () => {
  await Promise.all([registry?.stop(), lab.destroy()]);
  rmSync(work, { recursive: true, force: true });
});

/** A trust file in the work dir; returns its path. */
function trustFile(name: string, lines: string[]): string {
  const path = join(work, name);
  writeFileSync(path, `${lines.join("\n")}\n`);
  return path;
}

const RELEASE_POLICY = [
  "identities:",
  "  - name: release",
  `    issuer: ${ISSUER}`,
  '    subject: "^https://github.com/acme/policies/.github/workflows/release.yml@refs/tags/v.*$"',
  "    repository: https://github.com/acme/policies",
  '    workflowRef: "^refs/tags/v.*$"',
];

async function policyTrust(root = "trusted_root.json", extra: string[] = []): Promise<TrustPolicy> {
  return loadTrust([trustFile(`trust-${counter++}.yaml`, [...RELEASE_POLICY, `trustedRoot: ${root}`, ...extra])]);
}

async function pushPolicy(target: Target): Promise<Descriptor> {
  const { bytes, policy } = await buildBundle("policies/block-icmp-8888");
  const versioned = { ...policy, version: `2.0.${counter++}` };
  return (await pushBundle(bytes, versioned, target, versioned.version)).manifest;
}

/** A fresh artifact in its own repository, signed keylessly with `options` (defaults: the release identity, the trusted CA and log). */
async function keylessSigned(repoName: string, options: Partial<KeylessOptions> = {}): Promise<{ repo: RemoteRepository; subject: Descriptor; ref: string }> {
  const repo = new RemoteRepository(registry.host, repoName);
  const subject = await pushPolicy(repo);
  await signKeyless(repo, subject, { fulcio, rekor, identity: RELEASE, ...options });
  return { repo, subject, ref: `${registry.host}/${repoName}@${subject.digest}` };
}

describe("keyless signatures verify offline by identity", () => {
  it("accepts a keyless signature whose identity, chain and log entry verify", async () => {
    const { repo, subject } = await keylessSigned("keyless/ok");
    const verified = await verifyArtifact(repo, subject.digest, await policyTrust());
    expect(verified, "keyless signature by the release workflow").toMatchObject({
      digest: subject.digest,
      format: "sigstore-bundle",
      kind: "keyless",
      key: { name: "release" },
      identity: { issuer: ISSUER, subject: RELEASE.subject },
    });
  });

  it("the CLI verifies it in a network namespace with no route (no network at all)", async () => {
    const { ref } = await keylessSigned("keyless/offline");
    const layout = join(work, "offline-layout");
    expect((await aegis(["copy", "-r", ref, `oci:${layout}:v1`])).code).toBe(0);
    const trust = trustFile("offline.yaml", [...RELEASE_POLICY, "trustedRoot: trusted_root.json"]);
    const ns = await lab.namespace("keyless");
    expect((await ns.exec("ip", "route")).stdout.trim(), "the namespace has no route").toBe("");
    const { stdout } = await ns.exec(process.execPath, join(process.cwd(), "dist/cli/aegis.cjs"), "verify", `oci:${layout}:v1`, "--trust", trust, "--json");
    expect(JSON.parse(stdout), "verified offline").toMatchObject({ kind: "keyless", identity: { subject: RELEASE.subject } });
  });

  it("pull --trust and copy --trust run the same check", async () => {
    const { ref } = await keylessSigned("keyless/pull");
    const trust = trustFile("pull.yaml", [...RELEASE_POLICY, "trustedRoot: trusted_root.json"]);
    const pulled = await aegis(["pull", ref, "-o", join(work, "pulled"), "--trust", trust]);
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(pulled.stdout).toMatch(/signature verified \(keyless identity "release" \(https:\/\/github.com\/acme\/policies\//);
    const { ref: other } = await keylessSigned("keyless/pull-other", { identity: { ...RELEASE, issuer: "https://gitlab.com" } });
    expect(expectOneErrorLine(await aegis(["copy", other, `oci:${join(work, "refused-copy")}:v1`, "--trust", trust]))).toMatch(/issuer "https:\/\/gitlab.com" is not/);
  });

  const refusals: [string, Partial<KeylessOptions>, string, string, RegExp][] = [
    ["another subject", { identity: { ...RELEASE, subject: "https://github.com/acme/policies/.github/workflows/ci.yml@refs/heads/main" } }, "trusted_root.json", "IDENTITY_MISMATCH", /subject "https:\/\/github.com\/acme\/policies\/.github\/workflows\/ci.yml@refs\/heads\/main" does not match/],
    ["another issuer", { identity: { ...RELEASE, issuer: "https://gitlab.com" } }, "trusted_root.json", "IDENTITY_MISMATCH", /issuer "https:\/\/gitlab.com" is not "https:\/\/token.actions/],
    ["another repository (extension)", { identity: { ...RELEASE, repository: "https://github.com/mallory/policies" } }, "trusted_root.json", "IDENTITY_MISMATCH", /repository "https:\/\/github.com\/mallory\/policies" is not/],
    [
      "a certificate outside its validity at the log time",
      { issuedAt: new Date(Date.now() - 3_600_000), loggedAt: new Date(Date.now() - 3_600_000 + 20 * 60_000) },
      "trusted_root.json",
      "CERTIFICATE_NOT_VALID",
      /certificate is valid from .* to .*, not at the log entry's signed time/,
    ],
    ["a log entry signed by an unknown key", { rekor: otherRekor }, "trusted_root.json", "LOG_ENTRY_UNTRUSTED", /signed entry timestamp does not verify with a transparency log key/],
    [
      "a tampered inclusion proof",
      { tamper: (b) => void (b.verificationMaterial.tlogEntries[0]!.inclusionProof.hashes[0] = Buffer.alloc(32, 7).toString("base64")) },
      "trusted_root.json",
      "INCLUSION_PROOF_INVALID",
      /inclusion proof does not verify: calculated root hash does not match/,
    ],
    [
      "a log entry without a signed entry timestamp (its time is not authenticated)",
      { tamper: (b) => void delete (b.verificationMaterial.tlogEntries[0] as Partial<(typeof b.verificationMaterial.tlogEntries)[0]>).inclusionPromise },
      "trusted_root.json",
      "TIMESTAMP_INVALID",
      /no verified timestamp/,
    ],
    ["a root that does not hold the CA", {}, "other_root.json", "UNTRUSTED_CHAIN", /does not chain to a certificate authority of the trusted root .*other_root.json/],
    ["a root listing CT logs, and a certificate with no SCT", {}, "ct_root.json", "MISSING_SCT", /no SCT/],
    [
      "a log entry about another signature",
      { tamper: (b) => void (b.dsseEnvelope.signatures[0]!.sig = Buffer.from(b.dsseEnvelope.signatures[0]!.sig, "base64").reverse().toString("base64")) },
      "trusted_root.json",
      "LOG_ENTRY_MISMATCH",
      /not about this signature/,
    ],
  ];

  it.each(refusals)("refuses %s", async (what, options, root, code, message) => {
    const { repo, subject } = await keylessSigned(`keyless/refuse-${counter++}`, options);
    await expect(verifyArtifact(repo, subject.digest, await policyTrust(root)), what).rejects.toMatchObject({ code, message: expect.stringMatching(message) });
  });

  it("refuses a keyless signature when only keys are trusted", async () => {
    const { repo, subject } = await keylessSigned("keyless/keys-only");
    await expect(verifyArtifact(repo, subject.digest, await loadTrust([join(work, "ci.pub")]))).rejects.toMatchObject({ code: "KEYLESS_NOT_TRUSTED" });
  });

  it("a trust file with identities but no trustedRoot, or a root by tag, is refused when loaded", async () => {
    await expect(loadTrust([trustFile("no-root.yaml", RELEASE_POLICY)])).rejects.toThrow(/identities need a trustedRoot/);
    await expect(loadTrust([trustFile("tag-root.yaml", [...RELEASE_POLICY, `trustedRoot: ${registry.host}/roots:latest`])])).rejects.toThrow(/must name a digest/);
    await expect(loadTrust([trustFile("bad-re.yaml", ["identities:", "  - issuer: x", '    subject: "^(unclosed$"', "trustedRoot: trusted_root.json"])])).rejects.toThrow(/not a valid regular expression/);
  });
});

describe("key and keyless signatures from the same registry; a policy can require one or both", () => {
  it("any, key, keyless and both", async () => {
    const repo = new RemoteRepository(registry.host, "keyless/mixed");
    const both = await pushPolicy(repo);
    await signKeyless(repo, both, { fulcio, rekor, identity: RELEASE });
    await signArtifact(repo, both, new KeySigner(createPrivateKey(ci.privateKey)), repo.name);
    const keyOnly = await pushPolicy(repo);
    await signArtifact(repo, keyOnly, new KeySigner(createPrivateKey(ci.privateKey)), repo.name);
    const keylessOnly = await pushPolicy(repo);
    await signKeyless(repo, keylessOnly, { fulcio, rekor, identity: RELEASE });

    const trust = async (require: string) =>
      loadTrust([trustFile(`req-${require}.yaml`, ["keys:", "  - name: ci", "    key: ci.pub", ...RELEASE_POLICY, "trustedRoot: trusted_root.json", `require: ${require}`])]);
    for (const require of ["any", "key", "keyless", "both"]) {
      const policy = await trust(require);
      const ok = async (subject: Descriptor) => verifyArtifact(repo, subject.digest, policy).then((v) => v.kind, (err: { code: string }) => err.code);
      const expected = {
        any: ["keyless", "key", "keyless"],
        key: ["key", "key", "REQUIREMENT_NOT_MET"],
        keyless: ["keyless", "REQUIREMENT_NOT_MET", "keyless"],
        both: ["keyless", "REQUIREMENT_NOT_MET", "REQUIREMENT_NOT_MET"],
      }[require]!;
      expect([await ok(both), await ok(keyOnly), await ok(keylessOnly)], `require: ${require} on [both, key only, keyless only]`).toEqual(expected);
    }
  });
});

describe("aegis verify --explain", () => {
  it("names the failed check of each refusal, and why a signature was accepted", async () => {
    const cases: [Partial<KeylessOptions>, string, string][] = [
      [{ identity: { ...RELEASE, subject: "https://github.com/acme/policies/.github/workflows/ci.yml@refs/heads/main" } }, "identity", "IDENTITY_MISMATCH"],
      [{ issuedAt: new Date(Date.now() - 3_600_000), loggedAt: new Date(Date.now() - 3_600_000 + 20 * 60_000) }, "chain", "CERTIFICATE_NOT_VALID"],
      [{ rekor: otherRekor }, "log", "LOG_ENTRY_UNTRUSTED"],
      [{ tamper: (b) => void (b.verificationMaterial.tlogEntries[0]!.inclusionProof.hashes[0] = Buffer.alloc(32, 7).toString("base64")) }, "log", "INCLUSION_PROOF_INVALID"],
    ];
    const trust = trustFile("explain.yaml", ["keys:", "  - name: ci", "    key: ci.pub", ...RELEASE_POLICY, "trustedRoot: trusted_root.json"]);
    const repo = new RemoteRepository(registry.host, "keyless/explain");
    const subject = await pushPolicy(repo);
    for (const [options] of cases) await signKeyless(repo, subject, { fulcio, rekor, identity: RELEASE, ...options });
    // A key signature by a stranger, and one by a trusted key over another artifact's statement.
    const stranger = generateKeyPair("ecdsa-p256");
    await signArtifact(repo, subject, new KeySigner(createPrivateKey(stranger.privateKey)), repo.name);

    const ref = `${registry.host}/keyless/explain@${subject.digest}`;
    const refused = await aegis(["verify", ref, "--trust", trust, "--explain", "--json"]);
    expect(refused.code, refused.stderr).not.toBe(0);
    const explained = JSON.parse(refused.stdout) as { verified: boolean; signatures: { kind: string; accepted: boolean; check?: string; code?: string; reason: string }[] };
    expect(explained.verified).toBe(false);
    const seen = explained.signatures.map((s) => `${s.kind} ${s.check} ${s.code}`).sort();
    expect(seen, "one verdict per signature, each naming its check").toEqual(
      [...cases.map(([, check, code]) => `keyless ${check} ${code}`), "key key UNTRUSTED_KEY"].sort(),
    );

    const text = await aegis(["verify", ref, "--trust", trust, "--explain"]);
    expect(text.code).not.toBe(0);
    for (const [, check, code] of cases) expect(text.stdout, `the text names ${check}/${code}`).toMatch(new RegExp(`refused\\s+keyless\\s+${check}: .*\\[${code}\\]`));
    expect(text.stderr).toMatch(/^aegis: error: /);

    // Now a good keyless signature too: accepted, and the refusals still listed.
    await signKeyless(repo, subject, { fulcio, rekor, identity: RELEASE });
    const ok = await aegis(["verify", ref, "--trust", trust, "--explain"]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/accepted\s+keyless\s+signed by identity "release" \(issuer https:\/\/token.actions.githubusercontent.com, subject https:\/\/github.com\/acme\/policies\/.*\); the statement names sha256:/);
    expect(ok.stdout.match(/refused/g)?.length).toBe(cases.length + 1);

    const library = await explainArtifact(repo, subject.digest, await loadTrust([trust]));
    expect(library.signatures.filter((s) => s.accepted)).toHaveLength(1);
  });

  it("without --explain, a refusal is one error line with its reason", async () => {
    const { ref } = await keylessSigned("keyless/cli-refusal", { rekor: otherRekor });
    const trust = trustFile("cli.yaml", [...RELEASE_POLICY, "trustedRoot: trusted_root.json"]);
    expect(expectOneErrorLine(await aegis(["verify", ref, "--trust", trust]))).toMatch(/signed entry timestamp does not verify/);
  });
});
