// OciLayoutTarget on a directory someone else may write (an `oci:` path an
// assigner names): a FIFO or a device where index.json or a blob should be
// is refused at once, never waited on or read without end.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { OciLayoutTarget } from "../../registry/index.js";
import { pushArtifact } from "./conformance.js";

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function layoutDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "aegis-layout-"));
  dirs.push(dir);
  return dir;
}

describe("OciLayoutTarget on a hostile directory", () => {
  it.each([
    ["a FIFO with no writer", (path: string) => execFileSync("mkfifo", [path])],
    ["a link to /dev/zero", (path: string) => symlinkSync("/dev/zero", path)],
  ])("index.json that is %s is refused at once", async (_what, plant) => {
    const dir = layoutDir();
    plant(join(dir, "index.json"));
    const layout = new OciLayoutTarget(dir);
    await expect(layout.tags()).rejects.toMatchObject({ code: "INVALID_MANIFEST", message: `${join(dir, "index.json")} is not a regular file` });
  });

  it("index.json as a link to a /proc file (regular, reporting size 0, endless) is read no further than its limit", async () => {
    const dir = layoutDir();
    symlinkSync("/proc/self/pagemap", join(dir, "index.json"));
    await expect(new OciLayoutTarget(dir).tags()).rejects.toMatchObject({ code: "SIZE_LIMIT", message: `${join(dir, "index.json")} is over the 67108864-byte limit of an index` });
  });

  it("a blob that is a FIFO is not found and not there, at once", async () => {
    const dir = layoutDir();
    const layout = new OciLayoutTarget(dir);
    const { layer } = await pushArtifact(layout);
    const path = join(dir, "blobs", "sha256", layer.digest.slice(7));
    rmSync(path);
    mkdirSync(join(dir, "blobs", "sha256"), { recursive: true });
    execFileSync("mkfifo", [path]);
    await expect(layout.fetch(layer), "fetch").rejects.toMatchObject({ code: "NOT_FOUND" });
    expect(await layout.exists(layer), "exists").toBe(false);
  });
});
