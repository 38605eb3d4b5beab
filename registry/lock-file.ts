// An exclusive lock file that processes sharing a directory take in turn: the
// OCI layout's index.json.lock (registry/layout.ts). Node has no flock(2)
// without an FFI, whose loading a short command would pay for, so the lock is
// a file created with O_EXCL. One left by a crashed writer is broken once it
// is stale. A lock is taken away only if it is the file meant (its inode and
// modification time), checked before and after renaming it aside, so a
// writer releasing a lock broken and taken by another leaves that one, and
// two waiters breaking one stale lock do not both remove a lock (takeAway
// says the one case left open).
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

/**
 * Which file a lock is: its inode number, reused once its file is gone, and
 * its modification time. Two locks alike in both would be made within one
 * tick of the file system's clock (coarse on older kernels) on a reused
 * inode; a lock is broken only once it is stale, seconds old, so a break
 * never meets its successor so soon.
 */
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

/** Whether `file` is the lock `meant`. */
function isLock(file: LockIdentity, meant: LockIdentity): boolean {
  return file.ino === meant.ino && file.mtimeNs === meant.mtimeNs;
}

/** The name of a lock takeAway set aside: `<lock>.<16 hex>.gone`. */
export function isSetAside(name: string): boolean {
  return /\.lock\.[0-9a-f]{16}\.gone$/.test(name);
}

/**
 * Removes the lock at `path` if it is still the file `meant`: checked, then
 * renamed aside (a rename is atomic: of two waiters breaking one stale lock,
 * one moves it), then checked again, since another writer may have taken the
 * lock between the check and the rename (two system calls apart). Such a
 * lock is put back: linked, or where links fail (a file system without
 * them, protected_hardlinks) renamed. Two cases are left open, each needing
 * a writer to act within that moment: a third writer that takes the free
 * place holds the lock beside the writer whose lock was moved; a holder that
 * releases finds no lock, and the one put back waits to be broken as stale.
 */
async function takeAway(path: string, meant: LockIdentity): Promise<void> {
  const there = await stat(path, { bigint: true }).catch(() => undefined);
  if (!there || !isLock(there, meant)) return;
  const aside = `${path}.${randomBytes(8).toString("hex")}.gone`;
  try {
    await rename(path, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  if (!isLock(await stat(aside, { bigint: true }), meant)) {
    try {
      await link(aside, path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") return rename(aside, path);
    }
  }
  await rm(aside, { force: true });
}
