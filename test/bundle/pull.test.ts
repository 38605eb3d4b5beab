// Pulling a bundle into a directory: streamed (a whole `aegis pull` of a
// 50 MiB bundle peaks at no more than 32 MiB above one of a 1 MiB bundle, so
// nothing holds the bundle; peak RSS from the kernel's VmHWM, not from
// timing), written only once verified (altered bytes leave nothing behind),
// a cache hit verified again in the one pass that unpacks it, and the files
// landing together in a new directory, synced before they are named
// (bundle/landing.ts).
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeBundle, pullBundle, pushBundle } from "../../bundle/index.js";
import { MediaType, OciLayoutTarget, RemoteRepository, type CopyEvent } from "../../registry/index.js";
import { testPolicy } from "../harness/policy.js";
import { backdate, leaveFile } from "../harness/stale.js";
import { startRegistry, type RegistryServer } from "../harness/registry.js";
import { AEGIS, aegis } from "../cli/run.js";

const MiB = 1024 * 1024;
const POLICY = testPolicy("big");

let registry: RegistryServer;
let work: string;
/** 50 MiB of random bytes as program.o: incompressible, so the bundle is as large. */
const program = randomBytes(50 * MiB);
const programDigest = createHash("sha256").update(program).digest("hex");
let bundle: Buffer;
let digest: string;
/** The same policy with a 1 MiB program.o: the baseline a 50 MiB pull is measured against. */
let smallDigest: string;

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error("test/bundle/pull.test.ts needs root (chown, as a shared folder's entries of other users)");
  work = mkdtempSync(join(tmpdir(), "aegis-pull-"));
  registry = await startRegistry();
  bundle = await encodeBundle({ policy: POLICY, program });
  digest = (await pushBundle(bundle, POLICY, new RemoteRepository(registry.host, "pull/big"))).manifest.digest;
  const small = await encodeBundle({ policy: POLICY, program: randomBytes(MiB) });
  smallDigest = (await pushBundle(small, POLICY, new RemoteRepository(registry.host, "pull/small"))).manifest.digest;
});

afterAll(async () => {
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

const fileDigest = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");

/**
 * Runs `aegis pull` and reads its peak RSS as the process exits: VmHWM from
 * /proc/self/status (KiB), the high-water mark of this process's own memory.
 * Not getrusage's ru_maxrss: Linux carries the forking parent's high-water
 * mark across exec into it, so it measured the test worker (~150-220 MiB).
 */
function pullWithPeakRss(ref: string, out: string, cache: string): Promise<{ code: number; stdout: string; stderr: string; peakMiB: number }> {
  const rssFile = join(work, `rss-${randomBytes(4).toString("hex")}`);
  const hook = `import { readFileSync, writeFileSync } from "node:fs"; process.on("exit", () => writeFileSync(${JSON.stringify(rssFile)}, /VmHWM:\\s*(\\d+)/.exec(readFileSync("/proc/self/status", "utf8"))[1]));`;
  const args = ["--import", `data:text/javascript,${encodeURIComponent(hook)}`, AEGIS, "pull", ref, "-o", out, "--json"];
  return new Promise((resolve) => {
    execFile(process.execPath, args, { env: { ...process.env, AEGIS_CACHE_DIR: cache } }, (err, stdout, stderr) => {
      const peakMiB = existsSync(rssFile) ? Number(readFileSync(rssFile, "utf8")) / 1024 : NaN;
      resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr, peakMiB });
    });
  });
}

describe("aegis pull of a 50 MiB bundle", () => {
  it("writes the files, its peak RSS within 32 MiB of a 1 MiB pull's; again from the cache, verified again, also within", async () => {
    const small = await pullWithPeakRss(`${registry.host}/pull/small@${smallDigest}`, join(work, "small"), join(work, "cache-small"));
    expect(small.code, small.stderr).toBe(0);
    const bound = small.peakMiB + 32;
    const out = join(work, "big");
    const cache = join(work, "cache-big");
    const first = await pullWithPeakRss(`${registry.host}/pull/big@${digest}`, out, cache);
    expect(first.code, first.stderr).toBe(0);
    expect(JSON.parse(first.stdout)).toMatchObject({ digest, name: "big", files: ["policy.json", "program.o"], cached: false });
    expect(fileDigest(join(out, "program.o")), "program.o as pushed").toBe(programDigest);
    expect(JSON.parse(readFileSync(join(out, "policy.json"), "utf8"))).toEqual(POLICY);
    expect(readdirSync(out).sort(), "no temp dir left").toEqual(["policy.json", "program.o"]);
    expect(first.peakMiB, `peak RSS ${first.peakMiB.toFixed(1)} MiB, a 1 MiB pull's ${small.peakMiB.toFixed(1)} MiB`).toBeLessThanOrEqual(bound);

    rmSync(out, { recursive: true });
    const again = await pullWithPeakRss(`${registry.host}/pull/big@${digest}`, out, cache);
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ digest, cached: true });
    expect(fileDigest(join(out, "program.o"))).toBe(programDigest);
    expect(again.peakMiB, `peak RSS from the cache ${again.peakMiB.toFixed(1)} MiB, a 1 MiB pull's ${small.peakMiB.toFixed(1)} MiB`).toBeLessThanOrEqual(bound);
  });
});

describe("aegis pull, on disk", () => {
  it("into a new directory in a setgid folder whose group the user is not in: the output keeps mkdir's mode, setgid included (a chmod would clear it)", async () => {
    // A shared folder of a group (1234) that nobody (65534), who pulls, is not in; reachable by nobody, unlike `work`.
    const top = mkdtempSync(join(tmpdir(), "aegis-pull-sgid-"));
    try {
      chmodSync(top, 0o755);
      const shared = join(top, "shared");
      mkdirSync(shared);
      chownSync(shared, 65534, 1234);
      chmodSync(shared, 0o2755);
      const out = join(shared, "out");
      const run = (argv: string[]) =>
        new Promise<{ code: number; stderr: string }>((resolve) => {
          const env = { PATH: process.env.PATH, HOME: shared, AEGIS_CACHE_DIR: join(shared, "cache"), AEGIS_COMPILE_CACHE: "off" };
          execFile(process.execPath, argv, { uid: 65534, gid: 65534, env }, (err, _stdout, stderr) =>
            // A path nobody cannot reach (a 0700 folder above the clone or Node) fails to start: its message says so.
            resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stderr: `${stderr}${err && typeof err.code !== "number" ? err.message : ""}` }),
          );
        });
      const made = await run(["-e", `require("node:fs").mkdirSync(${JSON.stringify(join(shared, "by-mkdir"))})`]);
      expect(made.code, made.stderr).toBe(0);
      const mode = (path: string) => (statSync(path).mode & 0o7777).toString(8);
      const byMkdir = mode(join(shared, "by-mkdir"));
      expect(Number.parseInt(byMkdir, 8) & 0o2000, `mkdir's mode, by nobody, in the setgid folder (${byMkdir}): setgid`).toBe(0o2000);
      const pulled = await run([AEGIS, "pull", `${registry.host}/pull/small@${smallDigest}`, "-o", out]);
      expect(pulled.code, pulled.stderr).toBe(0);
      expect(readdirSync(out).sort()).toEqual(["policy.json", "program.o"]);
      expect({ mode: mode(out), gid: statSync(out).gid }, "the output directory: mkdir's mode, the folder's group").toEqual({ mode: byMkdir, gid: 1234 });
    } finally {
      rmSync(top, { recursive: true, force: true });
    }
  });

  it("syncs both files before they get their names, and the folders after: a power loss leaves a file whole or absent, never empty", async () => {
    // Every fsync (by path) and rename the pull makes through node:fs/promises, in order. The bundle is CommonJS and
    // looks each function up on the module as it calls it, so the patch is seen (were it not, the steps would be missing).
    const recorder = join(work, "sync-recorder.cjs");
    const log = join(work, "sync-log");
    writeFileSync(
      recorder,
      [
        `const fsp = require("node:fs/promises"), { appendFileSync } = require("node:fs"), paths = new Map();`,
        `const record = (line) => appendFileSync(${JSON.stringify(log)}, line + "\\n");`,
        `const open = fsp.open, rename = fsp.rename;`,
        `let patched = false;`,
        `fsp.open = async function (path, ...rest) {`,
        `  const handle = await open.call(this, path, ...rest);`,
        `  paths.set(handle.fd, String(path));`,
        `  if (!patched) {`,
        `    patched = true;`,
        `    const proto = Object.getPrototypeOf(handle);`,
        `    for (const name of ["sync", "datasync"]) {`,
        `      const original = proto[name];`,
        `      proto[name] = function () { record("sync " + paths.get(this.fd)); return original.call(this); };`,
        `    }`,
        `  }`,
        `  return handle;`,
        `};`,
        `fsp.rename = function (from, to) { record("rename " + from + " " + to); return rename.call(this, from, to); };`,
      ].join("\n"),
    );
    const parent = mkdtempSync(join(work, "durable-"));
    const out = join(parent, "out");
    const pull = async (how: string) => {
      rmSync(log, { force: true });
      const pulled = await aegis(["pull", `${registry.host}/pull/small@${smallDigest}`, "-o", out], { AEGIS_CACHE_DIR: join(work, "cache-durable"), NODE_OPTIONS: `--require ${recorder}` });
      expect(pulled.code, `${how}: ${pulled.stderr}`).toBe(0);
      // Only what happens in the output's folder (not the cache's).
      return readFileSync(log, "utf8").trimEnd().split("\n").filter((line) => line.split(" ").slice(1).every((path) => path.startsWith(parent)));
    };
    const name = (path: string) => (path === parent ? "<parent>" : path.slice(parent.length + 1).replace(/aegis-pull-[0-9a-zA-Z]+/, "aegis-pull-X"));
    const steps = (lines: string[]) => lines.map((line) => line.split(" ").map((word, i) => (i === 0 ? word : name(word))).join(" "));
    const fresh = steps(await pull("into a new directory"));
    expect(fresh.slice(0, 2).sort(), "into a new directory: first both files synced").toEqual(["sync .out.aegis-pull-X/policy.json", "sync .out.aegis-pull-X/program.o"]);
    expect(fresh.slice(2), "then the directory synced, renamed into place, and the folder holding it synced").toEqual(["sync .out.aegis-pull-X", "rename .out.aegis-pull-X out", "sync <parent>"]);
    const existing = steps(await pull("into an existing directory"));
    expect(existing.slice(0, 2).sort(), "into an existing directory: first both files synced").toEqual(["sync out/.aegis-pull-X/policy.json", "sync out/.aegis-pull-X/program.o"]);
    expect(existing.slice(2).sort(), "then each renamed in, and the folder synced").toEqual(["rename out/.aegis-pull-X/policy.json out/policy.json", "rename out/.aegis-pull-X/program.o out/program.o", "sync out"].sort());
    expect(existing.at(-1), "the folder synced last").toBe("sync out");
  });
});

describe("pullBundle", () => {
  /** A source layout holding the bundle, and the path of its layer blob. */
  async function sourceLayout(): Promise<{ src: OciLayoutTarget; blob: string; digest: string }> {
    const src = new OciLayoutTarget(mkdtempSync(join(work, "src-")));
    const pushed = await pushBundle(bundle, POLICY, src, "v1");
    return { src, blob: join(src.dir, "blobs", "sha256", pushed.layer.digest.slice(7)), digest: pushed.manifest.digest };
  }

  /** The same bytes with one flipped deep inside program.o: zstd and tar read it all, only the digest tells. */
  function alter(path: string): void {
    const bytes = readFileSync(path);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
    writeFileSync(path, bytes);
  }

  it("altered bytes from the source: DIGEST_MISMATCH after the whole layer was unpacked, and nothing is left", async () => {
    const { src, blob, digest: root } = await sourceLayout();
    alter(blob);
    const out = join(work, "altered");
    const cache = new OciLayoutTarget(join(work, "cache-altered"));
    await expect(pullBundle(src, root, cache, out)).rejects.toMatchObject({ code: "DIGEST_MISMATCH" });
    expect(existsSync(out), "no output directory").toBe(false);
    expect(readdirSync(work).filter((name) => name.includes("aegis-pull")), "no temp directory beside it").toEqual([]);
    expect(await cache.digests(), "the cache holds no layer").not.toContain(`sha256:${blob.split("/").pop()}`);
  });

  it("a cache hit reads nothing from the source's blobs; a cached layer altered at rest is fetched again", async () => {
    const { src, blob, digest: root } = await sourceLayout();
    const cache = new OciLayoutTarget(join(work, "cache-hit"));
    const out = join(work, "hit");
    expect((await pullBundle(src, root, cache, out)).cached).toBe(false);
    const stored = readFileSync(blob);
    rmSync(blob);
    const hit = await pullBundle(src, root, cache, out);
    expect(hit.cached, "served from the cache without the source's blob").toBe(true);
    expect(fileDigest(join(out, "program.o"))).toBe(programDigest);

    writeFileSync(blob, stored);
    const cached = join(cache.dir, "blobs", "sha256", blob.split("/").pop()!);
    alter(cached);
    rmSync(out, { recursive: true });
    const repaired = await pullBundle(src, root, cache, out);
    expect(repaired.cached, "fetched again").toBe(false);
    expect(fileDigest(join(out, "program.o"))).toBe(programDigest);
    expect(readFileSync(cached).equals(stored), "the cache repaired").toBe(true);
    expect(readdirSync(out).sort()).toEqual(["policy.json", "program.o"]);
  });

  it("into a new directory, both files appear together: until the layer is verified and stored they sit in a temp directory beside it, this user's alone; then it gets mkdir's mode", async () => {
    const { src, digest: root } = await sourceLayout();
    const parent = mkdtempSync(join(work, "fresh-"));
    const deep = join(parent, "deep");
    const out = join(deep, "out");
    // A setgid parent (a shared group folder): a directory made in it is setgid too, and so must the output be.
    mkdirSync(deep);
    chmodSync(deep, 0o2755);
    mkdirSync(join(deep, "by-mkdir"));
    const made = statSync(join(deep, "by-mkdir")).mode & 0o7777;
    rmSync(join(deep, "by-mkdir"), { recursive: true });
    const seen: string[] = [];
    const onEvent = (event: CopyEvent) => {
      if (event.kind !== "done" || event.desc.mediaType !== MediaType.PolicyLayer) return;
      const temps = readdirSync(deep).filter((name) => name.startsWith(".out.aegis-pull-"));
      const modes = temps.map((t) => (statSync(join(deep, t)).mode & 0o7777).toString(8));
      seen.push(`out exists: ${existsSync(out)}; temps: ${temps.length}; in it: ${temps.map((t) => readdirSync(join(deep, t)).sort().join(",")).join(" ")}; mode ${modes.join(" ")}`);
    };
    const pulled = await pullBundle(src, root, new OciLayoutTarget(join(work, "cache-fresh")), out, { onEvent });
    expect(seen, "when the layer was done").toEqual(["out exists: false; temps: 1; in it: policy.json,program.o; mode 2700"]);
    expect(pulled.files.sort()).toEqual(["policy.json", "program.o"]);
    expect(readdirSync(out).sort()).toEqual(["policy.json", "program.o"]);
    expect(readdirSync(deep), "the temp directory became the output directory").toEqual(["out"]);
    expect((statSync(out).mode & 0o7777).toString(8), "the output directory's mode: mkdir's, setgid kept").toBe(made.toString(8));
    expect(made & 0o2000, "mkdir's, in a setgid folder, is setgid").toBe(0o2000);
    expect(fileDigest(join(out, "program.o"))).toBe(programDigest);
  });

  it("into an existing directory: other files stay, the pull's files are replaced, and temp directories killed pulls left an hour ago are swept", async () => {
    const { src, digest: root } = await sourceLayout();
    const parent = mkdtempSync(join(work, "existing-"));
    const out = join(parent, "out");
    /** A temp directory holding one file; `old` sets the mtimes of those named (the directory, the file) past the hour. */
    const temp = (dir: string, name: string, old: ("dir" | "file")[]) => {
      mkdirSync(join(dir, name), { recursive: true });
      leaveFile(join(dir, name, "program.o"), old.includes("file"));
      if (old.includes("dir")) backdate(join(dir, name));
    };
    const hex = "0123456789ab";
    mkdirSync(out);
    writeFileSync(join(out, "notes.txt"), "mine");
    writeFileSync(join(out, "program.o"), "an older program");
    temp(out, ".aegis-pull-Kill3d", ["dir", "file"]);
    temp(out, ".aegis-pull-Writes", ["dir"]); // a pull under way: its file still changes
    temp(out, ".aegis-pull-Recent", []);
    temp(out, ".aegis-pull-notmine", ["dir", "file"]); // not a name a pull makes
    temp(parent, `.out.aegis-pull-${hex}`, ["dir", "file"]);
    temp(parent, `.other.aegis-pull-${hex}`, ["dir", "file"]); // beside another output: not this pull's to sweep
    temp(parent, `.out.aegis-pull-y.aegis-pull-${hex}`, ["dir", "file"]); // a pull into "out.aegis-pull-y"'s
    temp(parent, `.out.aegis-pull-${hex.replace("0", "f")}`, ["dir", "file"]);
    chownSync(join(parent, `.out.aegis-pull-${hex.replace("0", "f")}`), 65534, 65534); // another user's (nobody's): never touched
    await pullBundle(src, root, new OciLayoutTarget(join(work, "cache-existing")), out);
    expect(readdirSync(out).sort(), "swept the killed pull's, kept the live ones', the user's and others").toEqual([".aegis-pull-Recent", ".aegis-pull-Writes", ".aegis-pull-notmine", "notes.txt", "policy.json", "program.o"]);
    expect(readFileSync(join(out, "notes.txt"), "utf8")).toBe("mine");
    expect(fileDigest(join(out, "program.o")), "program.o replaced").toBe(programDigest);
    expect(readdirSync(parent).sort(), "beside it").toEqual([`.other.aegis-pull-${hex}`, `.out.aegis-pull-f123456789ab`, `.out.aegis-pull-y.aegis-pull-${hex}`, "out"]);
  });

  it("nothing is swept from a folder where others could rename entries (they could swap one while it is removed): writable by others without the sticky bit, or another user's", async () => {
    const { src, digest: root } = await sourceLayout();
    const parent = mkdtempSync(join(work, "open-"));
    const stale = join(parent, ".out.aegis-pull-0123456789ab");
    const pull = async (how: string) => {
      if (!existsSync(stale)) mkdirSync(stale);
      backdate(stale);
      rmSync(join(parent, "out"), { recursive: true, force: true });
      await pullBundle(src, root, new OciLayoutTarget(join(work, "cache-open")), join(parent, "out"));
      return { how, left: readdirSync(parent).sort() };
    };
    const kept = [".out.aegis-pull-0123456789ab", "out"];
    chmodSync(parent, 0o777);
    expect(await pull("writable by all, not sticky")).toEqual({ how: "writable by all, not sticky", left: kept });
    chmodSync(parent, 0o775);
    expect(await pull("writable by its group")).toEqual({ how: "writable by its group", left: kept });
    chmodSync(parent, 0o755);
    chownSync(parent, 65534, 65534);
    expect(await pull("another user's")).toEqual({ how: "another user's", left: kept });
    chownSync(parent, 0, 0);
    chmodSync(parent, 0o1777);
    expect(await pull("root's, sticky, as /tmp: this user's own stale one goes")).toEqual({ how: "root's, sticky, as /tmp: this user's own stale one goes", left: ["out"] });
  });

  it("into an existing directory where a file cannot be replaced: the one moved in before it is put back, and the error names the file", async () => {
    const { src, digest: root } = await sourceLayout();
    const cache = new OciLayoutTarget(join(work, "cache-stuck"));
    // program.o is a directory (with a file in it), so renaming the pulled program.o over it fails; policy.json goes first.
    const stuck = async (name: string, before: string | undefined) => {
      const out = mkdtempSync(join(work, `${name}-`));
      if (before !== undefined) writeFileSync(join(out, "policy.json"), before);
      mkdirSync(join(out, "program.o"));
      writeFileSync(join(out, "program.o", "inside"), "");
      await expect(pullBundle(src, root, cache, out), name).rejects.toMatchObject({ message: `cannot write ${join(out, "program.o")}: it is a directory` });
      return readdirSync(out).sort().map((entry) => (entry === "policy.json" ? `policy.json: ${readFileSync(join(out, entry), "utf8")}` : entry));
    };
    expect(await stuck("replaced", "the older policy"), "an older policy.json is back").toEqual(["policy.json: the older policy", "program.o"]);
    expect(await stuck("new", undefined), "a policy.json that was not there is not left").toEqual(["program.o"]);
  });

  it("an output named with a trailing / or /. is the directory itself", async () => {
    const { src, digest: root } = await sourceLayout();
    const parent = mkdtempSync(join(work, "dotted-"));
    await pullBundle(src, root, new OciLayoutTarget(join(work, "cache-dotted")), join(parent, "new") + "/.");
    await pullBundle(src, root, new OciLayoutTarget(join(work, "cache-dotted")), join(parent, "slash") + "/");
    expect(readdirSync(parent).sort(), "the parent").toEqual(["new", "slash"]);
    for (const name of ["new", "slash"]) expect(readdirSync(join(parent, name)).sort(), name).toEqual(["policy.json", "program.o"]);
  });

  it("an output that is a file: INVALID_ARGUMENT naming it, and the file is left as it was", async () => {
    const { src, digest: root } = await sourceLayout();
    const out = join(mkdtempSync(join(work, "file-")), "out");
    writeFileSync(out, "not a directory");
    await expect(pullBundle(src, root, new OciLayoutTarget(join(work, "cache-file")), out)).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: `${out} is not a directory` });
    expect(readFileSync(out, "utf8")).toBe("not a directory");
    expect(readdirSync(join(out, "..")), "no temp directory").toEqual(["out"]);
  });
});
