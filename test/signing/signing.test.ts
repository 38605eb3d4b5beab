// Signing and verification against real registry 2.8.2 (no referrers API:
// the tag-schema fallback), OCI layouts and a network namespace with no network.
import { bundleFromJSON, bundleToJSON } from "@sigstore/bundle";
import { DSSEBundleBuilder } from "@sigstore/sign";
import { execFile } from "node:child_process";
import { createPrivateKey } from "node:crypto";
import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pushBundle, buildBundle } from "../../bundle/index.js";
import {
  copy,
  descriptorFor,
  EMPTY_CONFIG,
  encodeJson,
  MAX_MANIFEST_SIZE,
  MediaType,
  OciLayoutTarget,
  readAll,
  RemoteRepository,
  storeEmptyConfig,
  type Descriptor,
  type Manifest,
  type Target,
} from "../../registry/index.js";
import {
  generateKeyPair,
  KeySigner,
  loadPrivateKey,
  loadTrust,
  parsePublicKey,
  signArtifact,
  SIGSTORE_BUNDLE_TYPE,
  storeSignatureBundle,
  trustedKey,
  verifyArtifact,
  writeKeyPair,
  type TrustPolicy,
} from "../../signing/index.js";
import { pushCosignSignature } from "../harness/cosign.js";
import { TestRekor } from "../harness/sigstore.js";
import { startRegistry, type RegistryServer } from "../harness/registry.js";
import { NetnsLab } from "../harness/netns.js";
import { aegis, expectOneErrorLine } from "../cli/run.js";

const execFileAsync = promisify(execFile);
let registry: RegistryServer;
let mirror: RegistryServer;
let work: string;
let artifactCounter = 0;
const lab = new NetnsLab();
const p256 = generateKeyPair("ecdsa-p256");
const ed25519 = generateKeyPair("ed25519");
const stranger = generateKeyPair("ecdsa-p256");

beforeAll(async () => {
  [registry, mirror] = await Promise.all([startRegistry(), startRegistry()]);
  work = mkdtempSync(join(tmpdir(), "aegis-sign-"));
});
afterAll(async () => {
  await Promise.all([registry?.stop(), mirror?.stop(), lab.destroy()]);
  rmSync(work, { recursive: true, force: true });
});

function trustOf(...pairs: { publicKey: string }[]): TrustPolicy {
  return { keys: pairs.map((pair, i) => trustedKey(`key${i}`, parsePublicKey(pair.publicKey, `key${i}`))) };
}

function signerOf(pair: { privateKey: string }): KeySigner {
  return new KeySigner(createPrivateKey(pair.privateKey));
}

/** Pushes a fresh policy artifact (a distinct tag per call) and returns its manifest descriptor. */
async function pushPolicy(target: Target): Promise<Descriptor> {
  const { bytes, policy } = await buildBundle("policies/block-icmp-8888");
  // A distinct version per call gives distinct manifests (and digests).
  const versioned = { ...policy, version: `1.0.${artifactCounter++}` };
  return (await pushBundle(bytes, versioned, target, versioned.version)).manifest;
}

async function readJson<T>(target: Target, desc: Descriptor): Promise<T> {
  return JSON.parse((await readAll(await target.fetch(desc), MAX_MANIFEST_SIZE, desc.digest)).toString("utf8")) as T;
}

/** Pushes a manifest with one layer (and the empty config) and returns its descriptor. */
async function pushManifest(target: Target, layerBytes: Buffer, layerType: string, extra: Partial<Manifest>, layerAnnotations?: Record<string, string>): Promise<Descriptor> {
  const layer = { ...descriptorFor(layerType, layerBytes), ...(layerAnnotations ? { annotations: layerAnnotations } : {}) };
  await storeEmptyConfig(target);
  await target.push(layer, Readable.from([layerBytes]));
  const bytes = encodeJson({ schemaVersion: 2, mediaType: MediaType.ImageManifest, config: EMPTY_CONFIG, layers: [layer], ...extra });
  const desc = descriptorFor(MediaType.ImageManifest, bytes);
  await target.push(desc, Readable.from([bytes]));
  return desc;
}

describe("sign and verify", () => {
  it.each([
    ["ECDSA P-256", p256],
    ["Ed25519", ed25519],
  ])("%s: a signature verifies, makes no connection but to the registry, and is a valid sigstore bundle", async (_name, pair) => {
    const repo = new RemoteRepository(registry.host, "sign/ok");
    const subject = await pushPolicy(repo);
    const hosts = new Set<string>();
    const onSocket = ({ socket }: { socket: Socket }) => socket.once("connect", () => hosts.add(`${socket.remoteAddress}:${socket.remotePort}`));
    subscribe("net.client.socket", onSocket as (message: unknown) => void);
    try {
      const signed = await signArtifact(repo, subject, signerOf(pair), repo.name);
      const verified = await verifyArtifact(new RemoteRepository(registry.host, "sign/ok"), subject.digest, trustOf(pair));
      expect(verified).toMatchObject({ digest: subject.digest, signature: signed.referrer.digest, format: "sigstore-bundle", key: { name: "key0" } });
    } finally {
      unsubscribe("net.client.socket", onSocket as (message: unknown) => void);
    }
    expect([...hosts].every((h) => h === registry.host)).toBe(true);

    // The stored bundle round-trips through @sigstore/bundle, the standard verifier's parser.
    const [referrer] = await repo.referrers(subject, SIGSTORE_BUNDLE_TYPE);
    const manifest = await readJson<Manifest>(repo, referrer!);
    expect(manifest).toMatchObject({ artifactType: SIGSTORE_BUNDLE_TYPE, subject: { digest: subject.digest }, annotations: { "dev.sigstore.bundle.content": "dsse-envelope" } });
    const json = await readJson<Record<string, unknown>>(repo, manifest.layers[0]!);
    expect(bundleToJSON(bundleFromJSON(json))).toEqual(json);
    expect(json.mediaType).toBe("application/vnd.dev.sigstore.bundle.v0.3+json");
  });

  it("a key-signed bundle that carries a transparency log entry (cosign sign --key logs to Rekor by default) verifies by its key alone", async () => {
    const repo = new RemoteRepository(registry.host, "sign/logged");
    const subject = await pushPolicy(repo);
    const statement = { _type: "https://in-toto.io/Statement/v1", subject: [{ name: repo.name, digest: { sha256: subject.digest.slice(7) } }], predicateType: "https://sigstore.dev/cosign/sign/v1", predicate: {} };
    const built = await new DSSEBundleBuilder({ signer: signerOf(p256), witnesses: [] }).create({ data: Buffer.from(JSON.stringify(statement)), type: "application/vnd.in-toto+json" });
    const bundle = bundleToJSON(built) as unknown as { verificationMaterial: Record<string, unknown> };
    // A log this verifier pins no key of: the entry is cosign's record, not something a pinned key needs.
    const body = Buffer.from(JSON.stringify({ apiVersion: "0.0.1", kind: "dsse", spec: { signatures: [{ verifier: Buffer.from(p256.publicKey).toString("base64") }] } }));
    bundle.verificationMaterial.tlogEntries = [new TestRekor().record(body, new Date())];
    await storeSignatureBundle(repo, subject, Buffer.from(JSON.stringify(bundle)));
    expect(await verifyArtifact(repo, subject.digest, trustOf(p256))).toMatchObject({ kind: "key", key: { name: "key0" } });
    await expect(verifyArtifact(repo, subject.digest, trustOf(stranger)), "another key still refused").rejects.toMatchObject({ code: "UNTRUSTED_KEY" });
  });

  it("works with no network at all: keygen, push --sign-key and verify in a network namespace with no route", async () => {
    const ns = await lab.namespace("offline");
    const { stdout: routes } = await ns.exec("ip", "route");
    expect(routes.trim()).toBe("");
    const inNs = (...args: string[]) =>
      execFileAsync("ip", ["netns", "exec", ns.name, process.execPath, join(process.cwd(), "dist/cli/aegis.cjs"), ...args], { cwd: work });
    for (const algorithm of ["p256", "ed25519"]) {
      await inNs("keygen", "-o", join(work, `offline-${algorithm}`), ...(algorithm === "ed25519" ? ["--ed25519"] : []));
      const layout = `oci:${join(work, `offline-layout-${algorithm}`)}`;
      const { stdout: digest } = await inNs("push", join(process.cwd(), "policies/block-icmp-8888"), `${layout}:v1`, "--sign-key", join(work, `offline-${algorithm}.key`));
      const { stdout } = await inNs("verify", `${layout}@${digest.trim()}`, "--key", join(work, `offline-${algorithm}.pub`), "--json");
      expect(JSON.parse(stdout)).toMatchObject({ digest: digest.trim(), format: "sigstore-bundle" });
    }
  });
});

describe("rejections, each with its own reason", () => {
  it("a signature by an untrusted key", async () => {
    const repo = new RemoteRepository(registry.host, "reject/untrusted");
    const subject = await pushPolicy(repo);
    await signArtifact(repo, subject, signerOf(stranger), repo.name);
    await expect(verifyArtifact(repo, subject.digest, trustOf(p256))).rejects.toMatchObject({ code: "UNTRUSTED_KEY", message: expect.stringMatching(/signed by a key that is not trusted/) });
  });

  it("a bundle copied from another artifact (subject mismatch)", async () => {
    const repo = new RemoteRepository(registry.host, "reject/copied");
    const original = await pushPolicy(repo);
    const victim = await pushPolicy(repo);
    const signed = await signArtifact(repo, original, signerOf(p256), repo.name);
    // The same bundle, attached to the other artifact.
    const forged = await pushManifest(repo, signed.bundle, SIGSTORE_BUNDLE_TYPE, {
      artifactType: SIGSTORE_BUNDLE_TYPE,
      subject: { mediaType: victim.mediaType, digest: victim.digest, size: victim.size },
    });
    await repo.indexReferrer(victim, { ...forged, artifactType: SIGSTORE_BUNDLE_TYPE });
    await expect(verifyArtifact(repo, victim.digest, trustOf(p256))).rejects.toMatchObject({
      code: "SUBJECT_MISMATCH",
      message: expect.stringContaining(`signature is for "${original.digest}", not ${victim.digest}`),
    });
  });

  it("a genuine bundle in a signature manifest that holds more (a 2 MiB layer, a nested manifest, 17 MiB in all) is refused: what verifies is copied whole", async () => {
    const origin = new RemoteRepository(registry.host, "reject/stuffed-origin");
    const subject = await pushPolicy(origin);
    const signed = await signArtifact(origin, subject, signerOf(p256), origin.name);
    const bundleLayer = descriptorFor(SIGSTORE_BUNDLE_TYPE, signed.bundle);
    const big = Buffer.alloc(2 * 1024 * 1024, 7);
    const bigLayer = descriptorFor("application/octet-stream", big);
    const mib = Buffer.alloc(1024 * 1024, 8);
    const mibLayer = descriptorFor("application/octet-stream", mib);
    const cases: [string, Descriptor[], RegExp][] = [
      ["a 2 MiB layer", [bundleLayer, bigLayer], /holds more than a signature: a blob of 2097152 bytes \(at most 1048576\)/],
      ["a nested manifest", [bundleLayer, subject], /holds more than a signature: a manifest \(sha256:/],
      ["17 MiB in all", [bundleLayer, ...Array<Descriptor>(17).fill(mibLayer)], /holds more than a signature: blobs of \d+ bytes in all \(at most 16777216\)/],
    ];
    for (const [i, [what, layers, reason]] of cases.entries()) {
      // Each in a repository of its own, holding the artifact and this signature only.
      const repo = new RemoteRepository(registry.host, `reject/stuffed-${i}`);
      await copy(origin, subject.digest, repo);
      await storeEmptyConfig(repo);
      await repo.push(bundleLayer, Readable.from([signed.bundle]));
      await repo.push(bigLayer, Readable.from([big]));
      await repo.push(mibLayer, Readable.from([mib]));
      // Registry 2.8.2 takes a manifest as a layer only once its bytes are a blob there too.
      await repo.push({ ...subject, mediaType: "application/octet-stream" }, await origin.fetch(subject));
      const bytes = encodeJson({ schemaVersion: 2, mediaType: MediaType.ImageManifest, artifactType: SIGSTORE_BUNDLE_TYPE, config: EMPTY_CONFIG, layers, subject });
      const stuffed = descriptorFor(MediaType.ImageManifest, bytes);
      await repo.push(stuffed, Readable.from([bytes]));
      await repo.indexReferrer(subject, { ...stuffed, artifactType: SIGSTORE_BUNDLE_TYPE });
      await expect(verifyArtifact(repo, subject.digest, trustOf(p256)), what).rejects.toMatchObject({ code: "INVALID_BUNDLE", message: expect.stringMatching(reason) as string });
    }
  });

  it("a modified payload", async () => {
    const repo = new RemoteRepository(registry.host, "reject/modified");
    const subject = await pushPolicy(repo);
    const signed = await signArtifact(repo, subject, signerOf(p256), repo.name);
    const json = JSON.parse(signed.bundle.toString()) as { dsseEnvelope: { payload: string } };
    const statement = JSON.parse(Buffer.from(json.dsseEnvelope.payload, "base64").toString()) as { predicate: unknown };
    statement.predicate = { "injected": true };
    json.dsseEnvelope.payload = Buffer.from(JSON.stringify(statement)).toString("base64");
    const other = await pushPolicy(repo);
    const tampered = await pushManifest(repo, Buffer.from(JSON.stringify(json)), SIGSTORE_BUNDLE_TYPE, {
      artifactType: SIGSTORE_BUNDLE_TYPE,
      subject: { mediaType: other.mediaType, digest: other.digest, size: other.size },
    });
    await repo.indexReferrer(other, { ...tampered, artifactType: SIGSTORE_BUNDLE_TYPE });
    await expect(verifyArtifact(repo, other.digest, trustOf(p256))).rejects.toMatchObject({
      code: "INVALID_SIGNATURE",
      message: expect.stringMatching(/signature does not verify: the signed payload was modified/),
    });
  });

  it("an authentic signature over the wrong kind of statement", async () => {
    const repo = new RemoteRepository(registry.host, "reject/predicate");
    const subject = await pushPolicy(repo);
    // Signed by a trusted key, naming the right digest, but an attestation rather than a signing statement.
    const statement = { _type: "https://in-toto.io/Statement/v1", subject: [{ name: repo.name, digest: { sha256: subject.digest.slice(7) } }], predicateType: "https://slsa.dev/provenance/v1", predicate: {} };
    const bundle = await new DSSEBundleBuilder({ signer: signerOf(p256), witnesses: [] }).create({ data: Buffer.from(JSON.stringify(statement)), type: "application/vnd.in-toto+json" });
    const referrer = await pushManifest(repo, Buffer.from(JSON.stringify(bundleToJSON(bundle))), SIGSTORE_BUNDLE_TYPE, {
      artifactType: SIGSTORE_BUNDLE_TYPE,
      subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    });
    await repo.indexReferrer(subject, { ...referrer, artifactType: SIGSTORE_BUNDLE_TYPE });
    await expect(verifyArtifact(repo, subject.digest, trustOf(p256))).rejects.toMatchObject({
      code: "WRONG_PAYLOAD",
      message: expect.stringContaining('signed predicate type is "https://slsa.dev/provenance/v1"'),
    });
  });

  it("a key outside its validity window (trust file)", async () => {
    const repo = new RemoteRepository(registry.host, "reject/expired");
    const subject = await pushPolicy(repo);
    await signArtifact(repo, subject, signerOf(p256), repo.name);
    writeFileSync(join(work, "ci.pub"), p256.publicKey);
    writeFileSync(join(work, "expired.yaml"), "keys:\n  - name: ci-2025\n    key: ci.pub\n    validFrom: 2025-01-01T00:00:00Z\n    validUntil: 2026-01-01T00:00:00Z\n");
    writeFileSync(join(work, "current.yaml"), "keys:\n  - name: ci-now\n    key: ci.pub\n    validFrom: 2026-01-01T00:00:00Z\n");
    writeFileSync(join(work, "future.yaml"), "keys:\n  - name: ci-2099\n    key: ci.pub\n    validFrom: 2099-01-01T00:00:00Z\n");
    await expect(verifyArtifact(repo, subject.digest, await loadTrust([join(work, "expired.yaml")]))).rejects.toMatchObject({
      code: "KEY_NOT_VALID",
      message: expect.stringMatching(/key "ci-2025" expired at 2026-01-01T00:00:00.000Z/),
    });
    expect((await verifyArtifact(repo, subject.digest, await loadTrust([join(work, "current.yaml")]))).key.name).toBe("ci-now");
    await expect(verifyArtifact(repo, subject.digest, await loadTrust([join(work, "future.yaml")]))).rejects.toMatchObject({
      code: "KEY_NOT_VALID",
      message: expect.stringMatching(/key "ci-2099" is not valid before 2099-01-01T00:00:00.000Z/),
    });
  });

  it("a malformed signature beside a good one does not hide the good one", async () => {
    const repo = new RemoteRepository(registry.host, "reject/hostile");
    const subject = await pushPolicy(repo);
    // A bundle that parses, with a certificate that is garbage, listed before the good one.
    const statement = { _type: "https://in-toto.io/Statement/v1", subject: [{ digest: { sha256: subject.digest.slice(7) } }], predicateType: "https://sigstore.dev/cosign/sign/v1", predicate: {} };
    const built = await new DSSEBundleBuilder({ signer: signerOf(stranger), witnesses: [] }).create({ data: Buffer.from(JSON.stringify(statement)), type: "application/vnd.in-toto+json" });
    const json = bundleToJSON(built) as unknown as Record<string, unknown>;
    json.verificationMaterial = { certificate: { rawBytes: Buffer.from("garbage").toString("base64") }, tlogEntries: [], timestampVerificationData: {} };
    const hostile = await pushManifest(repo, Buffer.from(JSON.stringify(json)), SIGSTORE_BUNDLE_TYPE, {
      artifactType: SIGSTORE_BUNDLE_TYPE,
      subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    });
    await repo.indexReferrer(subject, { ...hostile, artifactType: SIGSTORE_BUNDLE_TYPE });
    const good = await signArtifact(repo, subject, signerOf(p256), repo.name);
    expect((await repo.referrers(subject)).map((r) => r.digest)).toEqual([hostile.digest, good.referrer.digest]);
    expect((await verifyArtifact(repo, subject.digest, trustOf(p256))).signature).toBe(good.referrer.digest);
    // Alone, it is refused with a reason, not a crash.
    await expect(verifyArtifact(repo, subject.digest, trustOf(stranger))).rejects.toMatchObject({ code: "NO_VALID_SIGNATURE" });
  });

  it("an artifact with no signature", async () => {
    const repo = new RemoteRepository(registry.host, "reject/unsigned");
    const subject = await pushPolicy(repo);
    await expect(verifyArtifact(repo, subject.digest, trustOf(p256))).rejects.toMatchObject({ code: "NO_SIGNATURE", message: expect.stringMatching(/has no signature/) });
  });

  it("the CLI prints each reason as one line and exits non-zero", async () => {
    const ref = `${registry.host}/reject/cli`;
    const { stdout } = await aegis(["push", "policies/block-icmp-8888", `${ref}:v1`]);
    writeFileSync(join(work, "stranger.pub"), stranger.publicKey);
    expect(expectOneErrorLine(await aegis(["verify", `${ref}@${stdout.trim()}`, "--key", join(work, "stranger.pub")]))).toMatch(/has no signature/);
    expect(expectOneErrorLine(await aegis(["verify", `${ref}:v1`]))).toMatch(/no trusted keys given/);
    expect(expectOneErrorLine(await aegis(["sign", `${ref}:v1`, "--key", "/no/such.key"]))).toMatch(/\/no\/such\.key: cannot read key file/);
  });
});

describe("cosign legacy signatures (tag sha256-<hex>.sig)", () => {
  it("verifies with the right key and fails with a wrong one", async () => {
    const repo = new RemoteRepository(registry.host, "legacy/cosign");
    const subject = await pushPolicy(repo);
    const sig = await pushCosignSignature(repo, subject, createPrivateKey(p256.privateKey), repo.name);
    expect(await verifyArtifact(repo, subject.digest, trustOf(stranger, p256))).toMatchObject({ format: "cosign-legacy", signature: sig.digest, key: { name: "key1" } });
    await expect(verifyArtifact(repo, subject.digest, trustOf(stranger))).rejects.toMatchObject({ code: "UNTRUSTED_KEY", message: expect.stringMatching(/cosign signature made by a key that is not trusted/) });
  });
});

describe("signatures travel", () => {
  it("copy -r to another registry and to an OCI layout; verify both copies", async () => {
    writeFileSync(join(work, "travel.key"), p256.privateKey);
    writeFileSync(join(work, "travel.pub"), p256.publicKey);
    const src = `${registry.host}/travel/icmp`;
    const { stdout } = await aegis(["push", "policies/deny-egress-cidrs", `${src}:v1`, "--sign-key", join(work, "travel.key")]);
    const digest = stdout.trim();
    const layout = `oci:${join(work, "travel-layout")}`;
    for (const dst of [`${mirror.host}/airgap/icmp`, layout]) {
      const copied = await aegis(["copy", "-r", `${src}@${digest}`, `${dst}:v1`]);
      expect(copied.code, copied.stderr).toBe(0);
      const verified = await aegis(["verify", `${dst}@${digest}`, "--key", join(work, "travel.pub"), "--json"]);
      expect(verified.code, verified.stderr).toBe(0);
      expect(JSON.parse(verified.stdout)).toMatchObject({ digest, format: "sigstore-bundle" });
    }
    // Without -r the mirror has the artifact but no signature.
    await aegis(["copy", `${src}@${digest}`, `${mirror.host}/airgap/unsigned:v1`]);
    expect(expectOneErrorLine(await aegis(["verify", `${mirror.host}/airgap/unsigned@${digest}`, "--key", join(work, "travel.pub")]))).toMatch(/has no signature/);
  });
});

describe("concurrent signers", () => {
  it("10 signers at once on one artifact (fallback index, read-modify-write) keep all 10 signatures", async () => {
    const ref = `${registry.host}/concurrent/icmp`;
    const { stdout } = await aegis(["push", "policies/block-icmp-8888", `${ref}:v1`]);
    const digest = stdout.trim();
    const keys = Array.from({ length: 10 }, (_, i) => {
      const pair = generateKeyPair(i % 2 ? "ed25519" : "ecdsa-p256");
      writeFileSync(join(work, `c${i}.key`), pair.privateKey);
      return pair;
    });
    const results = await Promise.all(keys.map((_, i) => aegis(["sign", `${ref}@${digest}`, "--key", join(work, `c${i}.key`), "--json"])));
    for (const r of results) expect(r.code, r.stderr).toBe(0);
    const repo = new RemoteRepository(registry.host, "concurrent/icmp");
    const subject = await repo.resolve(digest);
    const referrers = await repo.referrers(subject, SIGSTORE_BUNDLE_TYPE);
    expect(new Set(referrers.map((r) => r.digest))).toEqual(new Set(results.map((r) => JSON.parse(r.stdout).signature as string)));
    expect(referrers).toHaveLength(10);
    // Each key's signature verifies on its own.
    for (const pair of keys) expect((await verifyArtifact(repo, digest, trustOf(pair))).digest).toBe(digest);
  });
});

describe("keys", () => {
  it("keygen writes a 0600 PKCS#8 key and an SPKI public key, encrypted on request, and never overwrites", async () => {
    const prefix = join(work, "enc");
    const generated = await aegis(["keygen", "-o", prefix, "--encrypt", "--json"], { AEGIS_KEY_PASSPHRASE: "correct horse" });
    expect(generated.code, generated.stderr).toBe(0);
    expect(statSync(`${prefix}.key`).mode & 0o777).toBe(0o600);
    expect(readFileSync(`${prefix}.key`, "utf8")).toContain("BEGIN ENCRYPTED PRIVATE KEY");
    expect(readFileSync(`${prefix}.pub`, "utf8")).toContain("BEGIN PUBLIC KEY");
    await expect(loadPrivateKey(`${prefix}.key`)).rejects.toThrow(/the key is encrypted: set AEGIS_KEY_PASSPHRASE/);
    await expect(loadPrivateKey(`${prefix}.key`, "wrong")).rejects.toThrow(/wrong passphrase/);
    expect((await loadPrivateKey(`${prefix}.key`, "correct horse")).asymmetricKeyType).toBe("ec");
    expect(expectOneErrorLine(await aegis(["keygen", "-o", prefix]))).toMatch(/enc\.key: file exists/);
    await expect(writeKeyPair(prefix, generateKeyPair())).rejects.toThrow(/file exists/);
  });

  it("keygen leaves no half pair: an existing .pub writes no .key, and a .pub the disk has no room for takes its .key with it", async () => {
    const half = join(work, "half");
    writeFileSync(`${half}.pub`, "");
    expect(expectOneErrorLine(await aegis(["keygen", "-o", half])), "names the file that is in the way").toBe(`aegis: error: cannot write ${half}.pub: file exists`);
    expect(statSync(`${half}.key`, { throwIfNoEntry: false }), "no .key beside the old .pub").toBeUndefined();

    // A tmpfs of one 4 KiB page: the .key fills it, the .pub finds no room.
    const full = mkdtempSync(join(work, "full-"));
    await execFileAsync("mount", ["-t", "tmpfs", "-o", "size=4k", "tmpfs", full]);
    try {
      const line = expectOneErrorLine(await aegis(["keygen", "-o", join(full, "ci")]));
      expect(line).toBe(`aegis: error: cannot write ${join(full, "ci")}.pub: no space left on the device (no key pair written)`);
      expect(readdirSync(full), "the .key written first is removed again").toEqual([]);
    } finally {
      await execFileAsync("umount", [full]);
    }
  });

  it("the copy of a signed artifact in an OCI layout verifies through the library too", async () => {
    const repo = new RemoteRepository(registry.host, "keys/layout");
    const subject = await pushPolicy(repo);
    await signArtifact(repo, subject, signerOf(ed25519), repo.name);
    const layout = new OciLayoutTarget(join(work, "lib-layout"));
    await copy(repo, subject.digest, layout, undefined, { referrers: true });
    expect((await verifyArtifact(layout, subject.digest, trustOf(ed25519))).format).toBe("sigstore-bundle");
  });
});
