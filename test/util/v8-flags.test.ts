// V8 flags changed at run time are put back as the process started
// (util/v8-flags.ts), which V8's code cache tag shows; a flag the process
// started with (node --expose-gc) stays set. Each case runs in a Node
// process of its own, on the built module, so this worker's flags are
// left alone.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const MODULE = fileURLToPath(new URL("../../dist/util/v8-flags.js", import.meta.url));
const execFileAsync = promisify(execFile);

/** Runs `code` (an ES module with setV8Flag, restoreV8Flags, v8FlagsAsStarted and tag() in scope) under `flags`; its JSON output. */
async function run(flags: string[], code: string): Promise<unknown> {
  const source = `import { setV8Flag, restoreV8Flags, v8FlagsAsStarted } from ${JSON.stringify(MODULE)};
import { cachedDataVersionTag as tag } from "node:v8";
${code}`;
  const { stdout } = await execFileAsync(process.execPath, [...flags, "--input-type=module", "-e", source]);
  return JSON.parse(stdout);
}

describe("V8 flags", () => {
  it("changed and put back: the tag is the start's again", async () => {
    const result = await run(
      [],
      `const start = tag();
setV8Flag("--no-turbofan"); setV8Flag("--expose-gc");
const changed = [v8FlagsAsStarted(), tag() !== start];
setV8Flag("--turbofan");
console.log(JSON.stringify({ changed, restored: restoreV8Flags(), same: tag() === start, asStarted: v8FlagsAsStarted() }));`,
    );
    expect(result, "flags changed, then put back").toEqual({ changed: [false, true], restored: true, same: true, asStarted: true });
  });

  it("a flag the process started with stays set when put back", async () => {
    const result = await run(
      ["--expose-gc"],
      `const start = tag();
setV8Flag("--expose-gc"); setV8Flag("--no-turbofan");
console.log(JSON.stringify({ restored: restoreV8Flags(), same: tag() === start, gc: typeof globalThis.gc }));`,
    );
    expect(result, "started with --expose-gc").toEqual({ restored: true, same: true, gc: "function" });
  });

  it("refuses anything but a boolean flag", async () => {
    const result = await run([], `try { setV8Flag("--max-old-space-size=100"); console.log('"set"'); } catch (err) { console.log(JSON.stringify(err.message)); }`);
    expect(result, "a flag with a value").toBe("not a boolean V8 flag: --max-old-space-size=100");
  });
});
