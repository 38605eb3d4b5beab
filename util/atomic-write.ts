// One way to replace a file so that a crash leaves either the old content or
// the new, never a torn mix: write a temp file beside it, fsync, rename over
// the target, fsync the directory (so the rename itself is durable).
// https://lwn.net/Articles/457667/
import { randomBytes } from "node:crypto";
import { open, readdir, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

export interface AtomicWriteOptions {
  /** File mode of a newly written file; default 0o644. */
  mode?: number;
}

/** The suffix of atomicWrite's temp files, so a start-up can clean what a crash left. */
export const TEMP_SUFFIX = ".aegis-tmp";

export async function atomicWrite(path: string, data: string | Uint8Array, options: AtomicWriteOptions = {}): Promise<void> {
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString("hex")}${TEMP_SUFFIX}`);
  try {
    const handle = await open(temp, "wx", options.mode ?? 0o644);
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
  await syncDir(dirname(path));
}

/** fsync a directory, so renames and creations in it survive a power loss. */
export async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Removes the temp files atomicWrite left in `dir` when a process died mid-write. */
export async function removeStaleTemps(dir: string): Promise<void> {
  const names = await readdir(dir).catch(() => []);
  await Promise.all(names.filter((n) => n.endsWith(TEMP_SUFFIX)).map((n) => rm(join(dir, n), { force: true })));
}
