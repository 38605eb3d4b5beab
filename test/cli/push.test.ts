// `aegis push` of a bundle file end to end: the file is read once (the
// bytes the process reads, from the kernel's count, grow by the file's size
// once, not twice), signing, --json and the layer's checksum work as for a
// directory, and a bad bundle file stores nothing anywhere.
import { execFile, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeBundle } from "../../bundle/index.js";
import { RemoteRepository, sha256 } from "../../registry/index.js";
import { generateKeyPair } from "../../signing/index.js";
import { startRegistryProxy, uploadSessions, type RegistryProxy } from "../harness/proxy.js";
import { testPolicy } from "../harness/policy.js";
import { startRegistry, type RegistryServer } from "../harness/registry.js";
import { AEGIS, aegis, expectOneErrorLine } from "./run.js";

const MiB = 1024 * 1024;
const POLICY = testPolicy("read-once");

let registry: RegistryServer;
let proxy: RegistryProxy;
let work: string;
let env: NodeJS.ProcessEnv;
let counter = 0;

beforeAll(async () => {
  registry = await startRegistry();
  proxy = await startRegistryProxy(registry.url);
  work = mkdtempSync(join(tmpdir(), "aegis-cli-push-"));
  mkdirSync(join(work, "docker"));
  env = { AEGIS_CACHE_DIR: join(work, "cache"), DOCKER_CONFIG: join(work, "docker") };
});
afterAll(async () => {
  await proxy?.stop();
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

/** A bundle of POLICY with `programSize` random bytes as program.o (incompressible: the file is about as large), in a file. */
async function bundleFile(programSize: number): Promise<{ path: string; bytes: Buffer }> {
  const bytes = await encodeBundle({ policy: POLICY, program: randomBytes(programSize) });
  const path = join(work, `bundle-${counter++}.tar.zst`);
  writeFileSync(path, bytes);
  return { path, bytes };
}

/**
 * Runs `aegis push` and reads, as the process exits, the bytes it has read
 * in all: rchar in /proc/self/io, which counts every read(2) of files and
 * sockets, however the file was opened or read.
 */
function pushCountingReads(args: string[]): Promise<{ code: number; stderr: string; readBytes: number }> {
  const countFile = join(work, `rchar-${counter++}`);
  const hook = `import { readFileSync, writeFileSync } from "node:fs"; process.on("exit", () => writeFileSync(${JSON.stringify(countFile)}, /rchar:\\s*(\\d+)/.exec(readFileSync("/proc/self/io", "utf8"))[1]));`;
  return new Promise((resolve) => {
    execFile(process.execPath, ["--import", `data:text/javascript,${encodeURIComponent(hook)}`, AEGIS, "push", ...args], { env: { ...process.env, ...env } }, (err, _stdout, stderr) => {
      const readBytes = existsSync(countFile) ? Number(readFileSync(countFile, "utf8")) : NaN;
      resolve({ code: err ? Number(err.code ?? 1) : 0, stderr, readBytes });
    });
  });
}

describe("aegis push <bundle file>", () => {
  it("reads the file once: a 24 MiB bundle costs its size in bytes read over a small one's, not twice that (registry and layout)", async () => {
    const small = await bundleFile(64 * 1024);
    const large = await bundleFile(24 * MiB);
    const extra = large.bytes.byteLength - small.bytes.byteLength;
    for (const destination of [(name: string) => `${registry.host}/once/${name}:v1`, (name: string) => `oci:${join(work, `once-${name}`)}:v1`]) {
      const base = await pushCountingReads([small.path, destination(`small${counter++}`)]);
      const big = await pushCountingReads([large.path, destination(`large${counter++}`)]);
      expect(base.code, base.stderr).toBe(0);
      expect(big.code, big.stderr).toBe(0);
      const more = big.readBytes - base.readBytes;
      const where = destination("x");
      expect(more, `${where}: bytes read beyond a small push's (${(more / MiB).toFixed(1)} MiB for ${(extra / MiB).toFixed(1)} MiB more file)`).toBeGreaterThanOrEqual(extra);
      expect(more, `${where}: bytes read beyond a small push's (${(more / MiB).toFixed(1)} MiB for ${(extra / MiB).toFixed(1)} MiB more file)`).toBeLessThan(1.5 * extra);
    }
  });

  it("--sign-key and --json: the layer's checksum is the file's digest, and the signature verifies on pull", async () => {
    const keys = generateKeyPair("ecdsa-p256");
    writeFileSync(join(work, "ci.key"), keys.privateKey);
    writeFileSync(join(work, "ci.pub"), keys.publicKey);
    const { path, bytes } = await bundleFile(MiB);
    const pushed = await aegis(["push", path, `${registry.host}/signed/file:v1`, "--sign-key", join(work, "ci.key"), "--json"], env);
    expect(pushed.code, pushed.stderr).toBe(0);
    const out = JSON.parse(pushed.stdout) as { digest: string; checksum: string; signature: string | null };
    expect(out, "push --json").toMatchObject({ tag: "v1", name: POLICY.name, version: POLICY.version, checksum: sha256(bytes), warnings: [] });
    expect(out.signature, "signature digest").toMatch(/^sha256:[a-f0-9]{64}$/);
    const pulled = await aegis(["pull", `${registry.host}/signed/file:v1`, "-o", join(work, "pulled"), "--key", join(work, "ci.pub"), "--json"], env);
    expect(JSON.parse(pulled.stdout), pulled.stderr).toMatchObject({ digest: out.digest, verified: { digest: true, signature: { key: "ci.pub" } } });
  });

  it("pull's cache: an empty AEGIS_CACHE_DIR counts as unset, and the cache goes under XDG_CACHE_HOME", async () => {
    const { path } = await bundleFile(1024);
    const pushed = await aegis(["push", path, `${registry.host}/cache/where:v1`], env);
    expect(pushed.code, pushed.stderr).toBe(0);
    const xdg = join(work, "xdg");
    const pulled = await aegis(["pull", `${registry.host}/cache/where:v1`, "-o", join(work, "pulled-xdg")], { ...env, AEGIS_CACHE_DIR: "", XDG_CACHE_HOME: xdg });
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(existsSync(join(xdg, "aegis", "oci", "index.json")), "the cache's index under XDG_CACHE_HOME").toBe(true);
  });

  it("a policy of 5,000 rules (its policy.json over the size util/jit.ts validates with the optimizing compiler back on) is pushed and pulled whole", async () => {
    const rules = Array.from({ length: 5000 }, (_, i) => ({ action: "drop" as const, dst: `10.${i >> 8}.${i & 255}.0/24`, protocol: "any" as const }));
    const policy = { ...testPolicy("large"), rules };
    const bytes = await encodeBundle({ policy, program: randomBytes(4096) });
    const path = join(work, `large-${counter++}.tar.zst`);
    writeFileSync(path, bytes);
    const pushed = await aegis(["push", path, `${registry.host}/large/policy:v1`, "--json"], env);
    expect(pushed.code, pushed.stderr).toBe(0);
    const out = join(work, `large-out-${counter++}`);
    const pulled = await aegis(["pull", `${registry.host}/large/policy@${(JSON.parse(pushed.stdout) as { digest: string }).digest}`, "-o", out, "--json"], env);
    expect(pulled.code, pulled.stderr).toBe(0);
    const written = readFileSync(join(out, "policy.json"));
    expect(written.byteLength, "policy.json size").toBeGreaterThan(256 * 1024);
    expect((JSON.parse(written.toString("utf8")) as { rules: unknown[] }).rules, "the rules pulled").toEqual(rules);
  });

  it("a bad bundle file: one error line saying what is wrong, the upload cancelled, nothing stored in a registry or a layout", async () => {
    const good = await bundleFile(MiB);
    const path = join(work, "bad.tar.zst");
    // Cut inside program.o: valid zstd as far as it goes, then the data ends mid-frame.
    writeFileSync(path, good.bytes.subarray(0, good.bytes.byteLength - 100));
    proxy.requests.length = 0;
    const line = expectOneErrorLine(await aegis(["push", path, `${proxy.host}/bad/file:v1`], env));
    expect(line, "the error").toContain("not valid zstd");
    // The layer's upload and the empty config's beside it: all sent, then both cancelled.
    const sent = ["POST 202", "PATCH 202", "DELETE 204"];
    expect([...uploadSessions(proxy.requests).values()], "upload sessions").toEqual([sent, sent]);
    expect(proxy.requests.filter((r) => r.method === "PUT"), "commits and manifests").toEqual([]);
    expect(await new RemoteRepository(registry.host, "bad/file").tags(), "tags").toEqual([]);

    const layout = join(work, "bad-layout");
    expectOneErrorLine(await aegis(["push", path, `oci:${layout}:v1`], env));
    expect(readdirSync(join(layout, "blobs", "sha256")), "blobs and temp files in the layout").toEqual([]);
    expect(existsSync(join(layout, "index.json")), "index.json").toBe(false);
  });

  it("a file over the bundle cap, or a pipe, is refused before anything is sent", async () => {
    const big = join(work, "big.tar.zst");
    // Sparse: the size is what counts, read from the file before a byte of it is.
    writeFileSync(big, "");
    truncateSync(big, 65 * MiB);
    const fifo = join(work, "bundle.fifo");
    execFileSync("mkfifo", [fifo]);
    proxy.requests.length = 0;
    expect(expectOneErrorLine(await aegis(["push", big, `${proxy.host}/refused/big:v1`], env)), "over the cap").toMatch(/big\.tar\.zst is 68157440 bytes, over the bundle cap of \d+/);
    expect(expectOneErrorLine(await aegis(["push", fifo, `${proxy.host}/refused/fifo:v1`], env)), "a pipe").toContain(`${fifo} is neither a bundle file nor a policy directory`);
    expect(proxy.requests, "requests to the registry").toEqual([]);
  });
});
