// The trust root as a signed, versioned OCI artifact (issue 12, acceptance
// 2): `aegis trust push` against registry 2.8.2; the operator signature is
// required (unsigned and other-key roots refused), a mirror carries the root
// with its signature, a trust file can pin it by digest, and the agent's
// follower refuses a root older than the one it holds, across restarts too.
import { createPrivateKey } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TrustRootFollower } from "../../agent/index.js";
import { buildBundle, pushBundle } from "../../bundle/index.js";
import { copy, MemoryTarget, RemoteRepository } from "../../registry/index.js";
import {
  fetchTrustRoot,
  generateKeyPair,
  KeySigner,
  loadTrust,
  parsePublicKey,
  pushTrustRoot,
  trustedKey,
  trustedRootFetcher,
  verifyArtifact,
  type TrustPolicy,
} from "../../signing/index.js";
import { aegis, expectOneErrorLine } from "../cli/run.js";
import { startRegistry, type RegistryServer } from "../harness/registry.js";
import { signKeyless, TestFulcio, TestRekor, trustedRoot } from "../harness/sigstore.js";
import { startSilentPort } from "../harness/tcp-server.js";

let registry: RegistryServer;
let mirror: RegistryServer;
let work: string;
const operator = generateKeyPair("ecdsa-p256");
const stranger = generateKeyPair("ecdsa-p256");
const fulcio = new TestFulcio();
const rekor = new TestRekor();
const ISSUER = "https://token.actions.githubusercontent.com";
const SUBJECT = "https://github.com/acme/policies/.github/workflows/release.yml@refs/tags/v1.0.0";
const operatorTrust: TrustPolicy = { keys: [trustedKey("operator", parsePublicKey(operator.publicKey, "operator"))] };
const rootBytes = Buffer.from(JSON.stringify(trustedRoot({ fulcio: [fulcio], rekor: [rekor] })));

beforeAll(async () => {
  [registry, mirror] = await Promise.all([startRegistry(), startRegistry()]);
  work = mkdtempSync(join(tmpdir(), "aegis-trust-root-"));
  writeFileSync(join(work, "operator.key"), operator.privateKey, { mode: 0o600 });
  writeFileSync(join(work, "operator.pub"), operator.publicKey);
  writeFileSync(join(work, "trusted_root.json"), rootBytes);
  writeFileSync(join(work, "policy.yaml"), ["identities:", "  - name: release", `    issuer: ${ISSUER}`, '    subject: "^https://github.com/acme/policies/.github/workflows/release.yml@refs/tags/v.*$"', ""].join("\n"));
});
afterAll(async () => {
  await Promise.all([registry?.stop(), mirror?.stop()]);
  rmSync(work, { recursive: true, force: true });
});

const signer = (pair: { privateKey: string }) => new KeySigner(createPrivateKey(pair.privateKey));

async function pushRoot(repoName: string, version: number, tag = "current", by = operator) {
  const repo = new RemoteRepository(registry.host, repoName);
  const pushed = await pushTrustRoot(repo, rootBytes, { version, tag, signer: signer(by), policy: { identities: [{ name: "release", issuer: ISSUER, subject: SUBJECT }] } });
  return { repo, digest: pushed.manifest.digest };
}

function follower(stateDir: string, reference: string, mirrors: string[] = [], recheck?: { everyMs: number; timeoutMs: number }, more: { pullTimeoutMs?: number; everyMs?: number } = {}) {
  const lines: string[] = [];
  const f = new TrustRootFollower({ reference, operator: operatorTrust, stateDir, mirrors, log: (line) => lines.push(line), ...(recheck ? { recheck } : {}), ...more });
  return { f, lines };
}

/** `work`, or a rejection naming `what` once `ms` have passed without it settling (a registry that never answers, no deadline). */
async function within<T>(ms: number, what: string, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms / 1000} s`)), ms)));
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}

describe("aegis trust push", () => {
  it("stores the root as a versioned artifact signed by the operator key, with the policy shipped beside it", async () => {
    const ref = `${registry.host}/trust/cli:current`;
    const { code, stdout, stderr } = await aegis(["trust", "push", join(work, "trusted_root.json"), ref, "--key", join(work, "operator.key"), "--policy", join(work, "policy.yaml"), "--root-version", "7", "--json"]);
    expect(code, stderr).toBe(0);
    const out = JSON.parse(stdout) as { digest: string; version: number };
    expect(out.version).toBe(7);
    const repo = new RemoteRepository(registry.host, "trust/cli");
    expect((await repo.resolve("current")).digest, "the tag names the pushed root").toBe(out.digest);
    const artifact = await fetchTrustRoot(repo, out.digest, operatorTrust);
    expect(artifact, "operator-signed root accepted").toMatchObject({ digest: out.digest, version: 7, signature: { key: { name: "operator" } } });
    expect(artifact.rootBytes.equals(rootBytes)).toBe(true);
    expect(artifact.policy?.identities?.map((i) => i.name)).toEqual(["release"]);
  });

  it("refuses a file that is not a trusted root, or no file, before pushing anything", async () => {
    writeFileSync(join(work, "not-a-root.json"), JSON.stringify({ hello: "world" }));
    const ref = `${registry.host}/trust/bad:current`;
    expect(expectOneErrorLine(await aegis(["trust", "push", join(work, "not-a-root.json"), ref, "--key", join(work, "operator.key")]))).toMatch(/not a Sigstore trusted root/);
    const missing = await aegis(["trust", "push", join(work, "no-such-root.json"), ref, "--key", join(work, "operator.key"), "--json"]);
    expect(JSON.parse(missing.stdout), "a missing file: the code every command gives one").toMatchObject({ code: "FILE_NOT_FOUND" });
    await expect(new RemoteRepository(registry.host, "trust/bad").resolve("current")).rejects.toMatchObject({ code: expect.stringMatching(/NOT_FOUND|MANIFEST_UNKNOWN|NAME_UNKNOWN/) });
  });
});

describe("the trust root is verified as an artifact", () => {
  it("refuses an unsigned root and one signed by another key, each with its reason", async () => {
    const { repo, digest } = await pushRoot("trust/unsigned", 1);
    const unsigned = new MemoryTarget("unsigned");
    await copy(repo, digest, unsigned, undefined, { referrers: false });
    await expect(fetchTrustRoot(unsigned, digest, operatorTrust), "unsigned root").rejects.toMatchObject({ code: "NO_SIGNATURE" });
    const other = await pushRoot("trust/stranger", 1, "current", stranger);
    await expect(fetchTrustRoot(other.repo, other.digest, operatorTrust), "root signed by another key").rejects.toMatchObject({ code: "UNTRUSTED_KEY" });
  });

  it("a stopping agent cancels the read: a stopped signal rejects with its reason, a live one reads the root", async () => {
    const { repo, digest } = await pushRoot("trust/cancel", 1);
    await expect(fetchTrustRoot(repo, digest, operatorTrust, { signal: AbortSignal.abort(new Error("agent stopping")) })).rejects.toThrow("agent stopping");
    expect(await fetchTrustRoot(repo, digest, operatorTrust, { signal: new AbortController().signal }), "with a live signal").toMatchObject({ digest, version: 1 });
  });

  it("a policy artifact is not a trust root, even signed by the operator", async () => {
    const repo = new RemoteRepository(registry.host, "trust/not-root");
    const { bytes, policy } = await buildBundle("policies/block-icmp-8888");
    const { manifest } = await pushBundle(bytes, policy, repo, "v1");
    const { signArtifact } = await import("../../signing/index.js");
    await signArtifact(repo, manifest, signer(operator), repo.name);
    await expect(fetchTrustRoot(repo, manifest.digest, operatorTrust)).rejects.toMatchObject({ code: "TRUST_ROOT_INVALID", message: expect.stringMatching(/not a trust root artifact/) });
  });

  it("a mirror carries it with its signature (copy -r), and a trust file can pin it by digest", async () => {
    const { digest } = await pushRoot("trust/mirrored", 3);
    const copied = await aegis(["copy", "-r", `${registry.host}/trust/mirrored@${digest}`, `${mirror.host}/trust/mirrored:current`]);
    expect(copied.code, copied.stderr).toBe(0);
    const artifact = await fetchTrustRoot(new RemoteRepository(mirror.host, "trust/mirrored"), digest, operatorTrust);
    expect(artifact, "verified from the mirror").toMatchObject({ digest, version: 3 });

    // Keyless verification with the root named by digest in a trust file.
    const repo = new RemoteRepository(registry.host, "trust/keyless-policy");
    const { bytes, policy } = await buildBundle("policies/block-icmp-8888");
    const { manifest } = await pushBundle(bytes, policy, repo, "v1");
    await signKeyless(repo, manifest, { fulcio, rekor, identity: { issuer: ISSUER, subject: SUBJECT } });
    const trustPath = join(work, "by-digest.yaml");
    writeFileSync(trustPath, readFileSync(join(work, "policy.yaml"), "utf8") + `trustedRoot: ${mirror.host}/trust/mirrored@${digest}\n`);
    const trust = await loadTrust([trustPath], { fetchTrustedRoot: trustedRootFetcher() });
    expect(trust.trustedRoot?.source).toBe(`${mirror.host}/trust/mirrored@${digest}`);
    expect(await verifyArtifact(repo, manifest.digest, trust)).toMatchObject({ kind: "keyless", identity: { subject: SUBJECT } });
    const cli = await aegis(["verify", `${registry.host}/trust/keyless-policy@${manifest.digest}`, "--trust", trustPath, "--json"]);
    expect(cli.code, cli.stderr).toBe(0);
    // Every command that takes --trust reads the root from the registry: a mirror's export and its import too.
    const capsule = join(work, "keyless.capsule.tar");
    const exported = await aegis(["mirror", "export", `${registry.host}/trust/keyless-policy@${manifest.digest}`, "-o", capsule, "--trust", trustPath]);
    expect(exported.code, `mirror export: ${exported.stderr}`).toBe(0);
    const imported = await aegis(["mirror", "import", capsule, `${mirror.host}/trust/keyless-policy`, "--trust", trustPath]);
    expect(imported.code, `mirror import: ${imported.stderr}`).toBe(0);
  });
});

describe("the agent follows the trust root", () => {
  it("takes a newer root, refuses an older one than it holds (also after a restart), and prefers the mirror", async () => {
    const stateDir = mkdtempSync(join(work, "state-"));
    const v1 = await pushRoot("trust/follow", 1);
    const reference = `${registry.host}/trust/follow:current`;
    const first = follower(stateDir, reference);
    await first.f.init();
    expect((await first.f.refresh()).version, "first root taken").toBe(1);
    const v2 = await pushRoot("trust/follow", 2);
    expect((await first.f.refresh()).digest, "newer root taken").toBe(v2.digest);
    expect(JSON.parse(readFileSync(join(stateDir, "trust-root.json"), "utf8"))).toMatchObject({ digest: v2.digest, version: 2 });

    // The tag moved back to version 1: refused, version 2 stays in force.
    await v1.repo.tag(await v1.repo.resolve(v1.digest), "current");
    expect((await first.f.refresh()).digest, "rollback refused").toBe(v2.digest);
    expect(first.lines.join("\n")).toMatch(/\[TRUST_ROOT_ROLLBACK\] .*version 1.* is older than the one held .*version 2/);

    // A restarted agent holds version 2 from its state dir and refuses version 1 too.
    const restarted = follower(stateDir, reference);
    await restarted.f.init();
    expect((await restarted.f.refresh()).digest, "rollback refused after a restart").toBe(v2.digest);
    expect(restarted.lines.join("\n")).toMatch(/TRUST_ROOT_ROLLBACK/);

    // Same version, other content: refused as well.
    await pushRoot("trust/follow", 2);
    expect((await restarted.f.refresh()).digest).toBe(v2.digest);
    expect(restarted.lines.join("\n")).toMatch(/the same version as, but other content than/);

    // Version 3 through a mirror that has it; the origin is never needed.
    const v3 = await pushRoot("trust/follow", 3);
    expect((await aegis(["copy", "-r", `${registry.host}/trust/follow@${v3.digest}`, `${mirror.host}/trust/follow:current`])).code).toBe(0);
    const viaMirror = follower(stateDir, `127.0.0.1:1/trust/follow:current`, [`${mirror.host}/trust/follow`]);
    await viaMirror.f.init();
    expect((await viaMirror.f.refresh()).digest, "taken from the mirror").toBe(v3.digest);
    expect(viaMirror.lines.join("\n")).toContain(`from ${mirror.host}/trust/follow:current`);
    // An origin that takes connections and never answers (an air-gapped site's firewall): past the mirror serving the root held,
    // it is asked at most every recheck.everyMs, within recheck.timeoutMs, and its silence is no news.
    const silent = await startSilentPort();
    try {
      const origin = `${silent.host}/trust/follow:current`;
      const gapped = follower(stateDir, origin, [`${mirror.host}/trust/follow`], { everyMs: 60_000, timeoutMs: 300 });
      await gapped.f.init();
      const started = Date.now();
      expect((await gapped.f.refresh()).digest, "held, as the mirror serves it").toBe(v3.digest);
      const asked = silent.dials();
      expect(asked, "connections to the origin").toBeGreaterThanOrEqual(1);
      expect((await gapped.f.refresh()).digest).toBe(v3.digest);
      expect(silent.dials(), "not asked again within everyMs").toBe(asked);
      expect(Date.now() - started, "ms for both refreshes (the origin's deadline is 300 ms; the client's own is 120 s)").toBeLessThan(10_000);
      expect(gapped.lines.filter((l) => l.startsWith("trust root not updated")), gapped.lines.join("\n")).toEqual([]);
    } finally {
      await silent.close();
    }

    // A mirror that lags (still at version 3) does not hide version 4 at the reference.
    const v4 = await pushRoot("trust/follow", 4);
    const lagging = follower(stateDir, reference, [`${mirror.host}/trust/follow`]);
    await lagging.f.init();
    expect((await lagging.f.refresh()).digest, "taken from the reference past a lagging mirror").toBe(v4.digest);
    expect(lagging.lines.join("\n")).toContain(`version 4 from ${reference}`);
  });

  it("a registry that takes connections and never answers costs a source its deadline, and passes look for a newer root at most every everyMs", async () => {
    const stateDir = mkdtempSync(join(work, "state-"));
    const silent = await startSilentPort();
    try {
      const origin = `${silent.host}/trust/blackholed:current`;
      // No root held, no mirror: the pull timeout is the source's deadline (the registry client's own is 120 s).
      const none = follower(stateDir, origin, [], undefined, { pullTimeoutMs: 300 });
      await none.f.init();
      await expect(within(20_000, "no root held: refresh", none.f.refresh()), "no root held: none can be had").rejects.toMatchObject({ code: "UNAVAILABLE", message: expect.stringMatching(/did not resolve current in time: no answer within 300 ms/) });
      // A root held (from the registry), no mirror: resolving the tag is given recheck.timeoutMs, and the root held stays.
      const { digest } = await pushRoot("trust/blackholed", 1);
      const first = follower(stateDir, `${registry.host}/trust/blackholed:current`);
      await first.f.init();
      expect((await first.f.refresh()).digest, "a root held").toBe(digest);
      const held = follower(stateDir, origin, [], { everyMs: 60_000, timeoutMs: 300 }, { everyMs: 60_000 });
      await held.f.init();
      expect((await within(20_000, "a root held: refresh", held.f.refresh())).digest, "a root held: it stays in force").toBe(digest);
      expect(held.lines.filter((l) => l.startsWith("trust root not updated")), held.lines.join("\n")).toEqual([expect.stringMatching(/^trust root not updated: \[TIMEOUT\] .*did not resolve current in time: no answer within 300 ms; version 1 stays in force$/)]);
      // A pass's trust(): the first looks for a newer root (a dial), those within everyMs use the root held.
      const before = silent.dials();
      await within(20_000, "the first pass's trust", held.f.trust({ keys: [] }));
      expect(silent.dials(), "the first pass looks for a newer root").toBeGreaterThan(before);
      const looked = silent.dials();
      await held.f.trust({ keys: [] });
      expect(silent.dials(), "a pass within everyMs does not").toBe(looked);
    } finally {
      await silent.close();
    }
  });

  it("the root's identities and a local --trust without a root of its own verify together", async () => {
    const stateDir = mkdtempSync(join(work, "state-"));
    const bare = new RemoteRepository(registry.host, "trust/bare");
    const pushed = await pushTrustRoot(bare, rootBytes, { version: 1, tag: "current", signer: signer(operator) });
    const local = await loadTrust([join(work, "policy.yaml")], { rootSupplied: true });
    expect(local.trustedRoot, "the local file names no root").toBeUndefined();
    const { f } = follower(stateDir, `${registry.host}/trust/bare@${pushed.manifest.digest}`);
    await f.init();
    const trust = await f.trust(local);
    const repo = new RemoteRepository(registry.host, "trust/local-identities");
    const { bytes, policy } = await buildBundle("policies/block-icmp-8888");
    const { manifest } = await pushBundle(bytes, policy, repo, "v1");
    await signKeyless(repo, manifest, { fulcio, rekor, identity: { issuer: ISSUER, subject: SUBJECT } });
    expect(await verifyArtifact(repo, manifest.digest, trust)).toMatchObject({ kind: "keyless", key: { name: "release" } });
    await expect(loadTrust([join(work, "policy.yaml")]), "without a supplied root the file is refused").rejects.toThrow(/identities need a trustedRoot/);
  });

  it("a held file that cannot be read is logged and set aside, the version it names still binding; a new --trust-root-ref is told, and versions must still increase", async () => {
    const stateDir = mkdtempSync(join(work, "state-"));
    const file = join(stateDir, "trust-root.json");
    await pushRoot("trust/reread", 3);
    const reference = `${registry.host}/trust/reread:current`;
    // Its root bytes damaged, its version readable: a root must still pass it.
    writeFileSync(file, JSON.stringify({ reference, digest: "sha256:00", version: 5, root: "bm90IGEgcm9vdA==" }));
    const damaged = follower(stateDir, reference);
    await damaged.f.init();
    expect(damaged.lines.join("\n")).toContain(`trust root held in ${file} is unreadable, set aside as ${file}.bad`);
    expect(damaged.lines.join("\n")).toContain("a root must still be newer than version 5");
    expect(readFileSync(`${file}.bad`, "utf8"), "set aside").toContain('"version":5');
    await expect(damaged.f.refresh(), "version 3 after a held version 5").rejects.toMatchObject({ code: "UNAVAILABLE", message: expect.stringContaining("is not newer than version 5") as string });
    // A restart: the floor is read from the file set aside.
    const restarted = follower(stateDir, reference);
    await restarted.f.init();
    expect(restarted.lines.join("\n"), "said at the start").toContain(`${file}.bad, set aside earlier, names version 5`);
    await expect(restarted.f.refresh(), "version 3 after a restart").rejects.toMatchObject({ code: "UNAVAILABLE", message: expect.stringContaining("is not newer than version 5") as string });

    // A damaged file naming the very root the reference serves: that root is taken again.
    const v3 = (await new RemoteRepository(registry.host, "trust/reread").resolve("current")).digest;
    writeFileSync(file, JSON.stringify({ reference, digest: v3, version: 3, root: "bm90IGEgcm9vdA==" }));
    const same = follower(stateDir, reference);
    await same.f.init();
    expect((await same.f.refresh()).digest, "the root the damaged file named").toBe(v3);
    expect(existsSync(`${file}.bad`), "the file set aside, once a root is held again").toBe(false);
    rmSync(file);

    // Not even JSON: no version is known, and a root is fetched as on a first run.
    writeFileSync(file, "{ not json");
    const first = follower(stateDir, reference);
    await first.f.init();
    expect(first.lines.join("\n")).toContain("no version is known, so any root the operator key signs is taken");
    expect((await first.f.refresh()).version, "fetched as on a first run").toBe(3);

    await pushRoot("trust/moved", 2);
    const moved = follower(stateDir, `${registry.host}/trust/moved:current`);
    await moved.f.init();
    expect(moved.lines.join("\n")).toContain(`trust root held was followed from ${reference}, now ${registry.host}/trust/moved:current: a root from it must still be newer than version 3`);
    expect((await moved.f.refresh()).version, "version 2 at the new reference is refused").toBe(3);
  });

  it("refuses a root not signed by the operator key and holds none", async () => {
    const stateDir = mkdtempSync(join(work, "state-"));
    await pushRoot("trust/follow-stranger", 1, "current", stranger);
    const { f } = follower(stateDir, `${registry.host}/trust/follow-stranger:current`);
    await f.init();
    await expect(f.refresh()).rejects.toMatchObject({ code: "UNAVAILABLE", message: expect.stringMatching(/signed by a key that is not trusted/) });
  });
});
