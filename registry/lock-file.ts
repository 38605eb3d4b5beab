// An exclusive lock file that processes sharing a directory take in turn: the
// OCI layout's index.json.lock (registry/layout.ts). Node has no flock(2)
// without an FFI, whose loading a short command would pay for, so the lock is
// a file created with O_EXCL. One left by a crashed writer is broken once it
// is stale, by one waiter at a time (a second lock file, `<lock>.break`,
// taken the same way), which checks under it that the lock is still the
// stale one it saw: two waiters that saw the same stale lock would otherwise
// each remove one, the second a lock just taken. A lock is released only if
// it is still the writer's own (its inode and modification time).
import { open, rm, stat } from "node:fs/promises";
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

function isLock(file: LockIdentity, meant: LockIdentity): boolean {
  return file.ino === meant.ino && file.mtimeNs === meant.mtimeNs;
}

/** `path`'s identity and age, or undefined when there is no file. */
async function lockAt(path: string): Promise<(LockIdentity & { ageMs: number }) | undefined> {
  const found = await stat(path, { bigint: true }).catch(() => undefined);
  return found && { ino: found.ino, mtimeNs: found.mtimeNs, ageMs: Date.now() - Number(found.mtimeMs) };
}

/** Takes the lock at `path`, waiting for its holder; resolves with its release. */
export async function lockFile(path: string, options: LockOptions = {}): Promise<() => Promise<void>> {
  const { staleMs = LOCK_STALE_MS, timeoutMs = LOCK_TIMEOUT_MS } = options;
  const giveUp = Date.now() + timeoutMs;
  for (;;) {
    const own = await create(path);
    if (own) return () => removeIf(path, own);
    const held = await lockAt(path);
    if (held && held.ageMs > staleMs) await breakStale(path, held, staleMs);
    if (Date.now() > giveUp) throw new RegistryError("LOCK_TIMEOUT", `could not lock ${path} within ${timeoutMs / 1000} s`);
    await sleep(10);
  }
}

/** Creates the lock file `path` (O_EXCL): its identity, or undefined when it exists. */
async function create(path: string): Promise<LockIdentity | undefined> {
  let handle;
  try {
    handle = await open(path, "wx");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return undefined;
    throw err;
  }
  const { ino, mtimeNs } = await handle.stat({ bigint: true }).finally(() => handle.close());
  return { ino, mtimeNs };
}

/** Removes the file at `path` if it is the lock `meant`. */
async function removeIf(path: string, meant: LockIdentity): Promise<void> {
  const there = await lockAt(path);
  if (there && isLock(there, meant)) await rm(path, { force: true });
}

/**
 * Removes the stale lock `held` at `path`, under `<path>.break` so that one
 * waiter at a time checks and removes. A breaker that crashed leaves that
 * file, broken in turn once stale: only then can two breakers remove at once.
 */
async function breakStale(path: string, held: LockIdentity, staleMs: number): Promise<void> {
  const breaker = `${path}.break`;
  const own = await create(breaker);
  if (!own) {
    const other = await lockAt(breaker);
    if (other && other.ageMs > staleMs) await removeIf(breaker, other);
    return;
  }
  try {
    await removeIf(path, held);
  } finally {
    await removeIf(breaker, own);
  }
}
