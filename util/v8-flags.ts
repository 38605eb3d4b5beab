// V8 flags a process changes while it runs, set in one place so they can be
// undone. V8 stamps a code cache with a tag of its version and flags and
// refuses a cache made, or read, under another tag
// (v8.cachedDataVersionTag()); so cli/compile-cache.ts caches only files
// loaded under the flags the process started with, and puts those back
// before it makes the caches. Setting flags after start-up is what Node
// documents v8.setFlagsFromString for.
// https://nodejs.org/api/v8.html#v8setflagsfromstringflags

/** Each flag changed so far, by name: the setting it started with and the one in force. */
const changed = new Map<string, { initial: string; now: string }>();
/** The tag before the first change: what a cache made now must carry. */
let startTag: number | undefined;

/** node:v8, fetched when a flag is set, not imported: every command loads this module at start-up. */
function v8(): typeof import("node:v8") {
  return process.getBuiltinModule("node:v8");
}

/** Sets a boolean V8 flag, "--name" or "--no-name". */
export function setV8Flag(flag: string): void {
  const match = /^--(no-)?([a-z][a-z0-9-]*)$/.exec(flag);
  if (!match) throw new TypeError(`not a boolean V8 flag: ${flag}`);
  const name = match[2]!;
  const before = v8().cachedDataVersionTag();
  startTag ??= before;
  v8().setFlagsFromString(flag);
  const entry = changed.get(name);
  if (entry) entry.now = flag;
  // A first change that leaves the tag as it was changed nothing: the flag started so (node --expose-gc).
  else changed.set(name, { initial: v8().cachedDataVersionTag() === before ? flag : match[1] ? `--${name}` : `--no-${name}`, now: flag });
}

/** Whether V8's flags are as the process started (none changed, or all put back). */
export function v8FlagsAsStarted(): boolean {
  return startTag === undefined || v8().cachedDataVersionTag() === startTag;
}

/** Puts back every flag setV8Flag() changed, and says whether the flags are now as the process started. */
export function restoreV8Flags(): boolean {
  for (const entry of changed.values()) {
    if (entry.now !== entry.initial) {
      v8().setFlagsFromString(entry.initial);
      entry.now = entry.initial;
    }
  }
  return v8FlagsAsStarted();
}
