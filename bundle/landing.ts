// Where a pull's files land: they are unpacked into a temp directory and moved
// into the output directory only once verified. Into a directory that does not
// exist yet, the temp directory itself, made beside it, is renamed into place
// (rename(2) of a directory is one step), so policy.json and program.o appear
// together or not at all. Into an existing directory, which may hold other
// files, each file is renamed in, one after the other: a rename that fails
// puts back what the first one replaced, but a pull killed between the two
// renames leaves one file of each version. Both files are synced
// before they get their names, and the names after, so a power loss leaves a
// file whole or absent, never empty. Temp directories that
// killed pulls left (SIGKILL, a crash) are swept by the next pull into the
// same place once unchanged for an hour (a pull under way writes into its own
// as the bytes come): only this user's, and only by the names made here.
import { randomBytes } from "node:crypto";
import { chmod, link, mkdir, mkdtemp, rename, rm, rmdir, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { InputError } from "../errors.js";
import { isMkdtempName, removeStaleTemps, STALE_TEMP_MS, syncDir, syncFile, writeError } from "../util/index.js";

/** A pull's temp directory: `.aegis-pull-*` inside an existing output directory, `.<output>.aegis-pull-*` beside a new one. */
const TEMP = ".aegis-pull-";

/** The temp directories' names beside a new output directory: twelve hex digits after `.<output>.aegis-pull-` (inside an existing one, mkdtemp's). */
const BESIDE_SUFFIX = /^[0-9a-f]{12}$/;

/**
 * Runs `unpack` into a fresh temp directory and, if it returns files, moves
 * them into `output` (made, with its parents, if missing). The temp
 * directory is gone afterwards, whatever happened.
 */
export async function land<T extends { files: string[] } | undefined>(output: string, unpack: (dir: string) => Promise<T>): Promise<T> {
  // `out/.` (and "", ".") resolved, so it names the directory itself, not a "." in it; any other path as given (`link/..` is the kernel's to read).
  const last = basename(output);
  const target = last === "" || last === "." ? resolve(output) : output;
  const parent = dirname(target);
  const beside = `.${basename(target)}${TEMP}`;
  const existing = await stat(target).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return undefined;
    throw err;
  });
  if (existing && !existing.isDirectory()) throw new InputError("INVALID_ARGUMENT", `${output} is not a directory`);
  // A step on the way to `output` failed: named as the output (writeError), not as the temp directory.
  const cannotWrite = (err: unknown): never => {
    throw writeError(output, err);
  };
  // Only names this module makes (mkdtemp's six characters, or twelve hex digits): `x.aegis-pull-y`'s are not `x`'s.
  if (existing) await removeStaleTemps(target, { match: (name) => isMkdtempName(TEMP, name), olderThanMs: STALE_TEMP_MS });
  else await mkdir(parent, { recursive: true }).catch(cannotWrite);
  await removeStaleTemps(parent, { match: (name) => name.startsWith(beside) && BESIDE_SUFFIX.test(name.slice(beside.length)), olderThanMs: STALE_TEMP_MS });

  const temp = existing ? await mkdtemp(join(target, TEMP)).catch(cannotWrite) : join(parent, beside + randomBytes(6).toString("hex"));
  // Named as the output: the temp directory is this module's business (`/proc/.x.aegis-pull-…: no such file` said little).
  if (!existing) await mkdir(temp).catch(cannotWrite);
  try {
    // Beside a new directory: made as mkdir makes one (the umask's mode, the parent's setgid), the mode it gets back
    // once the files are verified, as it becomes the output directory; until then it is this user's alone, as
    // mkdtemp's are, so no one else reads bytes not yet verified. Not if a chmod would cost it its setgid bit.
    let restore = existing ? undefined : (await stat(temp)).mode & 0o7777;
    if (restore !== undefined) {
      await chmod(temp, 0o700 | (restore & 0o2000));
      if (restore & 0o2000 && !((await stat(temp)).mode & 0o2000)) {
        // That chmod cleared its setgid bit (chmod(2): a user outside the folder's group, without CAP_FSETID). Still
        // empty: made again as mkdir makes it, and left so.
        await rmdir(temp);
        await mkdir(temp);
        restore = undefined;
      }
    }
    const unpacked = await unpack(temp);
    if (!unpacked) return unpacked;
    // On disk before they get their names, and the names after: after a power loss a pulled file is whole or
    // absent, never empty (a rename can reach the disk before the data does). skopeo syncs its blobs so too.
    await Promise.all(unpacked.files.map((name) => syncFile(join(temp, name))));
    if (existing) {
      await moveFiles(temp, target, unpacked.files);
      await syncDir(target);
      return unpacked;
    }
    if (restore !== undefined) await chmod(temp, restore);
    // Its entries on disk before it gets its name, so after a power loss the directory holds both files or is not there.
    await syncDir(temp);
    const renamed = await rename(temp, target).then(
      () => true,
      (err: NodeJS.ErrnoException) => {
        // Made meanwhile, and not empty (another pull, or by hand): the files go in one by one.
        if (err.code !== "ENOTEMPTY" && err.code !== "EEXIST") return cannotWrite(err);
        return false;
      },
    );
    if (!renamed) await moveFiles(temp, target, unpacked.files);
    await syncDir(renamed ? parent : target);
    return unpacked;
  } finally {
    await rm(temp, { recursive: true, force: true });
  }
}

/**
 * Moves `files` from `from` into the existing directory `to`, one rename
 * each. If one fails (a file in the way that cannot be replaced), those
 * already moved are undone, so `to` keeps its previous files rather than one
 * of each version: a replaced file comes back from a hard link kept in
 * `from` (removed with it), a new one is removed. A file system without hard
 * links leaves a replaced file replaced.
 */
async function moveFiles(from: string, to: string, files: string[]): Promise<void> {
  const moved: { name: string; existed: boolean; kept: boolean }[] = [];
  for (const name of files) {
    const previous = join(from, `.previous-${name}`);
    const kept = await link(join(to, name), previous).then(
      () => ({ existed: true, kept: true }),
      (err: NodeJS.ErrnoException) => ({ existed: err.code !== "ENOENT", kept: false }),
    );
    try {
      await rename(join(from, name), join(to, name));
    } catch (err) {
      for (const undo of moved.reverse()) {
        const path = join(to, undo.name);
        await (undo.kept ? rename(join(from, `.previous-${undo.name}`), path) : undo.existed ? Promise.resolve() : rm(path, { force: true })).catch(() => undefined);
      }
      throw writeError(join(to, name), err);
    }
    moved.push({ name, ...kept });
  }
}
