// Options shared by the commands (registries, trust, durations, environment), resolved once.
import type { Command } from "commander";
import { InputError } from "../errors.js";
import type { RepositoryOptions } from "../registry/index.js";
// The credentials module alone, not registry/index.js: every command imports
// this file, and `aegis --version` must not load the registry client and undici.
import { credentialsFromEnvironment } from "../registry/remote/credentials.js";
import type { OutputOptions } from "./output.js";

export interface GlobalOptions extends OutputOptions {
  plainHttp?: boolean;
}

export function addRegistryOptions(command: Command): Command {
  return command
    .option("--json", "print JSON for scripts")
    .option("--plain-http", "use http:// for a non-loopback registry (loopback always does)");
}

/** Pinned keys: `--key` and `--trust`, each repeatable (verify, pull, copy). */
export interface TrustOptions {
  key?: string[];
  trust?: string[];
}

/** A repeatable option (commander): each use adds its value. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function addTrustOptions(command: Command, what: string): Command {
  return command
    .option("--key <file>", `trusted public key (repeatable)${what}`, collect)
    .option("--trust <file>", `trust file: keys with optional validity windows, keyless identities and their trusted root (repeatable)${what}`, collect);
}

/** The registry settings of a command: its flags, and credentials from the environment (README "Registries"). */
export function repositoryOptions(options: GlobalOptions): RepositoryOptions {
  return { plainHttp: options.plainHttp ?? false, credentials: credentialsFromEnvironment };
}

/** The longest delay a Node timer takes. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** "30s", "500ms", "2m" or a number of seconds, in ms; errors name `--flag`. */
export function parseDuration(text: string, flag: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim());
  if (!match) throw new InputError("INVALID_ARGUMENT", `--${flag} ${text}: expected a duration like 30s, 500ms or 2m`);
  const n = Number(match[1]);
  // Whole milliseconds, within what a Node timer takes (2^31 - 1 ms, about 24 days): past it a timer fires at once.
  const ms = Math.round(match[2] === "ms" ? n : match[2] === "m" ? n * 60_000 : n * 1000);
  if (ms < 10) throw new InputError("INVALID_ARGUMENT", `--${flag} ${text} is too short`);
  if (ms > MAX_TIMER_MS) throw new InputError("INVALID_ARGUMENT", `--${flag} ${text} is too long (at most ${MAX_TIMER_MS / 60_000 | 0}m)`);
  return ms;
}
