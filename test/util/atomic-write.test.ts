// util/atomic-write.ts's helpers: atomicWrite's errors, which name the file
// asked for; syncDir, which lets be a folder that cannot be synced; for temp files left by killed commands, the
// names a sweep of one file's temps takes (isTempFor), and keepFresh, which
// keeps a temp directory that a long step only reads looking alive to a sweep
// (removeStaleTemps, which the pull, mirror and CLI tests exercise).
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { atomicWrite, isTempFor, keepFresh, syncDir, syncFile, tempPathFor } from "../../util/index.js";
import { backdate } from "../harness/stale.js";

const work = mkdtempSync(join(tmpdir(), "aegis-atomic-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("isTempFor", () => {
  it("takes tempPathFor's names for that file, and no other", () => {
    const file = join(work, "c.tar");
    const made = tempPathFor(file).slice(work.length + 1);
    const cases: [string, boolean][] = [
      [made, true],
      [".c.tar.0123456789ab.aegis-tmp", true],
      [".c.tar.0123456789a.aegis-tmp", false], // eleven digits
      [".c.tar.0123456789AB.aegis-tmp", false], // not lower-case hex
      [".c.tar.0123456789ab.aegis-tmp.x", false],
      [".d.tar.0123456789ab.aegis-tmp", false], // another file's
      [".c.tar.x.0123456789ab.aegis-tmp", false], // c.tar.x's
      ["c.tar.0123456789ab.aegis-tmp", false],
    ];
    expect(cases.map(([name]) => [name, isTempFor(file, name)])).toEqual(cases);
  });
});

describe("atomicWrite's errors", () => {
  it("name the file asked for, not its temp file, with an input code where the path is at fault; nothing is left beside it", async () => {
    const dir = mkdtempSync(join(work, "a-directory-"));
    await expect(atomicWrite(dir, "x"), "onto a directory").rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: `cannot write ${dir}: it is a directory` });
    const missing = join(work, "no-such-folder", "x");
    await expect(atomicWrite(missing, "x"), "into a folder that is not there").rejects.toMatchObject({ code: "FILE_NOT_FOUND", message: `cannot write ${missing}: ${dirname(missing)} is not a directory` });
    expect(readdirSync(work).filter((name) => name.includes("aegis-tmp")), "temp files left").toEqual([]);
  });
});

describe("syncDir", () => {
  it("lets be a directory its file system cannot fsync (EINVAL, as /proc's), which syncFile reports", async () => {
    await expect(syncFile("/proc/self"), "syncFile of /proc/self").rejects.toMatchObject({ code: "EINVAL" });
    await expect(syncDir("/proc/self"), "syncDir of /proc/self").resolves.toBeUndefined();
    await expect(syncDir(join(work, "missing")), "a folder that is not there").rejects.toMatchObject({ code: "ENOENT" });
  });
});

describe("keepFresh", () => {
  it("touches the directory until stopped, then leaves it be", async () => {
    const dir = mkdtempSync(join(work, "fresh-"));
    const recent = () => statSync(dir).mtimeMs > Date.now() - 30 * 60 * 1000;
    backdate(dir);
    const stop = keepFresh(dir, 10);
    try {
      // Bounded: a timer that never fires fails here, not by the test's timeout.
      for (let i = 0; i < 500 && !recent(); i++) await sleep(10);
    } finally {
      stop();
    }
    expect(recent(), "touched while running").toBe(true);
    backdate(dir);
    await sleep(100); // ten intervals
    expect(recent(), "touched once stopped").toBe(false);
  });
});
