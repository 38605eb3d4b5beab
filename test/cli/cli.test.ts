// The CLI end to end against real registry 2.8.2 (anonymous, htpasswd,
// token), with skopeo as an independent client.
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sha256 } from "../../registry/index.js";
import { startRegistryProxy, type RegistryProxy } from "../harness/proxy.js";
import { startRegistry, TEST_PASSWORD, TEST_USERNAME, type RegistryServer } from "../harness/registry.js";
import { aegis, expectOneErrorLine } from "./run.js";

const execFileAsync = promisify(execFile);
let anon: RegistryServer;
let basic: RegistryServer;
let token: RegistryServer;
let proxy: RegistryProxy;
let work: string;
let env: NodeJS.ProcessEnv;
/** The AEGIS_REGISTRY_* credentials, scoped to `host`. */
const creds = (host: string) => ({ AEGIS_REGISTRY_HOST: host, AEGIS_REGISTRY_USERNAME: TEST_USERNAME, AEGIS_REGISTRY_PASSWORD: TEST_PASSWORD });

beforeAll(async () => {
  [anon, basic, token] = await Promise.all([startRegistry(), startRegistry({ auth: "htpasswd" }), startRegistry({ auth: "token" })]);
  proxy = await startRegistryProxy(anon.url);
  work = mkdtempSync(join(tmpdir(), "aegis-cli-"));
  // An empty Docker config and a private cache keep the machine's own settings out.
  mkdirSync(join(work, "docker"));
  env = { AEGIS_CACHE_DIR: join(work, "cache"), DOCKER_CONFIG: join(work, "docker") };
});
afterAll(async () => {
  await proxy?.stop();
  await Promise.all([anon?.stop(), basic?.stop(), token?.stop()]);
  rmSync(work, { recursive: true, force: true });
});

function skopeo(...args: string[]): Promise<{ stdout: string }> {
  return execFileAsync("skopeo", args, { encoding: "utf8", maxBuffer: 16 << 20 });
}

describe("push, pull, inspect, copy", () => {
  it("policy build twice gives the same bytes; push of the bundle and of the directory give the same digest", async () => {
    const a = join(work, "a.tar.zst");
    const b = join(work, "b.tar.zst");
    expect((await aegis(["policy", "build", "policies/block-icmp-8888", "-o", a], env)).code).toBe(0);
    expect((await aegis(["policy", "build", "policies/block-icmp-8888", "-o", b, "--json"], env)).code).toBe(0);
    expect(readFileSync(a).equals(readFileSync(b))).toBe(true);
    const fromFile = await aegis(["push", a, `${anon.host}/cli/icmp:v1`], env);
    const fromDir = await aegis(["push", "policies/block-icmp-8888", `${anon.host}/cli/icmp:v2`, "--json"], env);
    expect(fromFile.code).toBe(0);
    const digest = fromFile.stdout.trim();
    expect(digest).toMatch(/^sha256:[a-f0-9]{64}$/);
    expect(JSON.parse(fromDir.stdout)).toMatchObject({ digest, reference: `${anon.host}/cli/icmp@${digest}`, tag: "v2", checksum: sha256(readFileSync(a)) });
  });

  it("pull writes the verified bundle files; inspect shows the manifest", async () => {
    const push = await aegis(["push", "policies/deny-legacy-remote-access", `${anon.host}/cli/legacy:2.0.1`], env);
    const digest = push.stdout.trim();
    const out = join(work, "pulled");
    const pull = await aegis(["pull", `${anon.host}/cli/legacy@${digest}`, "-o", out, "--json"], env);
    expect(pull.code, pull.stderr).toBe(0);
    expect(JSON.parse(pull.stdout)).toMatchObject({ digest, name: "deny-legacy-remote-access", version: "2.0.1" });
    const policy = JSON.parse(readFileSync(join(out, "policy.json"), "utf8")) as { rules: unknown[]; attach: { direction: string } };
    expect(policy.rules).toHaveLength(4);
    expect(policy.attach.direction).toBe("ingress");
    expect(readFileSync(join(out, "program.o")).subarray(0, 4).toString("latin1")).toBe("\x7fELF");
    const inspect = await aegis(["inspect", `${anon.host}/cli/legacy:2.0.1`, "--json"], env);
    expect(JSON.parse(inspect.stdout)).toMatchObject({ descriptor: { digest }, manifest: { artifactType: "application/vnd.aegis.policy.v1" } });
    const raw = await aegis(["inspect", `${anon.host}/cli/legacy:2.0.1`, "--raw"], env);
    expect(sha256(raw.stdout)).toBe(digest);
  });

  it("pull without a usable default cache (a home that is a file) pulls through a temp folder, with a warning; an unusable AEGIS_CACHE_DIR fails, named", async () => {
    const push = await aegis(["push", "policies/block-icmp-8888", `${anon.host}/cli/nocache:v1`], env);
    const digest = push.stdout.trim();
    const home = join(work, "home-is-a-file");
    writeFileSync(home, "");
    const out = join(work, "no-cache-pull");
    const pulled = await aegis(["pull", `${anon.host}/cli/nocache@${digest}`, "-o", out, "--json"], { ...env, AEGIS_CACHE_DIR: "", XDG_CACHE_HOME: "", HOME: home });
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(JSON.parse(pulled.stdout), "the pull").toMatchObject({ digest });
    expect(pulled.stderr, "one warning naming the cache and what to do").toBe(`aegis: warning: cannot use the pull cache (${home}/.cache/aegis/oci: a part of the path is not a directory): pulling through a temp folder instead; set AEGIS_CACHE_DIR to keep pulled layers\n`);
    expect(readdirSync(out).sort()).toEqual(["policy.json", "program.o"]);
    const named = await aegis(["pull", `${anon.host}/cli/nocache@${digest}`, "-o", join(work, "named-cache-pull")], { ...env, AEGIS_CACHE_DIR: join(home, "cache") });
    expect(expectOneErrorLine(named), "the cache asked for").toBe(`aegis: error: cannot use the pull cache AEGIS_CACHE_DIR names: ${home}/cache: a part of the path is not a directory`);
    expect(existsSync(join(work, "named-cache-pull")), "nothing pulled").toBe(false);
  });

  it("copy moves an artifact between registries and to and from an OCI layout, digest unchanged", async () => {
    const digest = (await aegis(["push", "policies/deny-egress-cidrs", `${anon.host}/cli/cidrs:1.2.0`], env)).stdout.trim();
    const layout = join(work, "mirror");
    const toLayout = await aegis(["copy", `${anon.host}/cli/cidrs:1.2.0`, `oci:${layout}:1.2.0`, "--json"], env);
    expect(toLayout.code, toLayout.stderr).toBe(0);
    expect(JSON.parse(toLayout.stdout).digest).toBe(digest);
    const toBasic = await aegis(["copy", `oci:${layout}:1.2.0`, `${basic.host}/mirror/cidrs`], { ...env, ...creds(basic.host) });
    expect(toBasic.code, toBasic.stderr).toBe(0);
    const check = await aegis(["inspect", `${basic.host}/mirror/cidrs:1.2.0`, "--json"], { ...env, ...creds(basic.host) });
    expect(JSON.parse(check.stdout).descriptor.digest).toBe(digest);
    const pulled = await aegis(["pull", `${basic.host}/mirror/cidrs@${digest}`, "-o", join(work, "basic-pull"), "--json"], { ...env, ...creds(basic.host), AEGIS_CACHE_DIR: join(work, "cache-basic") });
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(JSON.parse(pulled.stdout)).toMatchObject({ digest, name: "deny-egress-cidrs" });
  });

  it("works against htpasswd (env and Docker config credentials) and token registries", async () => {
    const dockerDir = join(work, "docker-login");
    mkdirSync(dockerDir, { recursive: true });
    const auth = Buffer.from(`${TEST_USERNAME}:${TEST_PASSWORD}`).toString("base64");
    writeFileSync(join(dockerDir, "config.json"), JSON.stringify({ auths: { [basic.host]: { auth } } }));
    const viaConfig = await aegis(["push", "policies/block-icmp-8888", `${basic.host}/auth/icmp:v1`], { ...env, DOCKER_CONFIG: dockerDir });
    expect(viaConfig.code, viaConfig.stderr).toBe(0);
    const viaToken = await aegis(["push", "policies/block-icmp-8888", `${token.host}/auth/icmp:v1`], { ...env, ...creds(token.host) });
    expect(viaToken.code, viaToken.stderr).toBe(0);
    expect(viaToken.stdout).toBe(viaConfig.stdout);
    const pulled = await aegis(["pull", `${token.host}/auth/icmp:v1`, "-o", join(work, "token-pull")], { ...env, ...creds(token.host) });
    expect(pulled.code, pulled.stderr).toBe(0);
  });
});

describe("interop with skopeo", () => {
  it("skopeo reads what we push, and we read what skopeo copies into a layout", async () => {
    const digest = (await aegis(["push", "policies/block-icmp-8888", `${anon.host}/interop/icmp:v1`], env)).stdout.trim();
    const raw = await skopeo("inspect", "--raw", "--tls-verify=false", `docker://${anon.host}/interop/icmp:v1`);
    expect(sha256(raw.stdout)).toBe(digest);
    const layout = join(work, "skopeo-layout");
    await skopeo("copy", "--quiet", "--src-tls-verify=false", `docker://${anon.host}/interop/icmp:v1`, `oci:${layout}:v1`);
    const inspect = await aegis(["inspect", `oci:${layout}:v1`, "--json"], env);
    expect(JSON.parse(inspect.stdout).descriptor.digest).toBe(digest);
    const pull = await aegis(["pull", `oci:${layout}:v1`, "-o", join(work, "from-skopeo")], env);
    expect(pull.code, pull.stderr).toBe(0);
    // And skopeo reads a layout we wrote.
    const ours = join(work, "our-layout");
    await aegis(["copy", `${anon.host}/interop/icmp:v1`, `oci:${ours}:v1`], env);
    expect(sha256((await skopeo("inspect", "--raw", `oci:${ours}:v1`)).stdout)).toBe(digest);
  });
});

describe("failures: one clear line, non-zero exit, nothing written", () => {
  it.each([
    ["a missing file", ["push", "/no/such/bundle.tar.zst", "127.0.0.1:1/x:v1"], /\/no\/such\/bundle\.tar\.zst: no such file or directory/],
    ["a missing policy dir", ["policy", "build", "/no/such/dir", "-o", "/tmp/aegis-never.tar.zst"], /\/no\/such\/dir\/policy\.yaml: cannot read policy file/],
    ["a bad reference", ["pull", "not a reference", "-o", "/tmp/aegis-never"], /invalid reference "not a reference"/],
    ["a reference without a host", ["inspect", "team/policy:v1"], /"team" is not a registry host/],
    ["a digest that is not sha256", ["inspect", "127.0.0.1:1/x@md5:abc"], /is not a sha256 digest/],
  ])("%s", async (_name, args, message) => {
    expect(expectOneErrorLine(await aegis(args, env))).toMatch(message);
  });

  it("bad YAML and an unknown program name the file", async () => {
    const dir = join(work, "bad-policy");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "policy.yaml"), "name: x\nversion: 1.0.0\nprogram: nope\nrules:\n  - { action: drop, dst: 1.2.3.4 }\n");
    expect(expectOneErrorLine(await aegis(["policy", "build", dir, "-o", join(dir, "out.tar.zst")], env))).toMatch(/unknown eBPF program "nope"/);
    writeFileSync(join(dir, "policy.yaml"), "name: x\nrules: [ {\n");
    expect(expectOneErrorLine(await aegis(["policy", "build", dir, "-o", join(dir, "out.tar.zst")], env))).toMatch(/policy\.yaml:\d+: invalid YAML/);
    expect(existsSync(join(dir, "out.tar.zst"))).toBe(false);
  });

  it("no credentials for a registry that needs them", async () => {
    const line = expectOneErrorLine(await aegis(["push", "policies/block-icmp-8888", `${basic.host}/nocreds/x:v1`], env));
    expect(line).toMatch(new RegExp(`registry ${basic.host} requires credentials`));
  });

  it("altered bytes from the registry: digest mismatch, no files written", async () => {
    const digest = (await aegis(["push", "policies/block-icmp-8888", `${anon.host}/tamper/icmp:v1`], env)).stdout.trim();
    const out = join(work, "tampered");
    proxy.set({ tamperBlobs: true });
    try {
      const line = expectOneErrorLine(await aegis(["pull", `${proxy.host}/tamper/icmp@${digest}`, "-o", out], { ...env, AEGIS_CACHE_DIR: join(work, "cache-tamper") }));
      expect(line).toMatch(/does not match its descriptor/);
    } finally {
      proxy.set({ tamperBlobs: false });
    }
    expect(existsSync(join(out, "policy.json"))).toBe(false);
  });
});
