// The CLI against registries that lie or attack, and `pull`/`copy` with
// pinned keys: a signature is checked when --key/--trust ask for it and the
// output says what was checked; a corrupt blob in a layout is repaired;
// credentials without their host are refused; an index is not pulled.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { descriptorFor, EMPTY_CONFIG, encodeJson, MediaType, MemoryTarget, type Descriptor } from "../../registry/index.js";
import { generateKeyPair } from "../../signing/index.js";
import { startHostileRegistry, type HostileRegistry } from "../harness/hostile-registry.js";
import { startRegistry, type RegistryServer } from "../harness/registry.js";
import { aegis, expectOneErrorLine } from "./run.js";

let registry: RegistryServer;
let work: string;
let env: NodeJS.ProcessEnv;
let signed: string;
let unsigned: string;

beforeAll(async () => {
  registry = await startRegistry();
  work = mkdtempSync(join(tmpdir(), "aegis-cli-hostile-"));
  mkdirSync(join(work, "docker"));
  env = { AEGIS_CACHE_DIR: join(work, "cache"), DOCKER_CONFIG: join(work, "docker") };
  const ci = generateKeyPair("ecdsa-p256");
  writeFileSync(join(work, "ci-2026.key"), ci.privateKey);
  writeFileSync(join(work, "ci-2026.pub"), ci.publicKey);
  writeFileSync(join(work, "stranger.pub"), generateKeyPair("ecdsa-p256").publicKey);
  const push = await aegis(["push", "policies/block-icmp-8888", `${registry.host}/trust/icmp:signed`, "--sign-key", join(work, "ci-2026.key")], env);
  expect(push.code, push.stderr).toBe(0);
  signed = push.stdout.trim();
  const plain = await aegis(["push", "policies/deny-egress-cidrs", `${registry.host}/trust/cidrs:unsigned`], env);
  expect(plain.code, plain.stderr).toBe(0);
  unsigned = plain.stdout.trim();
});
afterAll(async () => {
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

describe("pull and copy with pinned keys", () => {
  it("pull --key: verified and said so; without keys the output says the signature was not checked", async () => {
    const out = join(work, "pull-key");
    const pulled = await aegis(["pull", `${registry.host}/trust/icmp:signed`, "-o", out, "--key", join(work, "ci-2026.pub")], env);
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(pulled.stdout).toContain("digest and size verified; signature verified (key ci-2026.pub)");
    expect(existsSync(join(out, "policy.json")), "policy.json written").toBe(true);
    const json = await aegis(["pull", `${registry.host}/trust/icmp@${signed}`, "-o", out, "--key", join(work, "ci-2026.pub"), "--json"], env);
    expect(JSON.parse(json.stdout), json.stderr).toMatchObject({ digest: signed, verified: { digest: true, signature: { key: "ci-2026.pub", format: "sigstore-bundle" } } });
    const none = await aegis(["pull", `${registry.host}/trust/icmp:signed`, "-o", join(work, "pull-none")], env);
    expect(none.stdout, none.stderr).toContain("digest and size verified; signature not checked (no --key/--trust)");
    const noneJson = await aegis(["pull", `${registry.host}/trust/icmp:signed`, "-o", join(work, "pull-none"), "--json"], env);
    expect(JSON.parse(noneJson.stdout)).toMatchObject({ verified: { digest: true, signature: null } });
  });

  it("pull --key with a key that did not sign it, or of an unsigned artifact: one error line, nothing written", async () => {
    for (const [name, ref, key] of [
      ["signed by another key", `${registry.host}/trust/icmp:signed`, "stranger.pub"],
      ["unsigned", `${registry.host}/trust/cidrs:unsigned`, "ci-2026.pub"],
    ] as const) {
      const out = join(work, `pull-refused-${key}`);
      const cache = join(work, `cache-refused-${key}`);
      const line = expectOneErrorLine(await aegis(["pull", ref, "-o", out, "--key", join(work, key)], { ...env, AEGIS_CACHE_DIR: cache }));
      expect(line, name).toMatch(/not trusted|no signature/);
      expect(existsSync(out), `${name}: output directory created`).toBe(false);
      expect(existsSync(cache), `${name}: cache written`).toBe(false);
    }
  });

  it("copy --trust verifies at the source first; a failed check copies nothing", async () => {
    writeFileSync(join(work, "trust.yaml"), `keys:\n  - name: ci-2026\n    key: ci-2026.pub\n`);
    const good = await aegis(["copy", `${registry.host}/trust/icmp:signed`, `oci:${join(work, "copy-ok")}`, "--trust", join(work, "trust.yaml"), "--json"], env);
    expect(good.code, good.stderr).toBe(0);
    expect(JSON.parse(good.stdout)).toMatchObject({ digest: signed, verified: { digest: true, signature: { key: "ci-2026" } } });
    const human = await aegis(["copy", `${registry.host}/trust/icmp:signed`, `oci:${join(work, "copy-ok")}`, "--key", join(work, "ci-2026.pub")], env);
    expect(human.stdout, human.stderr).toContain("signature verified (key ci-2026.pub)");
    const dst = join(work, "copy-refused");
    const line = expectOneErrorLine(await aegis(["copy", `${registry.host}/trust/cidrs:unsigned`, `oci:${dst}`, "--key", join(work, "ci-2026.pub")], env));
    expect(line).toMatch(new RegExp(`${unsigned}.*has no signature`));
    expect(existsSync(dst), "destination written").toBe(false);
  });
});

describe("a blob of the right size but wrong bytes in a layout", () => {
  it("is re-fetched by the next pull, and repaired by copy into the layout", async () => {
    const cache = join(work, "cache-corrupt");
    const first = await aegis(["pull", `${registry.host}/trust/icmp@${signed}`, "-o", join(work, "corrupt-1"), "--json"], { ...env, AEGIS_CACHE_DIR: cache });
    expect(first.code, first.stderr).toBe(0);
    const layer = join(cache, "blobs", "sha256", (JSON.parse(first.stdout) as { checksum: string }).checksum.slice("sha256:".length));
    const corrupt = () => writeFileSync(layer, Buffer.alloc(readFileSync(layer).byteLength, 0x41));
    corrupt();
    const again = await aegis(["pull", `${registry.host}/trust/icmp@${signed}`, "-o", join(work, "corrupt-2")], { ...env, AEGIS_CACHE_DIR: cache });
    expect(again.code, `pull over a corrupt cache: ${again.stderr}`).toBe(0);
    corrupt();
    const copied = await aegis(["copy", `${registry.host}/trust/icmp@${signed}`, `oci:${cache}:v1`], env);
    expect(copied.code, copied.stderr).toBe(0);
    const fromLayout = await aegis(["pull", `oci:${cache}:v1`, "-o", join(work, "corrupt-3")], env);
    expect(fromLayout.code, `pull from the layout copy said it repaired: ${fromLayout.stderr}`).toBe(0);
  });
});

describe("hostile registries", () => {
  let hostile: HostileRegistry;
  let index: Descriptor;

  beforeAll(async () => {
    const store = new MemoryTarget();
    await store.push(EMPTY_CONFIG, Readable.from([Buffer.from("{}")]));
    const children: Descriptor[] = [];
    for (let i = 0; i < 200; i++) {
      const bytes = encodeJson({ schemaVersion: 2, mediaType: MediaType.ImageManifest, config: EMPTY_CONFIG, layers: [], annotations: { n: String(i) } });
      const desc = descriptorFor(MediaType.ImageManifest, bytes);
      await store.push(desc, Readable.from([bytes]));
      children.push(desc);
    }
    const bytes = encodeJson({ schemaVersion: 2, mediaType: MediaType.ImageIndex, manifests: children });
    index = descriptorFor(MediaType.ImageIndex, bytes);
    await store.push(index, Readable.from([bytes]));
    await store.tag(index, "wide");
    hostile = await startHostileRegistry({ store, basicAuth: true });
  });
  afterAll(async () => {
    await hostile?.stop();
  });

  it("AEGIS_REGISTRY_USERNAME without AEGIS_REGISTRY_HOST is refused, naming the missing setting; nothing is sent", async () => {
    const line = expectOneErrorLine(await aegis(["inspect", `${hostile.host}/any/thing:wide`], { ...env, AEGIS_REGISTRY_USERNAME: "ci", AEGIS_REGISTRY_PASSWORD: "secret" }));
    expect(line).toMatch(/AEGIS_REGISTRY_HOST is not/);
    const other = await aegis(["inspect", `${hostile.host}/any/thing:wide`], { ...env, AEGIS_REGISTRY_HOST: "registry.example.com", AEGIS_REGISTRY_USERNAME: "ci", AEGIS_REGISTRY_PASSWORD: "secret" });
    expect(expectOneErrorLine(other)).toMatch(/requires credentials/);
    expect(hostile.authorizations, "credentials the hostile registry received").toEqual([]);
  });

  it("pull of an index with 200 children: NOT_A_POLICY from the root alone, nothing written", async () => {
    const own = { ...env, AEGIS_REGISTRY_HOST: hostile.host, AEGIS_REGISTRY_USERNAME: "u", AEGIS_REGISTRY_PASSWORD: "p" };
    const cache = join(work, "cache-wide");
    const out = join(work, "wide");
    const before = hostile.requests.length;
    const line = expectOneErrorLine(await aegis(["pull", `${hostile.host}/any/thing:wide`, "-o", out], { ...own, AEGIS_CACHE_DIR: cache }));
    expect(line).toMatch(/is not an Aegis policy artifact \(it is an index\)/);
    const gets = hostile.requests.slice(before).filter((r) => r.startsWith("GET"));
    expect(gets.every((r) => r.endsWith("/wide") || r.endsWith(index.digest)), `requests: ${gets.join(", ")}`).toBe(true);
    expect(existsSync(out), "output directory created").toBe(false);
    expect(existsSync(cache) ? readdirSync(cache) : [], "cache contents").toEqual([]);
  });
});
