// The OCI layout's index lock (registry/lock-file.ts): a lock file left
// behind by a crashed writer is broken (it is stale after 10 s) before a
// waiting writer gives up (30 s), even when a breaker crashed too; waiters
// breaking one stale lock never hold it together, and a release never
// removes a lock that another took.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { OciLayoutTarget } from "../../registry/index.js";
import { lockFile } from "../../registry/lock-file.js";
import { pushArtifact } from "./conformance.js";

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe("layout lock", () => {
  it("a lock file 15 s old (left by a crashed process) is broken and the push succeeds", async () => {
    const dir = mkdtempSync(join(tmpdir(), "aegis-lock-"));
    dirs.push(dir);
    mkdirSync(join(dir, "blobs", "sha256"), { recursive: true });
    const lock = join(dir, "index.json.lock");
    writeFileSync(lock, "");
    // Old enough to be stale, young enough that writers gave up first before the fix (stale at 30 s, gave up at 10 s).
    const then = new Date(Date.now() - 15_000);
    utimesSync(lock, then, then);
    const layout = new OciLayoutTarget(dir);
    const { manifest } = await pushArtifact(layout);
    await layout.tag(manifest, "v1");
    expect((await layout.resolve("v1")).digest, "the tag written after breaking the stale lock").toBe(manifest.digest);
  }, 20_000);

  it("waiters that come upon one stale lock at staggered times take it one at a time", async () => {
    const dir = mkdtempSync(join(tmpdir(), "aegis-lock-"));
    dirs.push(dir);
    const lock = join(dir, "index.json.lock");
    writeFileSync(lock, "");
    const then = new Date(Date.now() - 15_000);
    utimesSync(lock, then, then);
    let holding = 0;
    const overlaps: number[] = [];
    // Staggered by up to 7 ms, so checks of the stale lock, breaks and new locks interleave: a waiter that saw the
    // stale lock and removed what was there later removed a lock just taken. Beside two CPU burners, 40 runs of this
    // overlapped in 7 with the first lock and in 11 with a rename-aside protocol (a CI run caught one), in none of
    // 140 with breakers taking turns.
    await Promise.all(
      Array.from({ length: 40 }, async (_, i) => {
        await new Promise((resolve) => setTimeout(resolve, i % 8));
        const release = await lockFile(lock, { timeoutMs: 10_000 });
        if (++holding > 1) overlaps.push(i);
        await new Promise((resolve) => setTimeout(resolve, 5));
        holding--;
        await release();
      }),
    );
    expect(overlaps, "waiters that took the lock while another held it").toEqual([]);
    expect(readdirSync(dir), "what is left: no lock, no breaker's lock").toEqual([]);
  }, 20_000);

  it("a release leaves in place a lock that is no longer its own (broken as stale and taken by another)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "aegis-lock-"));
    dirs.push(dir);
    const lock = join(dir, "index.json.lock");
    const release = await lockFile(lock);
    // What a waiter does to a lock it thinks stale: remove it, and create its own (written beside it first, so it is
    // another inode for sure: a file made the same instant on the freed inode would be alike in inode and time).
    writeFileSync(`${lock}.theirs`, "");
    rmSync(lock);
    renameSync(`${lock}.theirs`, lock);
    await release();
    expect(existsSync(lock), "the other writer's lock, after the first one's release").toBe(true);
    expect(readdirSync(dir), "nothing else").toEqual(["index.json.lock"]);
  });

  it("a stale lock whose breaker crashed too (its .break file left) is broken once that file is stale as well", async () => {
    const dir = mkdtempSync(join(tmpdir(), "aegis-lock-"));
    dirs.push(dir);
    const lock = join(dir, "index.json.lock");
    const then = new Date(Date.now() - 15_000);
    for (const file of [lock, `${lock}.break`]) {
      writeFileSync(file, "");
      utimesSync(file, then, then);
    }
    const release = await lockFile(lock, { timeoutMs: 5_000 });
    await release();
    expect(readdirSync(dir), "nothing left").toEqual([]);
  });
});
