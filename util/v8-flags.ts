// V8 flags a process changes while it runs, set in one place. V8 stamps a
// code cache with a tag of its version and flags and refuses a cache made,
// or read, under another tag (v8.cachedDataVersionTag()); setting a flag
// back does not always give the first tag back (Node 22's V8 keeps a
// different one). So cli/compile-cache.ts makes its caches just before the
// first change, and does not cache files loaded after it. Node documents
// v8.setFlagsFromString for flags set after start-up, with care: the two set
// here only decide what V8 compiles next (util/jit.ts) and expose gc()
// (util/spent-buffers.ts).
// https://nodejs.org/api/v8.html#v8setflagsfromstringflags

let changed = false;
let beforeFirst: (() => void)[] = [];

/** Runs `listener` just before the first flag is set, unless one already was (then it returns false). A listener that throws is passed over. */
export function beforeFirstV8FlagChange(listener: () => void): boolean {
  if (changed) return false;
  beforeFirst.push(listener);
  return true;
}

/** Whether a flag has been set since the process started. */
export function v8FlagsChanged(): boolean {
  return changed;
}

/**
 * Sets a boolean V8 flag, "--name" or "--no-name". node:v8 is fetched when a
 * flag is set, not imported: every command loads this module at start-up.
 */
export function setV8Flag(flag: string): void {
  if (!/^--(no-)?[a-z][a-z0-9-]*$/.test(flag)) throw new TypeError(`not a boolean V8 flag: ${flag}`);
  if (!changed) {
    changed = true;
    const listeners = beforeFirst;
    beforeFirst = [];
    for (const listener of listeners) {
      try {
        listener();
      } catch {
        // The flag is set all the same: what a listener does must not change what the command does.
      }
    }
  }
  process.getBuiltinModule("node:v8").setFlagsFromString(flag);
}
