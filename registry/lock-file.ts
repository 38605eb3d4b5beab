// An exclusive lock file that processes sharing a directory take in turn: the
// OCI layout's index.json.lock (registry/layout.ts). Node has no flock(2)
// without an FFI, whose loading a short command would pay for, so the lock is
// a file created with O_EXCL. One left by a crashed writer is broken once it
// is stale; a lock is only ever taken away by renaming it aside first and
// checking that what was moved is the file meant (its inode and modification
// time), so two waiters breaking the same stale lock, or a writer releasing a
// lock broken and taken by another, never remove a lock someone holds.
import { randomBytes } from "node:crypto";
import { link, open, rename, rm, stat } from "node:fs/promises";
import { sleep } from "../util/index.js";
import { RegistryError } from "./errors.js";

/** A lock file older than this was left by a crashed writer (index updates take milliseconds). */
const LOCK_STALE_MS = 10_000;
/** Writers wait this long, well past LOCK_STALE_MS, so a stale lock is always broken before anyone gives up. */
const LOCK_TIMEOUT_MS = 30_000;

export interface LockOptions {
  staleMs?: number;
  timeoutMs?: number;
}

/** Which file a lock is: an inode number is reused once its file is gone, an inode and a modification time in nanoseconds are not. */
interface LockIdentity {
  ino: bigint;
  mtimeNs: bigint;
}

/** Takes the lock at `path`, waiting for its holder; resolves with its release. */
export async function lockFile(path: string, options: LockOptions = {}): Promise<() => Promise<void>> {
  const { staleMs = LOCK_STALE_MS, timeoutMs = LOCK_TIMEOUT_MS } = options;
  const giveUp = Date.now() + timeoutMs;
  for (;;) {
    let handle;
    try {
      handle = await open(path, "wx");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const held = await stat(path, { bigint: true }).catch(() => undefined);
      if (held && Date.now() - Number(held.mtimeMs) > staleMs) await takeAway(path, held);
      if (Date.now() > giveUp) throw new RegistryError("LOCK_TIMEOUT", `could not lock ${path} within ${timeoutMs / 1000} s`);
      await sleep(10);
      continue;
    }
    const own = await handle.stat({ bigint: true }).finally(() => handle.close());
    return () => takeAway(path, own);
  }
}

/**
 * Removes the lock at `path` if it is still the file `meant`. It is renamed
 * aside first (a rename is atomic: of two waiters breaking one stale lock,
 * one moves it), then checked: a lock taken in the meantime by someone else
 * is linked back in place, unless yet another writer took the place since.
 */
async function takeAway(path: string, meant: LockIdentity): Promise<void> {
  const aside = `${path}.${randomBytes(8).toString("hex")}.gone`;
  try {
    await rename(path, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  try {
    const moved = await stat(aside, { bigint: true });
    if (moved.ino !== meant.ino || moved.mtimeNs !== meant.mtimeNs) {
      await link(aside, path).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== "EEXIST") throw err;
      });
    }
  } finally {
    await rm(aside, { force: true });
  }
}
