// The CLI's compile cache (cli/compile-cache.ts), through the built `aegis`:
// a command's first successful run makes the caches of the files it loads
// and later runs read them (a cache V8 refused, or one that failed its
// checksum, would be made again, so "nothing rewritten" is how a test sees
// one taken). A planted cache that would print another version shows what
// is read: one in a folder or file another user owns or could write, a
// symlink, or one of a file's earlier build, never is. Nothing that goes
// wrong with the cache (no home directory, a folder that cannot be made or
// written) changes more than speed. Needs root (chown, a uid with no passwd
// entry), as CI runs it.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, chownSync, cpSync, existsSync, linkSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeBundle } from "../../bundle/index.js";
import { testPolicy } from "../harness/policy.js";
import { aegis, AEGIS, type CliResult } from "./run.js";

const RUNTIME = `${process.version}-v8-${process.versions.v8}-${process.arch}`;
const MAIN = /^main-[A-Z0-9]{8}\.cjs$/;
const MAIN_NAME = /^main-[A-Z0-9]{8}$/;
const DAY_MS = 24 * 3600_000;
let work: string;
let runs = 0;

beforeAll(() => {
  if (process.getuid?.() !== 0) throw new Error("test/cli/compile-cache.test.ts needs root (chown, another uid)");
  work = mkdtempSync(join(tmpdir(), "aegis-compile-cache-"));
  chmodSync(work, 0o755); // the uid without a passwd entry reads a copy of the CLI in here
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** A fresh path for one case. */
function fresh(name: string): string {
  return join(work, `${name}-${runs++}`);
}

/** The files in `dir`, each with its inode and modification time (a rewrite, renamed into place, changes both). */
function snapshot(dir: string): Record<string, string> {
  return Object.fromEntries(
    readdirSync(dir).map((name) => {
      const stat = statSync(join(dir, name), { bigint: true });
      return [name, `${stat.ino}@${stat.mtimeNs}`];
    }),
  );
}

function expectVersion(result: CliResult, version: string, what: string): void {
  expect(result.stderr, `${what}: stderr`).toBe("");
  expect(result.code, `${what}: exit code`).toBe(0);
  expect(result.stdout, `${what}: the version printed`).toBe(`${version}\n`);
}

/** The cache file of the bundle's main-*.cjs in a command's folder. */
function mainCache(folder: string): string {
  const name = readdirSync(folder).find((n) => n.startsWith("main-") && n.endsWith(".v8"));
  if (!name) throw new Error(`no cache of main-*.cjs in ${folder}: ${readdirSync(folder).join(", ")}`);
  return join(folder, name);
}

/**
 * A copy of the built CLI whose main chunk prints `version` (a string of the
 * same length as 0.1.0: same size, so only the name's time tells the builds
 * apart), with the time `mtime`.
 */
function copyOfCli(version: string, mtime: Date): string {
  const dir = fresh("cli");
  cpSync(dirname(AEGIS), dir, { recursive: true });
  const main = join(dir, readdirSync(dir).find((name) => MAIN.test(name))!);
  const source = readFileSync(main, "utf8");
  expect(source, "the version is in the command's file").toContain('.version("0.1.0")');
  writeFileSync(main, source.replace('.version("0.1.0")', `.version("${version}")`));
  utimesSync(main, mtime, mtime);
  return join(dir, "aegis.cjs");
}

/** A bundle whose layer is 9 MiB, at least bundle/transfer.ts's PRELOAD_BELOW: its pull turns TurboFan off as the layer starts, and loads the policy code once it is in. */
async function largeBundle(): Promise<string> {
  const file = join(work, "large.tar.zst");
  if (!existsSync(file)) writeFileSync(file, await encodeBundle({ policy: testPolicy("large"), program: randomBytes(9 * 1024 * 1024) }));
  return file;
}

describe("compile cache", () => {
  it("a command's first successful run caches the files it loads, and later runs read them and rewrite none, for commands that change V8 flags (a large pull) or not", async () => {
    const cache = fresh("cache");
    const env = { AEGIS_COMPILE_CACHE: cache, AEGIS_CACHE_DIR: fresh("oci-cache") };
    const layout = fresh("layout");
    expect((await aegis(["policy", "build", "policies/block-icmp-8888", "-o", join(work, "bundle.tar.zst")], env)).code, "policy build").toBe(0);
    expect((await aegis(["push", await largeBundle(), `oci:${layout}:1`], env)).code, "push").toBe(0);
    const pulled = join(work, "pulled");
    for (const [command, args] of [
      ["_", ["--version"]],
      ["pull", ["pull", `oci:${layout}:1`, "-o", pulled]],
    ] as const) {
      const folder = join(cache, RUNTIME, command);
      expect((await aegis([...args], env)).code, `${command}, first run`).toBe(0);
      const first = snapshot(folder);
      expect(Object.keys(first).filter((name) => /^main-[A-Z0-9]{8}\.\d+\.\d+\.v8$/.test(name)), `${command}: the command's own file is cached`).toHaveLength(1);
      rmSync(pulled, { recursive: true, force: true });
      expect((await aegis([...args], env)).code, `${command}, second run`).toBe(0);
      expect(snapshot(folder), `${command}: the second run rewrote a cache (V8 or the checksum refused it)`).toEqual(first);
    }
    expect(readdirSync(join(cache, RUNTIME)).sort(), "a folder per command").toEqual(["_", "policy", "pull", "push"]);
    expect(statSync(join(cache, RUNTIME, "pull")).mode & 0o777, "the folder is its user's alone").toBe(0o700);
    expect(statSync(mainCache(join(cache, RUNTIME, "pull"))).mode & 0o777, "a cache file is its user's alone").toBe(0o600);
  });

  it("a pull of a large layer caches the files it loads before it turns TurboFan off, not those after; a small one changes no flag and caches its policy code too", async () => {
    // What a pull loads (require.cache at exit) and the V8 flags it sets; NODE_OPTIONS also gives the run a runtime folder of its own.
    const recorder = join(work, "recorder.cjs");
    const loaded = fresh("loaded");
    writeFileSync(
      recorder,
      [
        `const v8 = require("node:v8"), set = v8.setFlagsFromString, flags = [];`,
        `v8.setFlagsFromString = (flag) => (flags.push(flag), set(flag));`,
        `process.on("exit", () => require("node:fs").writeFileSync(${JSON.stringify(loaded)}, JSON.stringify({ files: Object.keys(require.cache), flags })));`,
      ].join("\n"),
    );
    const layout = fresh("layout");
    const env = { AEGIS_CACHE_DIR: fresh("oci-cache"), NODE_OPTIONS: `--require ${recorder}` };
    expect((await aegis(["push", await largeBundle(), `oci:${layout}:large`], env)).code, "push the large bundle").toBe(0);
    expect((await aegis(["push", "policies/block-icmp-8888", `oci:${layout}:small`], env)).code, "push the small bundle").toBe(0);
    const pull = async (tag: string) => {
      const cache = fresh("cache");
      expect((await aegis(["pull", `oci:${layout}:${tag}`, "-o", fresh("pulled")], { ...env, AEGIS_COMPILE_CACHE: cache })).code, `pull ${tag}`).toBe(0);
      const run = JSON.parse(readFileSync(loaded, "utf8")) as { files: string[]; flags: string[] };
      const files = run.files.filter((path) => dirname(path) === dirname(AEGIS) && !path.endsWith("/aegis.cjs")).map((path) => basename(path).replace(/\.cjs$/, ""));
      const [runtime] = readdirSync(cache).filter((name) => name !== ".swept");
      const cached = readdirSync(join(cache, runtime!, "pull")).map((name) => name.replace(/\.\d+\.\d+\.v8$/, ""));
      expect(files, `${tag}: the pull loads its command and the policy code`).toEqual(expect.arrayContaining([expect.stringMatching(MAIN_NAME), expect.stringMatching(/^policy-/)]));
      expect(cached.filter((name) => !files.includes(name)), `${tag}: caches of files the pull did not load`).toEqual([]);
      return { files, cached, flags: run.flags };
    };
    const big = await pull("large");
    expect(big.flags[0], "large: the first flag set").toBe("--no-turbofan");
    expect((await pull("large")).flags[0], "large, read from the pull cache: the first flag set").toBe("--no-turbofan");
    expect(big.cached, "large: main cached").toEqual(expect.arrayContaining([expect.stringMatching(MAIN_NAME)]));
    expect(big.cached.filter((name) => name.startsWith("policy-")), "large: the policy code (loaded after the flag change) cached").toEqual([]);
    const small = await pull("small");
    expect(small.flags, "small: flags set").toEqual([]);
    expect(small.cached.filter((name) => name.startsWith("policy-")), "small: the policy code cached").toHaveLength(1);
    expect(small.cached, "small: what the large pull cached, cached too").toEqual(expect.arrayContaining(big.cached));
  });

  it("the bundle's files that another requires load by name, past the path work of Node's loader (in a deep install it made TurboFan compile normalizeString, util/jit.ts): with the cache, none is resolved; without, each is", async () => {
    // Every path.resolve/join/normalize call over a bundle file's name from Node's module loader, which calls them through node:path's exports
    // (the caller, or its caller, is in node:internal/modules: fs.realpathSync is called from there), and what was loaded.
    const recorder = join(work, "path-recorder.cjs");
    const seen = fresh("seen");
    writeFileSync(
      recorder,
      [
        `const path = require("node:path"), resolved = new Set();`,
        `for (const name of ["resolve", "join", "normalize"]) {`,
        `  const original = path[name];`,
        `  path[name] = function (...args) {`,
        `    const loader = /node:internal\\/modules\\//.test(new Error().stack.split("\\n").slice(2, 4).join(""));`,
        `    for (const arg of args) if (loader && typeof arg === "string" && /[\\w-]+\\.cjs$/.test(arg)) resolved.add(path.basename(arg));`,
        `    return original.apply(this, args);`,
        `  };`,
        `}`,
        `process.on("exit", () => require("node:fs").writeFileSync(${JSON.stringify(seen)}, JSON.stringify({ resolved: [...resolved], loaded: Object.keys(require.cache).map((file) => path.basename(file)) })));`,
      ].join("\n"),
    );
    const layout = fresh("layout");
    const env = { AEGIS_CACHE_DIR: fresh("oci-cache"), NODE_OPTIONS: `--require ${recorder}` };
    expect((await aegis(["push", "policies/block-icmp-8888", `oci:${layout}:small`], env)).code, "push").toBe(0);
    // What the executable itself requires goes through Node's loader either way: the hook is not on yet.
    const own = [...readFileSync(AEGIS, "utf8").matchAll(/require\("\.\/([\w-]+\.cjs)"\)/g)].map((m) => m[1]!);
    const pull = async (cache: string) => {
      const result = await aegis(["pull", `oci:${layout}:small`, "-o", fresh("pulled")], { ...env, AEGIS_COMPILE_CACHE: cache });
      expect(result.code, `pull with AEGIS_COMPILE_CACHE=${cache}: ${result.stderr}`).toBe(0);
      const run = JSON.parse(readFileSync(seen, "utf8")) as { resolved: string[]; loaded: string[] };
      const required = run.loaded.filter((name) => name.endsWith(".cjs") && name !== "aegis.cjs" && !own.includes(name) && readdirSync(dirname(AEGIS)).includes(name));
      return { required, resolved: required.filter((name) => run.resolved.includes(name)) };
    };
    const on = await pull(fresh("cache"));
    expect(on.required.length, `files the bundle's own code required: ${on.required.join(", ")}`).toBeGreaterThan(3);
    expect(on.resolved, "resolved by Node's loader, with the cache").toEqual([]);
    const off = await pull("off");
    expect(off.resolved.sort(), "resolved by Node's loader, without the cache (the recorder sees its path work)").toEqual(off.required.sort());
  });

  it("a run that fails, or only prints help, makes no cache; node options get a folder of their own", async () => {
    const cache = fresh("cache");
    const failed = await aegis(["copy", "oci:/no/such/layout:1", `oci:${fresh("layout")}:1`], { AEGIS_COMPILE_CACHE: cache });
    expect(failed.code, "a copy from nowhere fails").toBe(1);
    expect((await aegis(["pull", "--help"], { AEGIS_COMPILE_CACHE: cache })).code, "pull --help").toBe(0);
    expect(existsSync(join(cache, RUNTIME)), `folders made: ${existsSync(join(cache, RUNTIME)) ? readdirSync(join(cache, RUNTIME)).join(", ") : ""}`).toBe(false);
    expectVersion(await aegis(["--version"], { AEGIS_COMPILE_CACHE: cache, NODE_OPTIONS: "--max-old-space-size=200" }), "0.1.0", "with NODE_OPTIONS");
    const withOptions = new RegExp(`^${RUNTIME.replace(/[.]/g, "\\.")}-[0-9a-f]{12}$`);
    expect(readdirSync(cache).filter((name) => name !== ".swept"), "the runtime folder with options").toEqual([expect.stringMatching(withOptions)]);
  });

  it("a cache whose bytes changed (a flipped bit, garbage) is not run but made again, and the command's output is the same", async () => {
    for (const [what, spoil] of [
      ["one bit flipped past its checksum", (data: Buffer) => Buffer.concat([data.subarray(0, -100), Buffer.from([data[data.length - 100]! ^ 0x10]), data.subarray(-99)])],
      ["garbage", (data: Buffer) => Buffer.alloc(data.byteLength, 0x5a)],
    ] as const) {
      const cache = fresh("cache");
      const env = { AEGIS_COMPILE_CACHE: cache };
      expect((await aegis(["--version"], env)).code, `${what}: first run`).toBe(0);
      const file = mainCache(join(cache, RUNTIME, "_"));
      const spoilt = spoil(readFileSync(file));
      writeFileSync(file, spoilt);
      expectVersion(await aegis(["--version"], env), "0.1.0", what);
      expect(readFileSync(file).equals(spoilt), `${what}: the cache was made again`).toBe(false);
    }
  });

  it("a file rebuilt in place is not run from its earlier build's cache, even at the same length", async () => {
    const env = { AEGIS_COMPILE_CACHE: fresh("cache") };
    const entry = copyOfCli("0.1.0", new Date(Date.now() - 60_000));
    expectVersion(await aegis(["--version"], env, entry), "0.1.0", "the copy");
    expectVersion(await aegis(["--version"], env, entry), "0.1.0", "the copy, from its cache");
    const main = join(dirname(entry), readdirSync(dirname(entry)).find((name) => MAIN.test(name))!);
    writeFileSync(main, readFileSync(main, "utf8").replace('.version("0.1.0")', '.version("9.9.9")'));
    expectVersion(await aegis(["--version"], env, entry), "9.9.9", "the rebuilt copy");
  });

  it("a planted cache is read only from a folder and a file of this user's that no one else can write, and not through a symlink", async () => {
    // Two copies of the CLI whose main chunks differ only in the version they print; the 9.9.9 copy's
    // cache, named for the 0.1.0 copy's file, is what a planted cache would be.
    const mtime = new Date(Date.now() - 60_000);
    const plain = copyOfCli("0.1.0", mtime);
    const other = copyOfCli("9.9.9", mtime);
    const otherCache = fresh("cache");
    expectVersion(await aegis(["--version"], { AEGIS_COMPILE_CACHE: otherCache }, other), "9.9.9", "the other copy");
    const planted = readFileSync(mainCache(join(otherCache, RUNTIME, "_")));
    const plant = (cache: string): string => {
      const folder = join(cache, RUNTIME, "_");
      mkdirSync(folder, { recursive: true, mode: 0o700 });
      const file = join(folder, basename(mainCache(join(otherCache, RUNTIME, "_"))));
      writeFileSync(file, planted, { mode: 0o600 });
      return file;
    };
    // The control: where everything is this user's, the planted cache runs (V8 checks only the length).
    const trusted = fresh("cache");
    plant(trusted);
    expectVersion(await aegis(["--version"], { AEGIS_COMPILE_CACHE: trusted }, plain), "9.9.9", "a planted cache in a trusted folder");

    for (const [what, spoil] of [
      ["a folder writable by all", (file: string) => chmodSync(dirname(file), 0o777)],
      ["a folder of another user's", (file: string) => chownSync(dirname(file), 65534, 65534)],
      ["a runtime folder of another user's", (file: string) => chownSync(dirname(dirname(file)), 65534, 65534)],
      ["a file of another user's", (file: string) => chownSync(file, 65534, 65534)],
      ["a file writable by its group", (file: string) => chmodSync(file, 0o620)],
      ["a file with a second link", (file: string) => linkSync(file, join(dirname(dirname(file)), "elsewhere"))],
      ["a checksum that does not match", (file: string) => writeFileSync(file, Buffer.concat([Buffer.alloc(32), planted.subarray(32)]))],
      [
        "a symlink to the file",
        (file: string) => {
          renameSync(file, `${file}.real`);
          symlinkSync(`${file}.real`, file);
        },
      ],
    ] as const) {
      const cache = fresh("cache");
      const file = plant(cache);
      spoil(file);
      const before = snapshot(dirname(file));
      expectVersion(await aegis(["--version"], { AEGIS_COMPILE_CACHE: cache }, plain), "0.1.0", what);
      if (what.includes("folder")) expect(snapshot(dirname(file)), `${what}: written into`).toEqual(before);
    }
  });

  it("a cache folder is used only where no other user can move what is in it or above it", async () => {
    const shared = fresh("shared");
    mkdirSync(shared);
    chmodSync(shared, 0o777); // writable by all, not sticky
    const own = fresh("own");
    mkdirSync(own, { mode: 0o700 });
    const linked = fresh("linked");
    mkdirSync(linked, { mode: 0o700 });
    symlinkSync(own, join(linked, RUNTIME)); // the runtime folder a symlink to a folder of this user's
    for (const [what, cache, untouched] of [
      ["inside a folder any user can write", join(shared, "cache"), shared],
      ["a runtime folder that is a symlink", linked, own],
    ] as const) {
      expectVersion(await aegis(["--version"], { AEGIS_COMPILE_CACHE: cache }), "0.1.0", what);
      expect(readdirSync(untouched), `${what}: written into`).toEqual([]);
    }
    // Under a sticky folder any user can write (as /tmp is), a folder of this user's is used.
    const sticky = fresh("sticky");
    mkdirSync(sticky);
    chmodSync(sticky, 0o1777);
    const mine = join(sticky, "cache");
    mkdirSync(mine, { mode: 0o700 });
    expectVersion(await aegis(["--version"], { AEGIS_COMPILE_CACHE: mine }), "0.1.0", "under a sticky folder");
    expect(mainCache(join(mine, RUNTIME, "_")), "the cache under a sticky folder").toBeTruthy();
  });

  it("a policy manifest still checks the bundle's files (Node 20; later Nodes refuse the option)", async () => {
    const policy = fresh("policy.json");
    if (!process.allowedNodeEnvironmentFlags.has("--experimental-policy")) {
      // Node 22 and later have no policy manifests: nothing checks the files the cache compiles.
      const refused = await aegis(["--version"], { NODE_OPTIONS: `--experimental-policy=${policy}` });
      expect(refused.code, "the option refused").not.toBe(0);
      expect(refused.stderr, "Node's complaint").toContain("--experimental-policy");
      return;
    }
    const main = join(dirname(AEGIS), readdirSync(dirname(AEGIS)).find((name) => MAIN.test(name))!);
    // Every file may load (the scope), but the command's own file must have a digest it does not have.
    const resources = { [`file://${main}`]: { integrity: "sha256-AAAA", dependencies: true } };
    writeFileSync(policy, JSON.stringify({ resources, scopes: { "file:": { integrity: true, dependencies: true } }, onerror: "exit" }));
    const result = await aegis(["--version"], { AEGIS_COMPILE_CACHE: fresh("cache"), NODE_OPTIONS: `--experimental-policy=${policy}` });
    expect(result.code, `a file whose integrity does not match: ${result.stderr}`).not.toBe(0);
    expect(result.stderr, "the policy's error").toContain("ERR_MANIFEST_ASSERT_INTEGRITY");
  });

  it("no home directory, a cache folder that cannot be made, one inside another user's folder, a cache file that cannot be written: the command runs as without a cache", async () => {
    // A uid with no passwd entry and no HOME: os.homedir() throws.
    const copy = copyOfCli("0.1.0", new Date());
    const homeless = await new Promise<CliResult>((resolve) => {
      execFile(process.execPath, [copy, "--version"], { uid: 54321, gid: 54321, env: { PATH: process.env.PATH } }, (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr }),
      );
    });
    expectVersion(homeless, "0.1.0", "no home directory");

    const file = fresh("a-file");
    writeFileSync(file, "");
    expectVersion(await aegis(["--version"], { AEGIS_COMPILE_CACHE: join(file, "cache") }), "0.1.0", "a cache under a regular file");

    const theirs = fresh("theirs");
    mkdirSync(theirs);
    chownSync(theirs, 65534, 65534);
    expectVersion(await aegis(["--version"], { AEGIS_COMPILE_CACHE: join(theirs, "cache") }), "0.1.0", "a cache inside another user's folder");
    expect(readdirSync(theirs), "folders made inside another user's folder").toEqual([]);

    // A cache file's name taken by a folder that is not empty: the rename that would write it fails at exit.
    const cache = fresh("cache");
    expect((await aegis(["--version"], { AEGIS_COMPILE_CACHE: cache })).code, "first run").toBe(0);
    const main = mainCache(join(cache, RUNTIME, "_"));
    rmSync(main);
    mkdirSync(join(main, "in-the-way"), { recursive: true });
    expectVersion(await aegis(["--version"], { AEGIS_COMPILE_CACHE: cache }), "0.1.0", "a cache file that cannot be written");
    expect(readdirSync(dirname(main)).filter((name) => name.endsWith(".tmp")), "temporary files left").toEqual([]);
  });

  it("off turns it off; the default is under XDG_CACHE_HOME", async () => {
    const home = fresh("xdg");
    expectVersion(await aegis(["--version"], { XDG_CACHE_HOME: home, AEGIS_COMPILE_CACHE: "off" }), "0.1.0", "off");
    expect(existsSync(home), "off: anything under XDG_CACHE_HOME").toBe(false);
    mkdirSync(home, { mode: 0o755 });
    expectVersion(await aegis(["--version"], { XDG_CACHE_HOME: home, AEGIS_COMPILE_CACHE: "" }), "0.1.0", "default");
    expect(mainCache(join(home, "aegis", "v8", RUNTIME, "_")), "the default cache holds the command's file").toBeTruthy();
  });

  it("a cache read is kept fresh; caches not read for 30 days, in any runtime's folder, and folders left empty are removed, nothing else", async () => {
    const cache = fresh("cache");
    const env = { AEGIS_COMPILE_CACHE: cache };
    expect((await aegis(["--version"], env)).code, "first run").toBe(0);
    const used = mainCache(join(cache, RUNTIME, "_"));
    const old = new Date(Date.now() - 40 * DAY_MS);
    utimesSync(used, old, old);
    expect((await aegis(["--version"], env)).code, "a run that reads the old cache").toBe(0);
    expect(Date.now() - statSync(used).mtimeMs, "the cache read was touched").toBeLessThan(DAY_MS);

    const elsewhere = join(cache, "v0.0.0-v8-0.0-x64", "copy");
    mkdirSync(elsewhere, { recursive: true });
    const stale = join(elsewhere, "main-AAAAAAAA.1.1.v8");
    const staleTemp = join(elsewhere, "main-AAAAAAAA.1.1.v8.0123456789abcdef.tmp");
    const recent = join(elsewhere, "main-BBBBBBBB.1.1.v8");
    const notOurs = join(elsewhere, "notes.txt");
    const outside = fresh("outside.v8");
    const link = join(elsewhere, "main-CCCCCCCC.1.1.v8");
    for (const path of [stale, staleTemp, recent, notOurs, outside]) writeFileSync(path, "x");
    symlinkSync(outside, link);
    for (const path of [stale, staleTemp, notOurs, outside]) utimesSync(path, old, old);
    const empty = join(cache, "v0.0.0-v8-0.0-x64", "unused");
    mkdirSync(empty);
    // Not the cache's: a folder and an old file of the same names as its own, in folders named otherwise.
    const foreign = join(cache, "projects", "copy");
    mkdirSync(join(foreign, "empty"), { recursive: true });
    const foreignFile = join(foreign, "main-AAAAAAAA.1.1.v8");
    writeFileSync(foreignFile, "x");
    utimesSync(foreignFile, old, old);
    // A command with no cache yet writes one, and sweeps as it does, once a day.
    expect((await aegis(["copy", "--help"], env)).code, "copy --help").toBe(0);
    expect(existsSync(join(cache, RUNTIME, "copy")), "help saves nothing").toBe(false);
    expect((await aegis(["policy", "build", "policies/block-icmp-8888", "-o", fresh("bundle")], env)).code, "policy build").toBe(0);
    expect(readdirSync(join(cache, RUNTIME)), "policy build's caches").toContain("policy");
    expect(existsSync(stale), "swept within a day of the last sweep").toBe(true);
    // The last sweep was two days ago: the next save sweeps again.
    utimesSync(join(cache, ".swept"), new Date(Date.now() - 2 * DAY_MS), new Date(Date.now() - 2 * DAY_MS));
    expect((await aegis(["keygen", "-o", fresh("key")], env)).code, "keygen").toBe(0);
    expect(readdirSync(elsewhere).sort(), "what is left of the other runtime's folder").toEqual([basename(recent), basename(link), basename(notOurs)].sort());
    expect(existsSync(outside), "the symlink's target").toBe(true);
    expect(existsSync(empty), "an empty folder").toBe(false);
    expect(readdirSync(foreign).sort(), "a folder not the cache's").toEqual(["empty", basename(foreignFile)]);
  });
});
