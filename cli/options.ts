// Options shared by the commands that talk to registries, resolved once.
import type { Command } from "commander";
import { credentialsFromEnvironment, type RepositoryOptions } from "../registry/index.js";
import type { OutputOptions } from "./output.js";

export interface GlobalOptions extends OutputOptions {
  plainHttp?: boolean;
}

export function addRegistryOptions(command: Command): Command {
  return command
    .option("--json", "print JSON for scripts")
    .option("--plain-http", "use http:// for a non-loopback registry (loopback always does)");
}

/** The registry settings of a command: its flags, and credentials from the environment (README "Registries"). */
export function repositoryOptions(options: GlobalOptions): RepositoryOptions {
  return { plainHttp: options.plainHttp ?? false, credentials: credentialsFromEnvironment };
}
