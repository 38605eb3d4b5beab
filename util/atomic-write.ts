// One way to replace a file so that a crash leaves either the old content or
// the new, never a torn mix: write a temp file beside it, fsync, rename over
// the target, fsync the directory (so the rename itself is durable). Several
// files (a fleet edit) are all written before any is renamed.
// https://lwn.net/Articles/457667/
import { randomBytes } from "node:crypto";
import { statSync, utimesSync, type Stats } from "node:fs";
import { lstat, mkdtemp, open, readdir, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { InputError } from "../errors.js";

export interface AtomicWriteOptions {
  /** File mode of a newly written file; default 0o644. */
  mode?: number;
}

/** The suffix of atomicWrite's temp files, so a start-up can clean what a crash left. */
export const TEMP_SUFFIX = ".aegis-tmp";

/**
 * A fresh temp file's path beside `path` (`.<name>.<random>.aegis-tmp`):
 * random, as a process id repeats (PID 1 in every container), so a file a
 * killed writer left never stops the next.
 */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${randomBytes(6).toString("hex")}${TEMP_SUFFIX}`);
}

/** Whether `name` is one mkdtemp(prefix) makes: the prefix and six characters of [A-Za-z0-9] (glibc's; musl's are among them). */
export function isMkdtempName(prefix: string, name: string): boolean {
  return name.startsWith(prefix) && /^[A-Za-z0-9]{6}$/.test(name.slice(prefix.length));
}

/** Whether `name` (in `path`'s folder) is one of tempPathFor(path)'s names: for a sweep of one file's temps alone. */
export function isTempFor(path: string, name: string): boolean {
  const prefix = `.${basename(path)}.`;
  const rest = name.slice(prefix.length);
  return name.startsWith(prefix) && rest.endsWith(TEMP_SUFFIX) && /^[0-9a-f]{12}$/.test(rest.slice(0, -TEMP_SUFFIX.length));
}

export async function atomicWrite(path: string, data: string | Uint8Array, options: AtomicWriteOptions = {}): Promise<void> {
  await atomicWriteAll([{ path, data, mode: options.mode }]);
}

/** One file for atomicWriteAll: its path, new content and mode (default 0o644 less the umask). */
export interface AtomicWriteFile {
  path: string;
  data: string | Uint8Array;
  mode?: number;
}

/**
 * Replaces several files together, as far as a file system allows: every new
 * content is written and synced beside its target before the first rename,
 * so a failure while writing (a full disk, a missing directory, a crash)
 * leaves every target as it was. Only a rename, which moves no data, can
 * still fail between two targets.
 */
export async function atomicWriteAll(files: readonly AtomicWriteFile[]): Promise<void> {
  const temps: string[] = [];
  /** The file being written or renamed: a failure names it, not its temp file. */
  let current = files[0]?.path ?? "";
  try {
    for (const { path, data, mode } of files) {
      current = path;
      const temp = tempPathFor(path);
      const handle = await open(temp, "wx", mode ?? 0o644);
      temps.push(temp);
      try {
        // The mode asked for, not the umask's cut of it (a fleet file keeps its own).
        if (mode !== undefined) await handle.chmod(mode);
        await handle.writeFile(data);
        await handle.sync();
      } finally {
        await handle.close();
      }
    }
    for (const [i, temp] of temps.entries()) {
      current = files[i]!.path;
      await rename(temp, current);
    }
  } catch (err) {
    // Renamed temps are gone already (force ignores them); a failure to remove one must not hide why the write failed.
    await Promise.allSettled(temps.map((temp) => rm(temp, { force: true })));
    throw writeError(current, err);
  }
  for (const dir of new Set(files.map((f) => dirname(f.path)))) await syncDir(dir);
}

/**
 * Why `path` could not be written, naming it rather than the temp file the
 * system error names (`.x.3f2a….aegis-tmp: is a directory -> 'x'`): a
 * missing folder or a directory in the way is the path's fault (an input
 * error); anything else (a full disk, no permission) keeps the system's words.
 * For any step that writes `path` through a temp file.
 */
export function writeError(path: string, err: unknown): Error {
  const code = (err as NodeJS.ErrnoException).code;
  const folderMissing = (code === "ENOENT" || code === "ENOTDIR") && !statSync(dirname(path), { throwIfNoEntry: false })?.isDirectory();
  if (folderMissing) return new InputError("FILE_NOT_FOUND", `cannot write ${path}: ${dirname(path)} is not a directory`);
  if (code === "EISDIR") return new InputError("INVALID_ARGUMENT", `cannot write ${path}: it is a directory`);
  // "ENOSPC: no space left on device, write" without the call and the temp file's name.
  return code ? Object.assign(new Error(`cannot write ${path}: ${(err as Error).message.replace(/, \w+( '.*)?$/, "")}`), { code }) : (err as Error);
}

/** fsync a file: its data on disk before it is renamed into place, so a power loss leaves it whole or absent. */
export async function syncFile(path: string): Promise<void> {
  const handle = await open(path, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * fsync a directory, so renames and creations in it survive a power loss.
 * Where that cannot be done, the entries are in place all the same and it is
 * let be, as restic and coreutils do: a file system with no fsync of
 * directories (EINVAL: VirtualBox shared folders, older CIFS; ENOTSUP,
 * EBADF), or a folder this user may write but not read (EACCES).
 */
export async function syncDir(dir: string): Promise<void> {
  await syncFile(dir).catch((err: NodeJS.ErrnoException) => {
    if (!["EINVAL", "ENOTSUP", "EBADF", "EACCES"].includes(err.code ?? "")) throw err;
  });
}

export interface StaleTempOptions {
  /** Which names are temp files; default atomicWrite's (TEMP_SUFFIX). */
  match?: (name: string) => boolean;
  /** Only those unchanged this long (ms): a write under way elsewhere changes its file as its bytes come. Default 0: all. */
  olderThanMs?: number;
}

/**
 * How long a command's temp file or directory must be unchanged to be taken
 * for a killed one's: its bytes come in seconds apart at worst (a registry
 * that stalls longer is timed out), and a step that only reads its temp
 * directory keeps it fresh (keepFresh).
 */
export const STALE_TEMP_MS = 60 * 60 * 1000;

/**
 * Touches `dir` every `everyMs` until the returned stop is called, so a temp
 * directory that a long step only reads from (a capsule's staging layout
 * while its tar is written, or while an import pushes) still looks alive to
 * removeStaleTemps elsewhere. A touch that fails is let be: a directory
 * removed under the step fails it anyway.
 */
export function keepFresh(dir: string, everyMs = STALE_TEMP_MS / 12): () => void {
  // One quick syscall, made in place: no touch is still under way once stopped (the caller removes `dir` next).
  const timer = setInterval(() => {
    try {
      const now = new Date();
      utimesSync(dir, now, now);
    } catch {
      // Gone or not ours: the step fails on its own if that matters.
    }
  }, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}

/**
 * A temp directory `<parent>/<prefix>XXXXXX` (mkdtemp's) for a long step:
 * those that killed runs left there (and any other name `alsoSweep` takes)
 * are swept first, and this one is kept fresh (keepFresh) until `release`
 * removes it.
 */
export async function makeTempDir(parent: string, prefix: string, alsoSweep: (name: string) => boolean = () => false): Promise<{ dir: string; release: () => Promise<void> }> {
  await removeStaleTemps(parent, { match: (name) => isMkdtempName(prefix, name) || alsoSweep(name), olderThanMs: STALE_TEMP_MS });
  const dir = await mkdtemp(join(parent, prefix));
  const stopTouching = keepFresh(dir);
  return {
    dir,
    release: async () => {
      stopTouching();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Removes the temp files a process left in `dir` when it died mid-write
 * (atomicWrite's, or those `match` names); a temp directory goes whole.
 * Housekeeping, so it never fails: what cannot be judged or removed stays.
 * Only this user's entries are touched (`dir` may be shared, /tmp), and only
 * in a folder no one else can rename them in, where they could swap one for
 * their own while it is removed: one this user's or root's that no one else
 * may write, or root's with the sticky bit (/tmp), as cli/compile-cache.ts
 * trusts its folders.
 */
export async function removeStaleTemps(dir: string, options: StaleTempOptions = {}): Promise<void> {
  const { match = (name: string) => name.endsWith(TEMP_SUFFIX), olderThanMs = 0 } = options;
  const before = Date.now() - olderThanMs;
  const folder = await stat(dir).catch(() => undefined);
  if (!folder || !onlyOursToRename(folder)) return;
  const names = (await readdir(dir).catch(() => [])).filter(match);
  await Promise.all(
    names.map(async (name) => {
      const path = join(dir, name);
      try {
        const entry = await lstat(path);
        if (entry.uid !== process.geteuid?.()) return;
        if (olderThanMs > 0 && (await lastChange(path, entry)) >= before) return;
        await rm(path, { recursive: true, force: true });
      } catch {
        // Gone already, or not ours to remove: it stays.
      }
    }),
  );
}

function onlyOursToRename(folder: Stats): boolean {
  const owner = folder.uid === process.geteuid?.() || folder.uid === 0;
  const othersWrite = (folder.mode & 0o022) !== 0;
  const stickyRoot = (folder.mode & 0o1000) !== 0 && folder.uid === 0;
  return owner && (!othersWrite || stickyRoot);
}

/**
 * When `path` (whose lstat is `entry`) last changed (ms): its mtime, or a
 * directory's newest of its own and its entries' (a file written inside
 * changes only itself).
 */
async function lastChange(path: string, entry: Stats): Promise<number> {
  if (!entry.isDirectory()) return entry.mtimeMs;
  const names = await readdir(path);
  const times = await Promise.all(names.map((name) => lstat(join(path, name)).then((s) => s.mtimeMs, () => Infinity)));
  return times.reduce((newest, time) => Math.max(newest, time), entry.mtimeMs);
}
