// The command table cli/main.ts declares from (cli/commands/index.ts): each
// register function declares exactly the top-level names listed for it, no
// name is listed twice, and the CLI still knows every command where it
// declares them all (help, a mistyped name) as well as where it declares one.
import { Command } from "commander";
import { describe, expect, it } from "vitest";
import { COMMANDS, commandsFor } from "../../cli/commands/index.js";
import { aegis } from "./run.js";

const ALL_NAMES = COMMANDS.flatMap((group) => group.names);

describe("the command table", () => {
  for (const group of COMMANDS) {
    it(`${group.register.name} declares exactly ${group.names.join(", ")}`, () => {
      const program = new Command("aegis");
      group.register(program);
      expect(program.commands.map((c) => c.name()), `top-level commands ${group.register.name} declares`).toEqual(group.names);
    });
  }

  it("names each command once; a named command gets its group alone, --version none, anything else all of them", () => {
    expect(new Set(ALL_NAMES).size, `names: ${ALL_NAMES.join(", ")}`).toBe(ALL_NAMES.length);
    expect(commandsFor("verify").flatMap((g) => g.names), "verify").toEqual(["sign", "verify"]);
    for (const first of ["-V", "--version"]) expect(commandsFor(first), `for ${first}`).toEqual([]);
    for (const first of [undefined, "--help", "-h", "help", "pul"]) expect(commandsFor(first), `for ${String(first)}`).toBe(COMMANDS);
  });

  it("aegis --help lists every command; a mistyped one is refused with the right suggestion; a named one has its help; --version answers", async () => {
    const help = await aegis(["--help"]);
    expect(help.code, help.stderr).toBe(0);
    const listed = [...help.stdout.matchAll(/^ {2}([a-z]+)\b/gm)].map(([, name]) => name);
    expect(listed, "commands in aegis --help").toEqual([...ALL_NAMES, "help"]);
    const typo = await aegis(["unasign", "sha256:x", "h"]);
    expect(typo.code, typo.stderr).toBe(1);
    expect(typo.stderr, "a mistyped command, and the suggestion").toMatch(/^aegis: error: unknown command 'unasign' \(Did you mean unassign\?\) \(see 'aegis --help'\)\n$/);
    const pull = await aegis(["pull", "--help"]);
    expect(pull.stdout, pull.stderr).toMatch(/^Usage: aegis pull \[options\] <ref>/);
    for (const words of [["pull"], ["mirror", "export"], ["rollout", "status"]]) {
      const [asked, flagged] = await Promise.all([aegis(["help", ...words]), aegis([...words, "--help"])]);
      expect({ code: asked.code, stdout: asked.stdout }, `aegis help ${words.join(" ")}: the help of that command`).toEqual({ code: 0, stdout: flagged.stdout });
      expect(asked.stdout, `aegis help ${words.join(" ")}`).toMatch(new RegExp(`^Usage: aegis ${words.join(" ")} `));
    }
    for (const flag of ["--version", "-V"]) {
      const version = await aegis([flag]);
      expect([version.code, version.stdout.trim()], `aegis ${flag}`).toEqual([0, "0.1.0"]);
    }
  });
});
