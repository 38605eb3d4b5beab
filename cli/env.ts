// The environment as the CLI reads it: variables, where an empty one counts
// as unset, and the user's cache directory.
import { homedir } from "node:os";
import { join } from "node:path";

/** Flags win over environment variables; an empty variable counts as unset. */
export function env(name: string): string | undefined {
  return process.env[name] || undefined;
}

/**
 * `name` in Aegis's part of the user's cache directory: $XDG_CACHE_HOME/aegis,
 * else ~/.cache/aegis (an empty XDG_CACHE_HOME counts as unset, by its spec).
 * https://specifications.freedesktop.org/basedir-spec/latest/
 */
export function userCache(name: string): string {
  return join(env("XDG_CACHE_HOME") ?? join(homedir(), ".cache"), "aegis", name);
}
