// The CLI's bundle (scripts/bundle-cli.mjs) is reproducible: built twice from
// the same checkout it is the same files, byte for byte.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function bundleInto(): Map<string, Buffer> {
  const dir = mkdtempSync(join(tmpdir(), "aegis-bundle-"));
  dirs.push(dir);
  execFileSync(process.execPath, ["scripts/bundle-cli.mjs", dir]);
  return new Map(readdirSync(dir).sort().map((name) => [name, readFileSync(join(dir, name))]));
}

describe("CLI bundle", () => {
  it("built twice: the same file names and bytes; commands stay in lazily imported chunks", () => {
    const first = bundleInto();
    const second = bundleInto();
    expect([...second.keys()], "file names of the second build").toEqual([...first.keys()]);
    for (const [name, bytes] of first) expect(second.get(name)!.equals(bytes), `${name} differs between builds`).toBe(true);
    // The executable turns the compile cache on, then loads the command (cli/aegis.ts): a chunk of its own.
    const entry = first.get("aegis.cjs")!.toString("utf8");
    const lazy = (chunk: string) => new RegExp(`Promise\\.resolve\\(\\)\\.then\\(\\(\\) => __toESM\\(require\\("\\./${chunk}-[A-Z0-9]{8}\\.cjs"\\)\\)\\)`);
    expect(entry, "the executable requires the command lazily").toMatch(lazy("main"));
    expect(entry, "the executable holds the compile cache").toMatch(/^\/\/ cli\/compile-cache\.ts$/m);
    expect(entry, "the executable does not hold the command").not.toMatch(/^\/\/ cli\/main\.ts$/m);
    const main = [...first].find(([name]) => /^main-[A-Z0-9]{8}\.cjs$/.test(name))![1].toString("utf8");
    expect(main, "the command requires the registry lazily").toMatch(lazy("registry"));
    expect(main, "the command does not hold the registry client").not.toMatch(/^\/\/ registry\/remote\/client\.ts$/m);
    // zod's English messages only (its other ~60 locales are left out), and those are there.
    const locales = [...first.values()].flatMap((bytes) => [...bytes.toString("utf8").matchAll(/^\/\/ node_modules\/zod\/v4\/locales\/(.+)$/gm)].map((m) => m[1]));
    expect(locales, "zod locales in the bundle").toEqual(["en.js"]);
  });
});
