// The OCI layout's index lock: a lock file left behind by a crashed writer is
// broken (it is stale after 10 s) before a waiting writer gives up (30 s).
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { OciLayoutTarget } from "../../registry/index.js";
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
});
