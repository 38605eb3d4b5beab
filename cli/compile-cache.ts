// The CLI's compiled code, kept between runs (issue 10: start-up time). What
// a short command spends beyond Node's own start-up is mostly V8 parsing and
// compiling the bundle's files (dist/cli, scripts/bundle-cli.mjs) and the
// functions in them as each is first called. A V8 code cache of each file,
// made as a run ends (or just before it first changes a V8 flag) and handed
// back to V8 on the next, skips that.
// Node 22 can do this for every module (module.enableCompileCache()), but it
// caches a file as compiled when it loads, before any of its functions ran,
// and Node 20 cannot at all; so the CLI does it for its own files, through
// vm.Script's cachedData, the same way on every Node version.
// https://v8.dev/blog/code-caching-for-devs
//
// Where: $AEGIS_COMPILE_CACHE ("off" turns it off), else ~/.cache/aegis/v8
// ($XDG_CACHE_HOME/aegis/v8); in it a folder per Node version, architecture
// (and V8) and node options, and in that one per command: a file's cache is
// made when missing or refused, by a run of a command that loads the file and
// succeeds (not one that asks for help), and holds what that run compiled;
// `aegis --version` compiles little of what `aegis copy` calls, so commands
// keep their own. The folder should hold nothing else: the daily sweep
// removes old caches from the folders in it named as this module names them.
//
// A cache is code the CLI runs. Node 20's V8 does not check a cache's bytes
// (a flipped bit ran as wrong code, or crashed V8, in a reviewer's trial), so
// each file starts with the sha256 of the rest. The folder and every folder
// above it must be this user's or root's, and no one else's to write (a
// sticky folder such as /tmp may be above it); the runtime and command
// folders and the files are this user's alone, not symlinks, and a file has
// one link. Files are written under new names and renamed into place.
// Anything wrong with a cache (absent, unreadable, refused by V8,
// unwritable) costs only the compile it would have saved.
//
// The same hook loads the bundle's files that another of them requires by
// name from their folder, past Node's resolution (requireInBundle, below).
import {
  closeSync,
  constants,
  fstatSync,
  futimesSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
  type Stats,
} from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { beforeFirstV8FlagChange, v8FlagsChanged } from "../util/v8-flags.js";
import { env, userCache } from "./env.js";

/** The part of Node's CommonJS loader replaced here: _compile(source, filename) runs a module's code. */
interface CompilingModule {
  exports: unknown;
  paths: string[];
  _compile(content: string, filename: string, ...rest: unknown[]): unknown;
}

/** A file compiled without a cache this run, to make one for. */
interface Compiled {
  script: import("node:vm").Script;
  cacheFile: string;
}

/** A cache made, to write when the run has succeeded. */
interface Made {
  data: Buffer;
  cacheFile: string;
}

/** The wrapper Node's loader puts around a CommonJS module; the source follows on the same line. */
const WRAPPER = "(function (exports, require, module, __filename, __dirname) { ";
/** The sha256 of the rest of a cache file, at its start. */
const CHECKSUM_BYTES = 32;
const DAY_MS = 24 * 3600_000;
/** Cache files not read for this long (a read touches a file a day old) are an older build's, and removed by the daily sweep. */
const STALE_MS = 30 * DAY_MS;
/** In the cache's folder: its time is the last sweep's. */
const SWEPT = ".swept";

/**
 * Where the bundle's files are: those in this folder, and only those, go
 * through the cache. import.meta.url is this file's, which is bundled into
 * dist/cli/aegis.cjs.
 */
const BUNDLE_DIR = dirname(fileURLToPath(import.meta.url));

/**
 * Compiles the bundle's files loaded from now on with their cached code, and
 * makes caches for those that had none when the process exits. Call once,
 * before the command's code loads (cli/aegis.ts). Never throws: without a
 * home directory, say, the command runs without a cache.
 */
export function enableCompileCache(): void {
  try {
    const setting = env("AEGIS_COMPILE_CACHE");
    const options = [...process.execArgv, process.env.NODE_OPTIONS ?? ""].join("\n").trim();
    // A policy manifest (--experimental-policy) checks each file as Node's own loader reads it: not bypassed.
    if (setting === "off" || /--experimental-policy|--policy-integrity/.test(options)) return;
    const root = trustedRoot(resolve(setting ?? userCache("v8")));
    if (root === undefined) return;
    const runtime = join(root, runtimeName(options));
    const dir = join(runtime, commandOf(process.argv));
    if (folderKind(runtime) === "other" || folderKind(dir) === "other") return;
    hookCompile(root, dir);
  } catch {
    // The command runs as Node would run it.
  }
}

/** The runtime's folder: Node's and V8's versions, the architecture, and a digest of the options Node started with (they may set V8 flags). */
function runtimeName(options: string): string {
  const digest = options === "" ? "" : `-${sha256(Buffer.from(options)).toString("hex").slice(0, 12)}`;
  return `${process.version}-v8-${process.versions.v8}-${process.arch}${digest}`;
}

/** Names of the folders runtimeName() and commandOf() make: the sweep enters no other. */
const RUNTIME_FOLDER = /^v\d+\.\d+\.\d+-v8-[\w.-]+$/;
const COMMAND_FOLDER = /^([a-z][a-z-]{0,31}|_)$/;
/** A bundle file as another requires it: `./chunk-ABCD1234.cjs`. */
const BUNDLE_FILE = /^\.\/([\w-]+\.cjs)$/;
/** Names of the files saveCache() writes. */
const CACHE_FILE = /^[\w-]+\.\d+\.\d+\.v8(\.[0-9a-f]{16}\.tmp)?$/;

/**
 * The cache's folder with symlinks resolved, if it and every folder above
 * it are this user's or root's and no one else can write them (a sticky
 * folder may be above it): then no other user can move anything on the way
 * to a cache. Missing folders at the end are made later, by saveCaches.
 */
function trustedRoot(path: string): string | undefined {
  let existing = path;
  let missing = "";
  for (;;) {
    try {
      existing = realpathSync(existing);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT" || dirname(existing) === existing) return undefined;
      missing = join(basename(existing), missing);
      existing = dirname(existing);
    }
  }
  for (let folder = existing; ; folder = dirname(folder)) {
    const stat = statSync(folder);
    const owner = stat.uid === process.geteuid?.() || stat.uid === 0;
    const othersWrite = (stat.mode & 0o022) !== 0;
    const sticky = (stat.mode & 0o1000) !== 0;
    if (!stat.isDirectory() || !owner || (othersWrite && (folder === existing || !sticky))) return undefined;
    if (dirname(folder) === folder) return join(existing, missing);
  }
}

/** What `dir` is: missing (made on the first save), a folder (not a symlink) that is this user's alone, or anything else. */
function folderKind(dir: string): "missing" | "ours" | "other" {
  try {
    const stat = lstatSync(dir, { throwIfNoEntry: false });
    if (stat === undefined) return "missing";
    return stat.isDirectory() && ours(stat) ? "ours" : "other";
  } catch {
    return "other";
  }
}

/** Whether a file or folder is this user's and no one else can write it. */
function ours(stat: Stats): boolean {
  return stat.uid === process.geteuid?.() && (stat.mode & 0o022) === 0;
}

/**
 * The folder of the command the arguments name: flags (--version) share one.
 * Caches are made only when the command succeeds, so a mistyped name makes
 * no folder.
 */
function commandOf(argv: readonly string[]): string {
  const first = argv[2];
  return first !== undefined && /^[a-z][a-z-]{0,31}$/.test(first) ? first : "_";
}

/** Whether the run only prints help (`aegis help …`, `aegis trust help push`, --help): its caches would hold little of what the command runs. */
function asksForHelp(argv: readonly string[]): boolean {
  return argv.slice(2).some((arg) => arg === "help" || arg === "--help" || arg === "-h");
}

function sha256(data: Uint8Array): Buffer {
  return process.getBuiltinModule("node:crypto").createHash("sha256").update(data).digest();
}

function hookCompile(root: string, dir: string): void {
  const { Module, createRequire } = process.getBuiltinModule("node:module");
  const { constants: vmConstants, Script } = process.getBuiltinModule("node:vm");
  const compiled: Compiled[] = [];
  const loader = Module.prototype as unknown as CompilingModule;
  const compile = loader._compile;
  loader._compile = function (this: CompilingModule, content, filename, ...rest) {
    // A file loaded once a command has changed V8's flags (util/jit.ts) could use only a cache made under
    // the same flags, which the next run does not start with: it is compiled as Node would, as is anything
    // but a plain CommonJS file of the bundle.
    if (dirname(filename) !== BUNDLE_DIR || !filename.endsWith(".cjs") || content.startsWith("#!") || v8FlagsChanged()) {
      return compile.call(this, content, filename, ...rest);
    }
    let cacheFile: string;
    try {
      cacheFile = cacheFileOf(dir, filename);
    } catch {
      return compile.call(this, content, filename, ...rest);
    }
    const cachedData = readCache(cacheFile);
    const script = new Script(`${WRAPPER}${content}\n})`, {
      filename,
      cachedData,
      columnOffset: -WRAPPER.length,
      importModuleDynamically: vmConstants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
    });
    if (cachedData === undefined || script.cachedDataRejected === true) compiled.push({ script, cacheFile });
    const wrapper = script.runInThisContext() as (...args: unknown[]) => unknown;
    outside ??= { require: createRequire(filename), paths: this.paths };
    return wrapper.call(this.exports, this.exports, requireInBundle, this, filename, BUNDLE_DIR);
  };
  // What the bundle's files require. Another of its files (`./<chunk>.cjs`, as scripts/bundle-cli.mjs
  // writes them) is loaded by name from BUNDLE_DIR into the module cache, as Node's loader would, but with
  // none of its path work: about five path.resolve calls a file, each over the whole path, enough for
  // V8 to compile Node's normalizeString with TurboFan (before a pull turns it off, util/jit.ts) once the
  // bundle lies 20 characters deep or more, and a pull of 50 MiB then peaked ~4 MiB higher (bench/cli.ts,
  // --trace-opt). Anything else (node:*, packages) goes to a require made once for the folder
  // (createRequire: Node's resolution and module cache, no module.parent links, which nothing reads).
  let outside: { require: NodeJS.Require; paths: string[] } | undefined;
  const requireInBundle = (id: string): unknown => {
    const name = BUNDLE_FILE.exec(id)?.[1];
    if (name === undefined) return outside!.require(id);
    const filename = `${BUNDLE_DIR}/${name}`;
    const cache = outside!.require.cache;
    const loaded = cache[filename];
    if (loaded) return loaded.exports;
    let content: string;
    try {
      content = readFileSync(filename, "utf8");
    } catch {
      // Gone (an upgrade under a running command): Node's loader says so as it would (MODULE_NOT_FOUND).
      return outside!.require(id);
    }
    const module = new Module(filename);
    module.filename = filename;
    // For a file compiled by Node's own _compile (after a flag change): its require resolves packages from here.
    module.paths = outside!.paths;
    cache[filename] = module;
    try {
      (module as unknown as CompilingModule)._compile(content, filename);
    } catch (err) {
      Reflect.deleteProperty(cache, filename);
      throw err;
    }
    module.loaded = true;
    return module.exports;
  };
  // The caches are made when V8 has compiled every function the command called so far, so they hold
  // those too, not only the files' top-level code: at exit, or just before the first flag change, after
  // which V8 would stamp them with flags the next run does not start with.
  // An empty cache (V8 makes none for some code) would only be refused and made again on every run.
  const make = (): Made[] => compiled.map(({ script, cacheFile }) => ({ data: script.createCachedData(), cacheFile })).filter(({ data }) => data.byteLength > 0);
  let made: Made[] | undefined;
  const listening = beforeFirstV8FlagChange(() => {
    try {
      made = make();
    } catch {
      made = [];
    }
  });
  if (!listening) return; // a flag was set before (not by this CLI today): nothing could be cached
  process.on("exit", (code) => {
    try {
      if (code === 0 && !asksForHelp(process.argv)) saveCaches(root, dir, made ?? make());
    } catch {
      // Whatever goes wrong here, the command's output and exit code are its own.
    }
  });
}

/**
 * A cache is named for its file's name (esbuild names a chunk for a hash of
 * its content), size and modification time: V8 checks only that a source
 * has the length its cache was made from, so a file rebuilt in place gets a
 * cache of its own, never one of its earlier build.
 * Joined by hand (`dir` is already normalized): a path.join for each file
 * loaded, on top of Node's loader's own path work, was enough for V8 to
 * compile Node's normalizeString with TurboFan before a pull turned it off
 * (util/jit.ts), paging in ~3.5 MiB of the compiler's code, most of what
 * the cache had added to the pull's peak RSS (bench/cli.ts, --trace-opt).
 */
function cacheFileOf(dir: string, filename: string): string {
  const { size, mtimeMs } = statSync(filename);
  return `${dir}/${basename(filename, ".cjs")}.${size}.${Math.trunc(mtimeMs)}.v8`;
}

/** The cached data in `cacheFile`, if it is this user's alone, has one link and its checksum holds. */
function readCache(cacheFile: string): Buffer | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(cacheFile, constants.O_RDONLY | constants.O_NOFOLLOW);
    const stat = fstatSync(fd);
    if (!stat.isFile() || !ours(stat) || stat.nlink !== 1 || stat.size < CHECKSUM_BYTES) return undefined;
    const data = readFileSync(fd);
    const cachedData = data.subarray(CHECKSUM_BYTES);
    if (!sha256(cachedData).equals(data.subarray(0, CHECKSUM_BYTES))) return undefined;
    if (Date.now() - stat.mtimeMs > DAY_MS) touch(fd);
    return cachedData;
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Moves a cache's time on, once a day at most, so the sweep keeps what is read; a cache that cannot be touched is still used. */
function touch(fd: number): void {
  try {
    futimesSync(fd, new Date(), new Date());
  } catch {
    // Read-only storage: the cache is still good.
  }
}

/** Writes the caches this run made. */
function saveCaches(root: string, dir: string, made: readonly Made[]): void {
  try {
    if (made.length === 0) return;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (folderKind(dir) !== "ours") return;
    for (const { data, cacheFile } of made) saveCache(data, cacheFile);
    sweepDaily(root);
  } catch {
    // A full disk or a read-only home: the next run compiles again, as this one did.
  }
}

function saveCache(data: Buffer, cacheFile: string): void {
  // A random name, not the pid: in a container every run may have the same pid, and a file left by one
  // that was killed would block the name.
  const temp = `${cacheFile}.${process.getBuiltinModule("node:crypto").randomBytes(8).toString("hex")}.tmp`;
  let written = false;
  try {
    // "wx": a new file, never one (or a symlink) already there.
    writeFileSync(temp, Buffer.concat([sha256(data), data]), { mode: 0o600, flag: "wx" });
    written = true;
    renameSync(temp, cacheFile);
    written = false;
  } catch {
    // This file's cache is not written; the others still are.
  } finally {
    if (written) rmSync(temp, { force: true });
  }
}

/**
 * Once a day (the time of root/.swept): removes cache files and leftover
 * temporary ones not read for STALE_MS, an older build's, and folders left
 * empty. It enters only folders named as runtimeName() and commandOf() name
 * them, that are this user's alone and not symlinks, and removes only
 * regular files named as saveCache() names them; anything else is left alone.
 */
function sweepDaily(root: string): void {
  const swept = join(root, SWEPT);
  const now = Date.now();
  try {
    if (now - statSync(swept).mtimeMs < DAY_MS) return;
    utimesSync(swept, new Date(now), new Date(now));
  } catch {
    writeFileSync(swept, "", { mode: 0o600 });
  }
  for (const runtime of readdirSync(root)) {
    const runtimeDir = join(root, runtime);
    if (!RUNTIME_FOLDER.test(runtime) || folderKind(runtimeDir) !== "ours") continue;
    for (const command of readdirSync(runtimeDir)) {
      const folder = join(runtimeDir, command);
      if (!COMMAND_FOLDER.test(command) || folderKind(folder) !== "ours") continue;
      for (const entry of readdirSync(folder, { withFileTypes: true })) {
        if (!entry.isFile() || !CACHE_FILE.test(entry.name)) continue;
        const path = join(folder, entry.name);
        try {
          if (now - lstatSync(path).mtimeMs > STALE_MS) rmSync(path, { force: true });
        } catch {
          // Gone already: another run swept it.
        }
      }
      removeIfEmpty(folder);
    }
    removeIfEmpty(runtimeDir);
  }
}

function removeIfEmpty(folder: string): void {
  try {
    rmdirSync(folder);
  } catch {
    // Not empty, or made again by another run: kept.
  }
}
