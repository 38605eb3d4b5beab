// Every command of `aegis`, as the register function that declares it and
// the top-level names it declares. cli/main.ts declares only the command the
// command line names (none for --version; all of them for help, a mistyped
// name or no name): the ~30 commands with their options cost commander ~4 ms
// to declare, a tenth of `aegis --version` (issue 10).
// test/cli/commands.test.ts checks that the names listed are exactly the ones
// each function declares.
import type { Command } from "commander";
import { registerAgent } from "./agent.js";
import { registerAssigner, registerOperatorCommands } from "./assigner.js";
import { registerCopy } from "./copy.js";
import { registerFleetView } from "./fleet-view.js";
import { registerFleet } from "./fleet.js";
import { registerInspect } from "./inspect.js";
import { registerKeygen } from "./keys.js";
import { registerMirror } from "./mirror.js";
import { registerPolicy } from "./policy.js";
import { registerPull } from "./pull.js";
import { registerPush } from "./push.js";
import { registerSign, registerTrust } from "./sign.js";

export interface CommandGroup {
  /** The top-level commands `register` declares. */
  names: readonly string[];
  register(program: Command): void;
}

/** In the order `aegis --help` lists them. */
export const COMMANDS: readonly CommandGroup[] = [
  { names: ["policy"], register: registerPolicy },
  { names: ["push"], register: registerPush },
  { names: ["pull"], register: registerPull },
  { names: ["inspect"], register: registerInspect },
  { names: ["copy"], register: registerCopy },
  { names: ["mirror"], register: registerMirror },
  { names: ["keygen"], register: registerKeygen },
  { names: ["sign", "verify"], register: registerSign },
  { names: ["trust"], register: registerTrust },
  { names: ["assigner"], register: registerAssigner },
  { names: ["assign", "unassign"], register: registerOperatorCommands },
  { names: ["artifact", "artifacts", "hosts", "status"], register: registerFleetView },
  { names: ["apply", "promote", "rollout", "assignments"], register: registerFleet },
  { names: ["agent"], register: registerAgent },
];

/**
 * The groups to declare for a command line whose first argument is
 * `first`: its own; none for --version (commander answers it before any
 * command); all when it names none (help, a mistyped name).
 */
export function commandsFor(first: string | undefined): readonly CommandGroup[] {
  if (first === "-V" || first === "--version") return [];
  const named = COMMANDS.find((group) => first !== undefined && group.names.includes(first));
  return named ? [named] : COMMANDS;
}
