// Ctrl-C in the middle of a transfer: `aegis pull`, `push` and `copy` stop
// with one "interrupted by SIGINT" line, then end by SIGINT themselves (so a
// shell running them in a loop stops too), and leave nothing half
// written: no temp directory or file, no partial blob, no upload committed.
// What a pull killed outright leaves, the next pull sweeps.
// A registry proxy that stops sending a blob (or a gate that stops taking an
// upload) keeps each command mid-transfer until the signal arrives.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeBundle, pushBundle } from "../../bundle/index.js";
import { descriptorFor, isNotFound, MediaType, RemoteRepository } from "../../registry/index.js";
import { testPolicy } from "../harness/policy.js";
import { backdate } from "../harness/stale.js";
import { startRegistryProxy, type RegistryProxy } from "../harness/proxy.js";
import { startRegistry, type RegistryServer } from "../harness/registry.js";
import { startUploadGate, type UploadGate } from "../registry/upload-gate.js";
import { AEGIS, aegis, expectOneErrorLine } from "./run.js";

const MiB = 1024 * 1024;
const POLICY = testPolicy("interrupted");

let registry: RegistryServer;
let proxy: RegistryProxy;
let gate: UploadGate;
let work: string;
let bundle: Buffer;
let digest: string;

beforeAll(async () => {
  registry = await startRegistry();
  [proxy, gate] = await Promise.all([startRegistryProxy(registry.url), startUploadGate(registry.url)]);
  work = mkdtempSync(join(tmpdir(), "aegis-interrupt-"));
  bundle = await encodeBundle({ policy: POLICY, program: randomBytes(8 * MiB) });
  digest = (await pushBundle(bundle, POLICY, new RemoteRepository(registry.host, "interrupt/src"))).manifest.digest;
  // Every blob GET through the proxy stops after its first MiB, until the client goes away.
  proxy.set({ stallBlobsAfter: MiB });
});
afterAll(async () => {
  await Promise.all([proxy?.stop(), gate?.stop()]);
  await registry?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

/** Resolves once `check` holds, polling; the bound keeps a broken case from hanging (the test's timeout would too). */
async function until(what: string, check: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 800; i++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`never: ${what}`);
}

/** Starts `aegis args`, waits until `started` holds, sends SIGINT and returns how the process ended. */
async function interrupt(args: string[], env: NodeJS.ProcessEnv, started: [string, () => boolean | Promise<boolean>]): Promise<string> {
  const child = spawn(process.execPath, [AEGIS, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  try {
    await until(started[0], started[1]);
  } catch (err) {
    child.kill("SIGKILL");
    throw new Error(`${(err as Error).message}; stderr: ${stderr}`, { cause: err });
  }
  child.kill("SIGINT");
  const { code, signal } = await exited;
  expect({ code, signal }, `how the process ended (by the signal, as Go tools do, not exit 1); stderr: ${stderr}`).toEqual({ code: null, signal: "SIGINT" });
  return expectOneErrorLine({ code: 1, stdout, stderr });
}

/** Names under `dir` (recursively), "" when it does not exist. */
function tree(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir, { recursive: true, encoding: "utf8" }).sort() : [];
}

const tempFile = (dir: string) => () => tree(dir).some((name) => name.includes(".tmp-"));

describe("Ctrl-C", () => {
  it("pull: the temp directory and the cache's partial blob are removed, and no output directory is made", async () => {
    const out = join(work, "pulled");
    const cache = join(work, "pull-cache");
    const line = await interrupt(["pull", `${proxy.host}/interrupt/src@${digest}`, "-o", out], { AEGIS_CACHE_DIR: cache }, ["the layer is being written to the cache", tempFile(cache)]);
    expect(line).toBe("aegis: error: interrupted by SIGINT");
    expect(existsSync(out), "the output directory (a new one appears only with both files)").toBe(false);
    expect(readdirSync(work).filter((name) => name.includes("aegis-pull")), "the temp directory beside it").toEqual([]);
    const layer = descriptorFor(MediaType.PolicyLayer, bundle).digest.slice("sha256:".length);
    expect(tree(cache).filter((name) => name.includes(".tmp-") || name.endsWith(layer)), "the layer, or part of it, in the cache").toEqual([]);
    expect(tree(cache).includes("index.json"), "an index.json (a manifest stored)").toBe(false);
  });

  it("pull killed outright (SIGKILL) leaves its partial blob and temp directory; the next pull, an hour on, sweeps both", async () => {
    const parent = mkdtempSync(join(work, "killed-"));
    const out = join(parent, "out");
    const cache = join(parent, "cache");
    const child = spawn(process.execPath, [AEGIS, "pull", `${proxy.host}/interrupt/src@${digest}`, "-o", out], { env: { ...process.env, AEGIS_CACHE_DIR: cache }, stdio: "ignore" });
    const exited = new Promise((resolve) => child.once("exit", resolve));
    // The layer's partial blob, past the size of any other blob (the config's temp file may sit beside it): the
    // proxy stalls the layer after its first MiB.
    const partial = () => tree(cache).filter((name) => name.includes(".tmp-"));
    const stalled = () => partial().some((name) => (statSync(join(cache, name), { throwIfNoEntry: false })?.size ?? 0) >= 64 * 1024);
    try {
      await until("the layer is being written to the cache", stalled);
    } finally {
      child.kill("SIGKILL");
      await exited;
    }
    const beside = () => readdirSync(parent).filter((name) => name.includes("aegis-pull"));
    expect(partial().length, `partial blobs the killed pull left in the cache: ${partial().join(", ")}`).toBeGreaterThan(0);
    expect(beside(), "the temp directory it left beside the output").toEqual([expect.stringMatching(/^\.out\.aegis-pull-[0-9a-f]{12}$/)]);
    // An hour on: every entry they hold last changed then.
    backdate(...partial().map((name) => join(cache, name)));
    for (const name of beside()) backdate(...readdirSync(join(parent, name)).map((inside) => join(parent, name, inside)), join(parent, name));
    const pulled = await aegis(["pull", `${registry.host}/interrupt/src@${digest}`, "-o", out], { AEGIS_CACHE_DIR: cache });
    expect(pulled.code, pulled.stderr).toBe(0);
    expect([...partial(), ...beside()], "swept by the next pull").toEqual([]);
    expect(readdirSync(out).sort()).toEqual(["policy.json", "program.o"]);
  });

  it("copy into an OCI layout: no partial blob, no manifest", async () => {
    const layout = join(work, "copied");
    const line = await interrupt(["copy", `${proxy.host}/interrupt/src@${digest}`, `oci:${layout}:v1`], {}, ["the layer is being written to the layout", tempFile(layout)]);
    expect(line).toBe("aegis: error: interrupted by SIGINT");
    expect(tree(layout).filter((name) => name.includes(".tmp-")), "temp files in the layout").toEqual([]);
    expect(tree(layout).includes("index.json"), "an index.json (a manifest stored)").toBe(false);
  });

  it("push of a bundle file: the upload is cancelled and nothing is committed or tagged", async () => {
    const file = join(work, "bundle.tar.zst");
    writeFileSync(file, bundle);
    const start = gate.received;
    gate.holdAfter(start + MiB);
    let taken: number;
    try {
      const line = await interrupt(["push", file, `${gate.host}/interrupt/pushed:v1`], {}, ["the registry holds the upload", () => gate.holding]);
      expect(line).toBe("aegis: error: interrupted by SIGINT");
      // Counted while still held: once released, the registry may read what the kernel buffered before the abort.
      taken = gate.received - start;
    } finally {
      gate.release();
    }
    const reader = new RemoteRepository(registry.host, "interrupt/pushed");
    expect(isNotFound(await reader.resolve("v1").catch((err: unknown) => err)), "the tag").toBe(true);
    expect(await reader.exists(descriptorFor(MediaType.PolicyLayer, bundle)), "the layer in the repository").toBe(false);
    expect(taken, "bytes the registry took before the interrupt").toBeLessThan(bundle.byteLength);
  });
});
