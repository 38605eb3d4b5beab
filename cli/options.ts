// Options shared by the commands that talk to registries, resolved once.
import type { Command } from "commander";
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

function collect(value: string, previous: string[] = []): string[] {
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
