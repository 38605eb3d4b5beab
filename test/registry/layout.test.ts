// OciLayoutTarget on a directory someone else may write (an `oci:` path an
// assigner names): a FIFO or a device where index.json or a blob should be
// is refused at once, never waited on or read without end, and a malformed
// index.json is INVALID_MANIFEST, saying what is wrong but not what it holds;
// an entry of a digest algorithm other than sha256 does not make it unreadable.
// What killed writers left in a layout, its first write of a run sweeps.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { describeError } from "../../errors.js";
import { MediaType, OciLayoutTarget } from "../../registry/index.js";
import { pushArtifact } from "./conformance.js";
import { leaveFile } from "../harness/stale.js";

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

  it.each([
    ["a null entry", [null], "manifests[0] is not a valid descriptor"],
    ["an entry without a digest", [{ mediaType: MediaType.ImageManifest, size: 2 }], "manifests[0] is not a valid descriptor"],
    ["a numeric ref.name", [{ mediaType: MediaType.ImageManifest, digest: `sha256:${"a".repeat(64)}`, size: 2, annotations: { "org.opencontainers.image.ref.name": 7 } }], "manifests[0] annotations"],
    ["annotations that are a list", [{ mediaType: MediaType.ImageManifest, digest: `sha256:${"a".repeat(64)}`, size: 2, annotations: ["v1"] }], "manifests[0] annotations"],
  ])("index.json with %s is INVALID_MANIFEST from resolve, tags and tag", async (what, manifests, why) => {
    const dir = layoutDir();
    const path = join(dir, "index.json");
    writeFileSync(path, JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ImageIndex, manifests }));
    const layout = new OciLayoutTarget(dir);
    const expected = { code: "INVALID_MANIFEST", message: expect.stringContaining(`${path} is not a valid image index: ${why}`) };
    await expect(layout.resolve("v1"), `resolve, ${what}`).rejects.toMatchObject(expected);
    await expect(layout.tags(), `tags, ${what}`).rejects.toMatchObject(expected);
    await expect(layout.tag({ mediaType: MediaType.ImageManifest, digest: `sha256:${"b".repeat(64)}`, size: 2 }, "v1"), `tag, ${what}`).rejects.toMatchObject(expected);
  });

  it("index.json with an entry of another digest algorithm (sha512, another tool's) stays readable: the entry is listed and kept, never resolved", async () => {
    const dir = layoutDir();
    const layout = new OciLayoutTarget(dir);
    const { manifest } = await pushArtifact(layout);
    await layout.tag(manifest, "ours");
    const path = join(dir, "index.json");
    const index = JSON.parse(readFileSync(path, "utf8")) as { manifests: unknown[] };
    const foreign = { mediaType: MediaType.ImageManifest, digest: `sha512:${"c".repeat(128)}`, size: 2, annotations: { "org.opencontainers.image.ref.name": "theirs" } };
    writeFileSync(path, JSON.stringify({ ...index, manifests: [...index.manifests, foreign] }));
    expect((await layout.resolve("ours")).digest, "our tag beside it").toBe(manifest.digest);
    expect(await layout.tags(), "the tags").toEqual(["ours", "theirs"]);
    await expect(layout.resolve("theirs"), "their tag").rejects.toMatchObject({ code: "UNSUPPORTED_DIGEST", message: expect.stringContaining(`theirs in oci:${dir} names "sha512:`) });
    await layout.tag(manifest, "again");
    expect((JSON.parse(readFileSync(path, "utf8")) as { manifests: unknown[] }).manifests, "index.json after a write").toContainEqual(foreign);
    expect(await layout.digests(), "what the layout holds, for pruning").not.toContain(foreign.digest);
    await expect(layout.resolve(`sha512:${"c".repeat(128)}`), "by its digest").rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("index.json that is not JSON (a link to a secret, say): INVALID_MANIFEST whose message and causes do not quote it", async () => {
    const dir = layoutDir();
    const secret = join(layoutDir(), "secret");
    writeFileSync(secret, "password=hunter2\n");
    symlinkSync(secret, join(dir, "index.json"));
    const err: unknown = await new OciLayoutTarget(dir).tags().catch((e: unknown) => e);
    expect(err, "the error").toMatchObject({ code: "INVALID_MANIFEST", message: `${join(dir, "index.json")} is not a valid image index: manifest is not valid JSON` });
    expect(describeError(err), "the error as the CLI and agent show it, causes included").not.toContain("hunter2");
  });
});

describe("OciLayoutTarget after a killed writer", () => {
  it("the first write of a run sweeps the temp files killed writers left, unchanged for an hour; fresh ones and other files stay", async () => {
    const dir = layoutDir();
    const blobs = join(dir, "blobs", "sha256");
    mkdirSync(blobs, { recursive: true });
    leaveFile(join(blobs, ".tmp-dead"), true);
    leaveFile(join(blobs, ".tmp-live"), false);
    leaveFile(join(dir, ".index.json.aaaaaaaaaaaa.aegis-tmp"), true);
    leaveFile(join(dir, "notes.txt"), true);
    leaveFile(join(dir, ".notes.txt.aaaaaaaaaaaa.aegis-tmp"), true); // another file's atomic write (`oci:.` may be any folder)
    const layout = new OciLayoutTarget(dir);
    await layout.tags();
    expect(readdirSync(blobs).sort(), "a read sweeps nothing").toEqual([".tmp-dead", ".tmp-live"]);
    await pushArtifact(layout);
    expect(readdirSync(blobs).filter((name) => name.startsWith(".tmp-")), "partial blobs after the first write").toEqual([".tmp-live"]);
    expect(readdirSync(dir).sort(), "beside index.json").toEqual([".notes.txt.aaaaaaaaaaaa.aegis-tmp", "blobs", "index.json", "notes.txt", "oci-layout"]);
  });
});
