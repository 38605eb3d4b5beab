#!/usr/bin/env node
// The `aegis` command. Commands are thin: they parse arguments and print;
// the work happens in bundle/, registry/ and the other component folders.
// Commands are declared cheaply and import their work inside their actions,
// so `aegis --version` or `aegis pull --help` loads little more than commander
// (test/cli/startup.test.ts, bench/startup.ts).
import { Command, CommanderError } from "commander";
import { registerAgent } from "./commands/agent.js";
import { registerAssigner, registerOperatorCommands } from "./commands/assigner.js";
import { registerCopy } from "./commands/copy.js";
import { registerFleet } from "./commands/fleet.js";
import { registerInspect } from "./commands/inspect.js";
import { registerKeygen } from "./commands/keys.js";
import { registerPolicy } from "./commands/policy.js";
import { registerPull } from "./commands/pull.js";
import { registerPush } from "./commands/push.js";
import { registerSign } from "./commands/sign.js";
import { fail } from "./output.js";

const program = new Command("aegis")
  .description("Ship eBPF network policies to Linux hosts as signed OCI artifacts")
  .version("0.1.0")
  .showHelpAfterError()
  .exitOverride();

registerPolicy(program);
registerPush(program);
registerPull(program);
registerInspect(program);
registerCopy(program);
registerKeygen(program);
registerSign(program);
registerAssigner(program);
registerOperatorCommands(program);
registerFleet(program);
registerAgent(program);

try {
  await program.parseAsync();
} catch (err) {
  // Commander already printed usage errors and help; only set the exit code.
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  fail(err);
}
