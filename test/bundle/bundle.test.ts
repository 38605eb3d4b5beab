// The bundle format: reproducible builds, strict validation that names the
// field and the file, and a tar reader that refuses unsafe content.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, describe, expect, it } from "vitest";
import { BundleError, buildBundle, decodeBundle, packArtifact, readBundlePolicy, readPolicyManifest, readTar, writeTar, type TarLimits } from "../../bundle/index.js";
import { loadPolicy } from "../../policy/index.js";
import { compress, inflate } from "../../bundle/zstd.js";
import { descriptorFor, EMPTY_CONFIG, encodeJson, MediaType, MemoryTarget, sha256, verifyStream } from "../../registry/index.js";
import { pushBundle } from "../../bundle/index.js";

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function policyDir(yaml: string): string {
  const dir = mkdtempSync(join(tmpdir(), "aegis-policy-"));
  dirs.push(dir);
  writeFileSync(join(dir, "policy.yaml"), yaml);
  return dir;
}

/** The members of a tar (bytes), read with the strict reader. */
async function members(tar: Buffer, limits?: TarLimits): Promise<{ name: string; data: Buffer }[]> {
  const out: { name: string; data: Buffer }[] = [];
  await readTar(
    Readable.from([tar]),
    async ({ name }, data) => {
      const chunks: Buffer[] = [];
      for await (const chunk of data) chunks.push(chunk);
      out.push({ name, data: Buffer.concat(chunks) });
    },
    limits,
  );
  return out;
}

async function untar(bundle: Buffer): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of inflate(Readable.from([bundle]))) chunks.push(chunk);
  return Buffer.concat(chunks);
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

  it("holds policy.json and program.o, sorted, every header field fixed", async () => {
    const { bytes, policy } = await buildBundle("policies/block-icmp-8888");
    const decoded = await decodeBundle(Readable.from([bytes]), "test");
    expect(decoded.policy).toEqual(policy);
    expect(Buffer.from(decoded.program.subarray(0, 4)).toString("latin1")).toBe("\x7fELF");
    const tar = await untar(bytes);
    expect((await members(tar)).map((e) => e.name)).toEqual(["policy.json", "program.o"]);
    let offset = 0;
    for (const { data } of await members(tar)) {
      const header = tar.subarray(offset, offset + 512);
      const field = (at: number, length: number) => header.subarray(at, at + length).toString("latin1");
      expect(field(100, 8), "mode").toBe("000644 \0");
      expect(field(108, 8), "uid").toBe("000000 \0");
      expect(field(116, 8), "gid").toBe("000000 \0");
      expect(parseInt(field(124, 12), 8), "size").toBe(data.byteLength);
      expect(field(136, 12), "mtime").toBe("00000000000 ");
      expect(field(156, 1), "type").toBe("0");
      expect(field(157, 100), "linkname").toBe("\0".repeat(100));
      expect(field(257, 8), "magic and version").toBe("ustar\x0000");
      expect(field(265, 64), "uname and gname").toBe("\0".repeat(64));
      expect(field(329, 16), "devmajor and devminor").toBe("000000 \x00000000 \x00");
      expect(field(345, 167), "prefix and padding").toBe("\0".repeat(167));
      offset += 512 + Math.ceil(data.byteLength / 512) * 512;
    }
    expect(tar.subarray(offset).equals(Buffer.alloc(1024)), "the end-of-archive marker, and nothing after it").toBe(true);
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
    const { policy } = await loadPolicy(policyDir(VALID));
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
  /** A valid one-entry tar with its header patched (name, type, other bytes) and the checksum fixed. */
  async function rawEntry(name: string, type: string, data = Buffer.alloc(0), patch?: (header: Buffer) => void): Promise<Buffer> {
    const tar = await writeTar([{ name: "x", data }]);
    const header = Buffer.from(tar.subarray(0, 512));
    header.fill(0, 0, 100);
    header.write(name, 0, "utf8");
    header.write(type, 156);
    patch?.(header);
    header.fill(" ", 148, 156);
    const sum = header.reduce((t, b) => t + b, 0);
    header.write(sum.toString(8).padStart(6, "0") + "\0 ", 148);
    return Buffer.concat([header, tar.subarray(512)]);
  }

  it.each([
    ["a symlink", () => rawEntry("link", "2"), /"link" is a symlink; only regular files/],
    ["a hard link", () => rawEntry("link", "1"), /"link" is a link; only regular files/],
    ["a directory", () => rawEntry("dir", "5"), /"dir" is a directory/],
    ["a device", () => rawEntry("dev", "3"), /"dev" is a character-device/],
    ["a parent path", () => rawEntry("../etc/passwd", "0"), /not a plain relative path/],
    ["an absolute path", () => rawEntry("/etc/passwd", "0"), /not a plain relative path/],
    ["a name in the ustar prefix field", () => rawEntry("x", "0", Buffer.alloc(0), (h) => h.write("../..", 345)), /not a plain relative path/],
    ["a bad checksum", async () => Buffer.concat([Buffer.from("garbage".padEnd(512, "x")), Buffer.alloc(1024)]), /checksum does not match/],
    ["a pax extension header", async () => Buffer.concat([(await rawEntry("PaxHeader", "x", Buffer.from("19 path=policy.json\n"))).subarray(0, 1024), await writeTar([{ name: "x", data: Buffer.alloc(1) }])]), /not behind one plain ustar header/],
    ["a GNU long name", async () => Buffer.concat([(await rawEntry("././@LongLink", "L", Buffer.from("policy.json\0"))).subarray(0, 1024), await writeTar([{ name: "x", data: Buffer.alloc(1) }])]), /not behind one plain ustar header/],
    ["an entry after a zero block", async () => Buffer.concat([Buffer.alloc(512), await writeTar([{ name: "x", data: Buffer.alloc(1) }])]), /not behind one plain ustar header/],
    ["no end-of-archive marker", async () => (await writeTar([{ name: "x", data: Buffer.alloc(1) }])).subarray(0, 1024), /missing end-of-archive marker/],
    ["a cut-off entry", async () => (await writeTar([{ name: "x", data: Buffer.alloc(2000) }])).subarray(0, 1024), /cut off/],
    ["a duplicate entry", async () => { const one = await writeTar([{ name: "x", data: Buffer.alloc(1) }]); return Buffer.concat([one.subarray(0, 1024), one]); }, /"x" appears twice/],
  ])("refuses %s", async (_name, tar, message) => {
    const err = await members(await tar()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BundleError);
    expect(err).toMatchObject({ code: "INVALID_BUNDLE", message: expect.stringMatching(message) });
  });

  it("the writer refuses unsafe names and duplicates", async () => {
    await expect(writeTar([{ name: "../x", data: Buffer.alloc(1) }])).rejects.toThrow(/not a plain relative path/);
    await expect(writeTar([{ name: "a", data: Buffer.alloc(1) }, { name: "a", data: Buffer.alloc(2) }])).rejects.toThrow(/appears twice/);
  });

  it("enforces size caps before reading an entry's data", async () => {
    const tar = await writeTar([{ name: "big", data: Buffer.alloc(4096) }]);
    const small = { maxEntries: 10, maxEntrySize: 1024, maxTotalSize: 1 << 20 };
    await expect(members(tar, small)).rejects.toMatchObject({ code: "BUNDLE_TOO_LARGE", message: expect.stringMatching(/over the 1024-byte limit/) });
    const two = await writeTar([{ name: "a", data: Buffer.alloc(1) }, { name: "b", data: Buffer.alloc(1) }]);
    await expect(members(two, { maxEntries: 1, maxEntrySize: 10, maxTotalSize: 10 })).rejects.toThrow(/more than 1 entries/);
    await expect(members(two, { maxEntries: 5, maxEntrySize: 10, maxTotalSize: 1 })).rejects.toThrow(/content is over the 1-byte limit/);
  });

  it("names the bundle in what is wrong with its zstd or tar", async () => {
    await expect(decodeBundle(Readable.from([Buffer.from("not zstd at all")]), "policy.tar.zst"), "not zstd").rejects.toMatchObject({
      code: "INVALID_BUNDLE",
      message: expect.stringMatching(/^policy\.tar\.zst: bundle is not valid zstd: /) as string,
    });
    await expect(decodeBundle(Readable.from([compress(Buffer.alloc(1024, 1))]), "registry/x@sha256:00"), "not tar").rejects.toMatchObject({
      code: "INVALID_BUNDLE",
      message: expect.stringMatching(/^registry\/x@sha256:00: bundle is not a valid Aegis tar: /) as string,
    });
  });

  it("stops decompressing at the cap (a zstd bomb)", async () => {
    const bomb = compress(Buffer.alloc(100 * 1024 * 1024));
    expect(bomb.byteLength).toBeLessThan(64 * 1024);
    await expect(decodeBundle(Readable.from([bomb]), "bomb")).rejects.toThrow(/^bomb: bundle decompresses to more than/);
    await expect(decodeBundle(Readable.from([bomb]), "bomb")).rejects.toMatchObject({ code: "BUNDLE_TOO_LARGE" });
  });

  it("takes a bundle of several frames, and refuses more than 4,096 (each costs a native call, however small)", async () => {
    const { bytes } = await buildBundle("policies/block-icmp-8888");
    const empty = compress(Buffer.alloc(0));
    const framed = (n: number) => Buffer.concat([bytes, ...Array.from({ length: n }, () => empty)]);
    expect((await decodeBundle(Readable.from([framed(3)]), "four frames")).policy.name, "a bundle and 3 empty frames").toBe("block-icmp-8888");
    await expect(decodeBundle(Readable.from([framed(4096)]), "frames"), "a bundle and 4,096 empty frames").rejects.toMatchObject({
      code: "INVALID_BUNDLE",
      message: "frames: bundle is not valid zstd: more than 4096 frames",
    });
  });

  it("reports the source's failure rather than bad content: altered bytes are not the bundle", async () => {
    const { bytes } = await buildBundle("policies/block-icmp-8888");
    const desc = descriptorFor(MediaType.PolicyLayer, bytes);
    // The first bytes altered: zstd fails at once, but the digest check at the end is what is reported.
    const altered = Buffer.from(bytes);
    altered[0] = altered[0]! ^ 0xff;
    const err = await decodeBundle(verifyStream(desc, Readable.from([altered.subarray(0, 100), altered.subarray(100)]), "the registry"), "test").catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "DIGEST_MISMATCH" });
  });
});

describe("bundle content errors are BundleErrors, not the caller's InputErrors", () => {
  const program = Buffer.from("\x7fELF");
  const policy = { name: "t", version: "1.0.0", program: "aegis_net", rules: [] };
  const bundleOf = async (files: { name: string; data: Buffer }[]) => Readable.from([compress(await writeTar(files))]);

  it.each([
    ["bytes that are not zstd", async () => Readable.from([Buffer.from("not zstd at all")]), /not valid zstd/],
    ["a zstd frame cut off", async () => Readable.from([compress(await writeTar([{ name: "policy.json", data: Buffer.alloc(5000, "x") }])).subarray(0, 20)]), /ends in the middle of a frame/],
    ["a bundle without program.o", () => bundleOf([{ name: "policy.json", data: Buffer.from(JSON.stringify(policy)) }]), /has no program.o/],
    ["a bundle without policy.json", () => bundleOf([{ name: "program.o", data: program }]), /has no policy.json/],
    ["policy.json that is not JSON", () => bundleOf([{ name: "policy.json", data: Buffer.from("{") }, { name: "program.o", data: program }]), /not valid JSON/],
  ])("%s: INVALID_BUNDLE", async (_name, source, message) => {
    // Both readers: push's readBundlePolicy keeps the strict checks of decodeBundle.
    for (const read of [decodeBundle, readBundlePolicy]) {
      const err = await read(await source(), "registry").catch((e: unknown) => e);
      expect(err, read.name).toBeInstanceOf(BundleError);
      expect(err, read.name).toMatchObject({ code: "INVALID_BUNDLE", message: expect.stringMatching(message) });
    }
  });

  it("readBundlePolicy (push) gives the policy decodeBundle gives, reading the bundle to its end", async () => {
    const { bytes, policy: built } = await buildBundle("policies/block-icmp-8888");
    const source = Readable.from([bytes.subarray(0, 7), bytes.subarray(7)]);
    expect(await readBundlePolicy(source, "test")).toEqual(built);
    expect(source.readableEnded, "the source was read to its end").toBe(true);
  });

  it("a policy.json that fails validation: INVALID_BUNDLE, its cause still INVALID_POLICY", async () => {
    const bad = { ...policy, rules: [{ action: "explode" }] };
    const err = await decodeBundle(await bundleOf([{ name: "policy.json", data: Buffer.from(JSON.stringify(bad)) }, { name: "program.o", data: program }]), "registry").catch((e: unknown) => e);
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

  it("a policy manifest whose layers claim more than the bundle cap: BUNDLE_TOO_LARGE for every reader (sign, the assigner, the agent), before a layer is read", async () => {
    const store = new MemoryTarget();
    const layer = { mediaType: MediaType.PolicyLayer, digest: `sha256:${"a".repeat(64)}`, size: 2 ** 40 };
    const doc = { schemaVersion: 2, mediaType: MediaType.ImageManifest, artifactType: MediaType.PolicyArtifact, config: EMPTY_CONFIG, layers: [layer] };
    const bytes = encodeJson(doc);
    const desc = descriptorFor(MediaType.ImageManifest, bytes);
    await store.push(desc, Readable.from([bytes]));
    await expect(readPolicyManifest(store, desc)).rejects.toMatchObject({ code: "BUNDLE_TOO_LARGE", message: expect.stringContaining(`memory@${desc.digest}`) });
  });
});
