// Pushing a bundle file (pushBundleFile): read once, its bytes going both to
// the bundle reader and to the destination's Ingester; the layer committed
// only once the bundle proved valid, so a bad file stores nothing, in
// registry 2.8.2 (requests seen through the recording proxy, blobs looked for
// in its storage) and in an OCI layout (no blob, no temp file, no index entry).
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeBundle, pushBundle } from "../../bundle/index.js";
import { pushBundleFile } from "../../bundle/transfer.js";
import { EMPTY_CONFIG, MemoryTarget, OciLayoutTarget, RemoteRepository, sha256, type CopyEvent } from "../../registry/index.js";
import { startRegistryProxy, uploadSessions, type RegistryProxy } from "../harness/proxy.js";
import { testPolicy } from "../harness/policy.js";
import { startRegistry, type RegistryServer } from "../harness/registry.js";

const MiB = 1024 * 1024;
const POLICY = testPolicy("pushed");

let registry: RegistryServer;
let proxy: RegistryProxy;
let work: string;
let counter = 0;

beforeAll(async () => {
  registry = await startRegistry();
  proxy = await startRegistryProxy(registry.url);
  work = mkdtempSync(join(tmpdir(), "aegis-push-"));
});
afterAll(async () => {
  await proxy?.stop();
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

/** `bytes` written to a file of their own. */
function file(bytes: Buffer): string {
  const path = join(work, `bundle-${counter++}.tar.zst`);
  writeFileSync(path, bytes);
  return path;
}

/** Whether distribution's filesystem driver holds a blob of `digest` (in any repository). */
function committed(digest: string): boolean {
  const hex = digest.slice("sha256:".length);
  return existsSync(`${registry.dataDir}/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`);
}

/** Every upload session `proxy` saw was cancelled, none committed, and there were `count`; returns them. */
function expectAllCancelled(proxy: RegistryProxy, count: number): string[][] {
  const sessions = [...uploadSessions(proxy.requests).values()];
  const all = JSON.stringify(sessions);
  expect(sessions, `upload sessions: ${all}`).toHaveLength(count);
  for (const session of sessions) {
    expect(session.filter((line) => line.startsWith("PUT")), `a commit; sessions: ${all}`).toEqual([]);
    expect(session.at(-1), `each session cancelled; sessions: ${all}`).toMatch(/^DELETE (204|404)$/);
  }
  return sessions;
}

describe("pushBundleFile", () => {
  it("into a registry: the layer's POST, one PATCH and the PUT ?digest= once the bundle checked out, the empty config's beside it, then the manifest; the same artifact as pushBundle", async () => {
    const bytes = await encodeBundle({ policy: POLICY, program: randomBytes(3 * MiB) });
    const expected = await pushBundle(bytes, POLICY, new MemoryTarget());
    const repo = new RemoteRepository(proxy.host, "push/file");
    const progress: [number, number][] = [];
    const events: CopyEvent[] = [];
    proxy.requests.length = 0;
    const pushed = await pushBundleFile(file(bytes), repo, "v1", { onProgress: (done, total) => progress.push([done, total]), onEvent: (e) => events.push(e) });
    expect(pushed.artifact.manifest, "manifest").toEqual(expected.manifest);
    expect(pushed.artifact.layer, "layer").toEqual(expected.layer);
    expect(pushed.policy, "policy").toEqual(POLICY);
    expect((await repo.resolve("v1")).digest, "tag").toBe(expected.manifest.digest);
    const layerRequests = proxy.requests.filter((r) => r.path.includes(expected.layer.digest) || r.query.includes(encodeURIComponent(expected.layer.digest)));
    const seen = proxy.requests.map((r) => `${r.method} ${r.path.includes("/uploads/") ? "upload" : r.path.split("/").pop()}${r.query.includes("digest=") ? ` ${decodeURIComponent(r.query).split("digest=")[1]!.split("&")[0]}` : ""} ${r.status}`);
    // Two upload sessions side by side, the layer's and the empty config's, each committed only after all its bytes were sent.
    const sessions = [...uploadSessions(proxy.requests).values()].sort((a, b) => String(a[2]).localeCompare(String(b[2])));
    expect(sessions, `upload sessions; requests: ${seen.join(", ")}`).toEqual(
      [expected.layer.digest, EMPTY_CONFIG.digest].sort().map((digest) => ["POST 202", "PATCH 202", `PUT ${digest} 201`]),
    );
    expect(seen.filter((r) => r.includes(EMPTY_CONFIG.digest) && !r.startsWith("PUT")), "the empty config: asked for first").toEqual([`HEAD ${EMPTY_CONFIG.digest} 404`]);
    expect(seen.filter((r) => r.startsWith("PUT")).at(-1), "the last write, the manifest by its tag").toBe("PUT v1 201");
    expect(layerRequests.map((r) => `${r.method} ${r.status}`), "requests naming the layer: only its commit").toEqual(["PUT 201"]);
    expect(progress.at(-1), "progress at the end").toEqual([bytes.byteLength, bytes.byteLength]);
    expect(progress.every(([done], i) => i === 0 || done >= progress[i - 1]![0]), "progress only goes up").toBe(true);
    expect(events.filter((e) => e.kind === "skip").map((e) => e.desc.digest).sort(), "the layer and config, already stored, skipped by copy").toEqual([expected.layer.digest, EMPTY_CONFIG.digest].sort());
  });

  it("into an OCI layout: the same artifact, the blob stored once and no temp file left", async () => {
    const bytes = await encodeBundle({ policy: POLICY, program: randomBytes(MiB) });
    const layout = new OciLayoutTarget(join(work, `layout-${counter++}`));
    const pushed = await pushBundleFile(file(bytes), layout, "v1");
    expect(pushed.artifact.layer.digest, "layer digest").toBe(sha256(bytes));
    expect((await layout.resolve("v1")).digest, "tag").toBe(pushed.artifact.manifest.digest);
    expect(readdirSync(join(layout.dir, "blobs", "sha256")).sort(), "blobs").toEqual(
      [pushed.artifact.layer.digest, pushed.artifact.manifest.digest, "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"].map((d) => d.slice(7)).sort(),
    );
  });

  it("aborted midway: rejects with the signal's reason, the upload cancelled, nothing stored in a registry or a layout", async () => {
    const bytes = await encodeBundle({ policy: POLICY, program: randomBytes(8 * MiB) });
    const path = file(bytes);
    const pushAborted = (target: RemoteRepository | OciLayoutTarget) => {
      const controller = new AbortController();
      const onProgress = (done: number) => done >= 2 * MiB && controller.abort(new Error("stopping"));
      return pushBundleFile(path, target, "v1", { signal: controller.signal, onProgress });
    };
    const repo = new RemoteRepository(proxy.host, `push/aborted${counter++}`);
    proxy.requests.length = 0;
    await expect(pushAborted(repo), "into a registry").rejects.toThrow("stopping");
    // The layer's session was cancelled; the empty config's, opened beside it, may not have got that far when the abort came
    // (no session, or one whose POST was under way), but any that sent bytes was cancelled too, and nothing was committed.
    const sessions = [...uploadSessions(proxy.requests).values()];
    const all = JSON.stringify(sessions);
    const sent = sessions.filter((s) => s.some((line) => line.startsWith("PATCH")));
    expect(sent.length, `sessions that sent bytes: ${all}`).toBeGreaterThanOrEqual(1);
    for (const session of sent) expect(session.at(-1), `each cancelled: ${all}`).toMatch(/^DELETE (204|404)$/);
    expect(proxy.requests.filter((r) => r.method === "PUT"), "commits").toEqual([]);
    expect(committed(sha256(bytes)), "layer committed").toBe(false);

    const layout = new OciLayoutTarget(join(work, `layout-${counter++}`));
    await expect(pushAborted(layout), "into a layout").rejects.toThrow("stopping");
    expect(readdirSync(join(layout.dir, "blobs", "sha256")), "blobs and temp files in the layout").toEqual([]);
  });

  const bad: [string, () => Promise<Buffer>, RegExp][] = [
    ["not zstd", async () => randomBytes(2 * MiB), /not valid zstd/],
    ["a policy.json that fails validation", () => encodeBundle({ policy: { ...POLICY, rules: [{ ...POLICY.rules[0]!, dst: "300.1.2.3/8" }] }, program: randomBytes(2 * MiB) }), /300\.1\.2\.3/],
    ["a bundle cut short", async () => (await encodeBundle({ policy: POLICY, program: randomBytes(2 * MiB) })).subarray(0, MiB), /zstd|end/],
  ];
  for (const [name, make, message] of bad) {
    it(`${name}: INVALID_BUNDLE, and nothing is stored in a registry (the upload cancelled) or a layout`, async () => {
      const bytes = await make();
      const path = file(bytes);
      const repo = new RemoteRepository(proxy.host, `push/bad${counter++}`);
      proxy.requests.length = 0;
      await expect(pushBundleFile(path, repo, "v1"), "into a registry").rejects.toMatchObject({ code: "INVALID_BUNDLE", message: expect.stringMatching(message) });
      // Two sessions, the layer's and the empty config's: both cancelled, neither committed.
      const sessions = expectAllCancelled(proxy, 2);
      const sent = ["POST 202", "PATCH 202", "DELETE 204"];
      if (name === "not zstd") {
        // Bad from its first bytes: the file stops, and the layer's PATCH is broken off before the registry has it all.
        expect(sessions.filter((s) => s[1] !== "PATCH 202"), `sessions whose PATCH was broken off: ${JSON.stringify(sessions)}`).toHaveLength(1);
      } else {
        // Found bad only at its end (the policy, the end of the data): all of it was sent, then the session cancelled.
        expect(sessions, "sessions").toEqual([sent, sent]);
      }
      expect(committed(sha256(bytes)), "layer committed").toBe(false);
      expect(await repo.tags(), "tags").toEqual([]);

      const layout = new OciLayoutTarget(join(work, `layout-${counter++}`));
      await expect(pushBundleFile(path, layout, "v1"), "into a layout").rejects.toMatchObject({ code: "INVALID_BUNDLE" });
      expect(readdirSync(join(layout.dir, "blobs", "sha256")), "blobs and temp files in the layout").toEqual([]);
      expect(existsSync(join(layout.dir, "index.json")), "index.json").toBe(false);
    });
  }
});
