// The bundle format: reproducible builds, strict validation that names the
// field and the file, and a tar reader that refuses unsafe content.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, describe, expect, it } from "vitest";
import { BundleError, buildBundle, decodeBundle, packArtifact, readPolicyManifest, readTar, writeTar } from "../../bundle/index.js";
import { loadPolicy } from "../../policy/index.js";
import { compress } from "../../bundle/zstd.js";
import { descriptorFor, EMPTY_CONFIG, encodeJson, MediaType, MemoryTarget, sha256 } from "../../registry/index.js";
import { pushBundle } from "../../bundle/index.js";

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function policyDir(yaml: string): string {
  const dir = mkdtempSync(join(tmpdir(), "aegis-policy-"));
  dirs.push(dir);
  writeFileSync(join(dir, "policy.yaml"), yaml);
  return dir;
}

const VALID = `name: t
version: 1.0.0
program: aegis_net
rules:
  - { action: drop, dst: 10.1.2.3/8, protocol: tcp, ports: "1000-2000" }
`;

describe("reproducible bundles", () => {
  it("the same policy built twice gives the same bytes, and pushed twice the same manifest digest", async () => {
    const first = await buildBundle("policies/deny-egress-cidrs");
    const second = await buildBundle("policies/deny-egress-cidrs");
    expect(first.bytes.equals(second.bytes)).toBe(true);
    const store = new MemoryTarget();
    const a = await pushBundle(first.bytes, first.policy, store, "a");
    const b = await pushBundle(second.bytes, second.policy, store, "b");
    expect(a.manifest.digest).toBe(b.manifest.digest);
    expect((await store.resolve("a")).digest).toBe((await store.resolve("b")).digest);
    // A different policy gives a different bundle.
    const other = await buildBundle("policies/block-icmp-8888");
    expect(sha256(other.bytes)).not.toBe(sha256(first.bytes));
  });

  it("holds policy.json and program.o, sorted, with fixed owner, mode and mtime", async () => {
    const { bytes, policy } = await buildBundle("policies/block-icmp-8888");
    const decoded = await decodeBundle(Readable.from([bytes]), "test");
    expect(decoded.policy).toEqual(policy);
    expect(Buffer.from(decoded.program.subarray(0, 4)).toString("latin1")).toBe("\x7fELF");
    const { decompress } = await import("../../bundle/zstd.js");
    const tar = await decompress(Readable.from([bytes]), 1 << 26);
    const names = readTar(tar).map((e) => e.name);
    expect(names).toEqual(["policy.json", "program.o"]);
    const header = tar.subarray(0, 512);
    expect(header.subarray(100, 107).toString()).toBe("0000644");
    expect(header.subarray(136, 147).toString()).toBe("00000000000");
  });

  it("annotates the manifest with the seed's metadata and no timestamp", async () => {
    const { bytes, policy } = await buildBundle("policies/block-icmp-8888");
    const { manifestBytes } = packArtifact(bytes, policy);
    const manifest = JSON.parse(manifestBytes.toString()) as { artifactType: string; annotations: Record<string, string> };
    expect(manifest.artifactType).toBe("application/vnd.aegis.policy.v1");
    expect(manifest.annotations).toMatchObject({
      "org.opencontainers.image.title": "block-icmp-8888",
      "dev.aegis.policy.type": "network_block",
      "dev.aegis.policy.target_ip": "8.8.8.8",
      "dev.aegis.policy.protocol": "icmp",
      "dev.aegis.policy.direction": "egress",
    });
    expect(manifest.annotations["org.opencontainers.image.created"]).toBeUndefined();
  });
});

describe("policy validation", () => {
  it("normalizes CIDRs and port ranges", async () => {
    const policy = await loadPolicy(policyDir(VALID));
    expect(policy.rules[0]).toEqual({ action: "drop", dst: "10.0.0.0/8", protocol: "tcp", ports: { from: 1000, to: 2000 } });
    expect(policy.attach).toEqual({ hook: "tc", direction: "egress" });
  });

  it.each([
    ["rules[0].dst", VALID.replace("10.1.2.3/8", "10.1.2.300/8"), /rules\[0\]\.dst: "10\.1\.2\.300\/8" is not an IPv4 or IPv6 CIDR/],
    ["rules[0].ports", VALID.replace('"1000-2000"', '"2000-1000"'), /rules\[0\]\.ports: "2000-1000" is not a port/],
    ["rules[0].ports with icmp", VALID.replace("tcp", "icmp"), /rules\[0\]\.ports: ports need protocol tcp or udp, not icmp/],
    ["rules[0].action", VALID.replace("drop", "reject"), /rules\[0\]\.action:/],
    ["an unknown field", VALID + "extra: 1\n", /extra/],
    ["version", VALID.replace("1.0.0", "one"), /version: a semantic version/],
    ["rules", VALID.replace(/rules:[\s\S]*/, "rules: []\n"), /rules: a policy needs at least one rule/],
    ["attach.direction", VALID + "attach: { hook: tc, direction: sideways }\n", /attach\.direction:/],
  ])("names the field and the file: %s", async (_name, yaml, message) => {
    const dir = policyDir(yaml);
    const err = (await loadPolicy(dir).catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(message);
    expect(err.message.startsWith(join(dir, "policy.yaml"))).toBe(true);
  });

  it("reports YAML syntax errors with the line", async () => {
    const dir = policyDir("name: t\nrules: [\n  - {action: drop\n");
    await expect(loadPolicy(dir)).rejects.toThrow(new RegExp(`^${join(dir, "policy.yaml")}:\\d+: invalid YAML`));
  });

  it("refuses an unknown eBPF program by name", async () => {
    await expect(buildBundle(policyDir(VALID.replace("aegis_net", "no_such_prog")))).rejects.toThrow(/unknown eBPF program "no_such_prog"/);
  });
});

describe("tar reader", () => {
  function rawEntry(name: string, type: string, data = Buffer.alloc(0)): Buffer {
    // Start from a valid header and patch the name and type, fixing the checksum.
    const tar = writeTar([{ name: "x", data }]);
    const header = Buffer.from(tar.subarray(0, 512));
    header.fill(0, 0, 100);
    header.write(name, 0, "utf8");
    header.write(type, 156);
    header.fill(" ", 148, 156);
    const sum = header.reduce((t, b) => t + b, 0);
    header.write(sum.toString(8).padStart(6, "0") + "\0 ", 148);
    return Buffer.concat([header, tar.subarray(512)]);
  }

  it.each([
    ["a symlink", rawEntry("link", "2"), /type '2'/],
    ["a hard link", rawEntry("link", "1"), /type '1'/],
    ["a parent path", rawEntry("../etc/passwd", "0"), /not a plain relative path/],
    ["an absolute path", rawEntry("/etc/passwd", "0"), /not a plain relative path/],
    ["a bad checksum", Buffer.concat([Buffer.from("garbage".padEnd(512, "x")), Buffer.alloc(1024)]), /checksum/],
  ])("refuses %s", (_name, tar, message) => {
    expect(() => readTar(tar)).toThrow(message);
    expect(() => readTar(tar)).toThrow(expect.objectContaining({ code: "INVALID_BUNDLE" }));
  });

  it("enforces size caps", () => {
    const tar = writeTar([{ name: "big", data: Buffer.alloc(4096) }]);
    expect(() => readTar(tar, { maxEntries: 10, maxEntrySize: 1024, maxTotalSize: 1 << 20 })).toThrow(/over the 1024-byte limit/);
    expect(() => readTar(tar, { maxEntries: 10, maxEntrySize: 1024, maxTotalSize: 1 << 20 })).toThrow(expect.objectContaining({ code: "BUNDLE_TOO_LARGE" }));
    expect(() => readTar(writeTar([{ name: "a", data: Buffer.alloc(1) }, { name: "b", data: Buffer.alloc(1) }]), { maxEntries: 1, maxEntrySize: 10, maxTotalSize: 10 })).toThrow(/more than 1 entries/);
  });

  it("stops decompressing at the cap (a zstd bomb)", async () => {
    const bomb = compress(Buffer.alloc(100 * 1024 * 1024));
    expect(bomb.byteLength).toBeLessThan(64 * 1024);
    await expect(decodeBundle(Readable.from([bomb]), "bomb")).rejects.toThrow(/decompresses to more than/);
    await expect(decodeBundle(Readable.from([bomb]), "bomb")).rejects.toMatchObject({ code: "BUNDLE_TOO_LARGE" });
  });
});

describe("bundle content errors are BundleErrors, not the caller's InputErrors", () => {
  const program = Buffer.from("\x7fELF");
  const policy = { name: "t", version: "1.0.0", program: "aegis_net", rules: [] };
  const bundleOf = (files: { name: string; data: Buffer }[]) => Readable.from([compress(writeTar(files))]);

  it.each([
    ["bytes that are not zstd", () => Readable.from([Buffer.from("not zstd at all")]), /not valid zstd/],
    ["a bundle without program.o", () => bundleOf([{ name: "policy.json", data: Buffer.from(JSON.stringify(policy)) }]), /has no program.o/],
    ["a bundle without policy.json", () => bundleOf([{ name: "program.o", data: program }]), /has no policy.json/],
    ["policy.json that is not JSON", () => bundleOf([{ name: "policy.json", data: Buffer.from("{") }, { name: "program.o", data: program }]), /not valid JSON/],
  ])("%s: INVALID_BUNDLE", async (_name, source, message) => {
    const err = await decodeBundle(source(), "registry").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BundleError);
    expect(err).toMatchObject({ code: "INVALID_BUNDLE", message: expect.stringMatching(message) });
  });

  it("a policy.json that fails validation: INVALID_BUNDLE, its cause still INVALID_POLICY", async () => {
    const bad = { ...policy, rules: [{ action: "explode" }] };
    const err = await decodeBundle(bundleOf([{ name: "policy.json", data: Buffer.from(JSON.stringify(bad)) }, { name: "program.o", data: program }]), "registry").catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "INVALID_BUNDLE", cause: { code: "INVALID_POLICY" } });
  });

  it("a manifest that is not a policy artifact: NOT_A_POLICY", async () => {
    const store = new MemoryTarget();
    const doc = { schemaVersion: 2, mediaType: MediaType.ImageManifest, artifactType: "application/vnd.other", config: EMPTY_CONFIG, layers: [] };
    const bytes = encodeJson(doc);
    const desc = descriptorFor(MediaType.ImageManifest, bytes);
    await store.push(desc, Readable.from([bytes]));
    await expect(readPolicyManifest(store, desc)).rejects.toMatchObject({ code: "NOT_A_POLICY" });
  });
});
