// V8 flags changed at run time (util/v8-flags.ts): what must happen under
// the flags the process started with (the compile cache's caches) runs just
// before the first change, once; a listener that comes too late is told so.
// Each case runs in a Node process of its own, on the built module, so this
// worker's flags are left alone.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const MODULE = fileURLToPath(new URL("../../dist/util/v8-flags.js", import.meta.url));
const execFileAsync = promisify(execFile);

/** Runs `code` (an ES module with the module's exports and tag() in scope); its JSON output. */
async function run(code: string): Promise<unknown> {
  const source = `import { beforeFirstV8FlagChange, setV8Flag, v8FlagsChanged } from ${JSON.stringify(MODULE)};
import { cachedDataVersionTag as tag } from "node:v8";
${code}`;
  const { stdout } = await execFileAsync(process.execPath, ["--input-type=module", "-e", source]);
  return JSON.parse(stdout);
}

describe("V8 flags", () => {
  it("a listener runs once, just before the first change, under the flags the process started with; a later one is refused", async () => {
    const result = await run(`const start = tag();
const calls = [];
const registered = beforeFirstV8FlagChange(() => calls.push(tag() === start));
const before = v8FlagsChanged();
setV8Flag("--no-turbofan");
setV8Flag("--turbofan");
const late = beforeFirstV8FlagChange(() => calls.push("late"));
setV8Flag("--no-turbofan");
console.log(JSON.stringify({ registered, before, calls, after: v8FlagsChanged(), tagChanged: tag() !== start, late }));`);
    expect(result, "listeners and flags").toEqual({ registered: true, before: false, calls: [true], after: true, tagChanged: true, late: false });
  });

  it("a listener that throws is passed over: the flag is set all the same, and the next listener runs", async () => {
    const result = await run(`const start = tag();
const calls = [];
beforeFirstV8FlagChange(() => { throw new Error("listener"); });
beforeFirstV8FlagChange(() => calls.push("second"));
setV8Flag("--no-turbofan");
console.log(JSON.stringify({ calls, changed: v8FlagsChanged(), tagChanged: tag() !== start }));`);
    expect(result, "after a listener threw").toEqual({ calls: ["second"], changed: true, tagChanged: true });
  });

  it("refuses anything but a boolean flag", async () => {
    const result = await run(`try { setV8Flag("--max-old-space-size=100"); console.log('"set"'); } catch (err) { console.log(JSON.stringify([err.message, v8FlagsChanged()])); }`);
    expect(result, "a flag with a value").toEqual(["not a boolean V8 flag: --max-old-space-size=100", false]);
  });
});
