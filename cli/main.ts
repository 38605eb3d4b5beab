// The `aegis` command, loaded by cli/aegis.ts. Commands are thin: they parse arguments and print;
// the work happens in bundle/, registry/ and the other component folders.
// Commands import their work inside their actions, and only the command named
// is declared (cli/commands/index.ts), so `aegis --version` or `aegis pull
// --help` runs little more than commander (test/cli/startup.test.ts,
// bench/cli.ts).
import { Command, CommanderError } from "commander";
import { commandsFor } from "./commands/index.js";
import { InputError } from "../errors.js";
import { fail, jsonOutput } from "./output.js";

const program = new Command("aegis")
  .description("Ship eBPF network policies to Linux hosts as signed OCI artifacts")
  .version("0.1.0")
  .exitOverride();

// `aegis help mirror export`: commander's help command reads one name, and showed `mirror`'s help; it is `aegis mirror export --help`.
if (process.argv[2] === "help" && process.argv.length > 3) process.argv.splice(2, process.argv.length - 2, ...process.argv.slice(3), "--help");
for (const { register } of commandsFor(process.argv[2])) register(program);

/** The command whose arguments were wrong, to point at its --help. */
let misused: Command = program;

/**
 * Usage errors (an unknown option or command, a missing argument) are one
 * `aegis: error: …` line and exit 1 like every other error, not commander's
 * own `error:` line and the whole help: commander only records which
 * command complained, and the catch below prints. Help asked for (or shown
 * for a command group given no subcommand) is still printed as commander does.
 */
function quietUsageErrors(command: Command): void {
  command.configureOutput({ outputError: () => void (misused = command) });
  for (const sub of command.commands) quietUsageErrors(sub);
}
quietUsageErrors(program);
// Whether a failure also prints JSON: the parsed --json (a value given to another option is not it).
program.hook("preAction", (_program, action) => jsonOutput(action.opts().json === true));

function commandPath(command: Command): string {
  return command.parent ? `${commandPath(command.parent)} ${command.name()}` : command.name();
}

// No top-level await: the bundle is CommonJS (scripts/bundle-cli.mjs).
program.parseAsync().catch((err: unknown) => {
  if (!(err instanceof CommanderError)) fail(err);
  // --help, --version, or help shown for a group given no subcommand: already printed.
  if (err.code.startsWith("commander.help") || err.code === "commander.version") process.exit(err.exitCode);
  // commander puts its suggestion on a line of its own ("\n(Did you mean …?)"): one line here, as every error is.
  fail(new InputError("INVALID_ARGUMENT", `${err.message.replace(/^error: /, "").replace(/\n/g, " ")} (see '${commandPath(misused)} --help')`));
});
