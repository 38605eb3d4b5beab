// A second, independent client (containers/image via skopeo) against the
// token server + proxy + registry, so the harness is not only checked by
// the same hand-written calls it was developed with.
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTempDir, removeTempDir, requireBinary, run } from "../harness/process.js";
import { startRegistryProxy } from "../harness/proxy.js";
import type { RegistryProxy } from "../harness/proxy.js";
import { startRegistry } from "../harness/registry.js";
import type { RegistryServer } from "../harness/registry.js";
import { EMPTY_CONFIG, OCI_MANIFEST, sha256 } from "./oci-util.js";

describe("skopeo through proxy into a token-auth registry", () => {
  let registry: RegistryServer;
  let proxy: RegistryProxy;
  let layout: string;
  let manifest: string;

  beforeAll(async () => {
    registry = await startRegistry({ auth: "token" });
    proxy = await startRegistryProxy(registry.url);
    // a one-layer OCI image layout shaped like an Aegis artifact
    layout = makeTempDir("aegis-selftest-layout-");
    await mkdir(join(layout, "blobs", "sha256"), { recursive: true });
    const putBlob = async (bytes: string): Promise<string> => {
      const digest = sha256(bytes);
      await writeFile(join(layout, "blobs", "sha256", digest.slice("sha256:".length)), bytes);
      return digest;
    };
    await putBlob("{}");
    const layer = "policy layer";
    manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType: "application/vnd.aegis.policy.v1",
      config: EMPTY_CONFIG,
      layers: [{ mediaType: "application/vnd.aegis.policy.layer.v1.tar+zstd", digest: await putBlob(layer), size: layer.length }],
    });
    const manifestDigest = await putBlob(manifest);
    await writeFile(join(layout, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
    await writeFile(join(layout, "index.json"), JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: OCI_MANIFEST, digest: manifestDigest, size: manifest.length, annotations: { "org.opencontainers.image.ref.name": "v1" } }],
    }));
  });
  afterAll(async () => {
    await proxy.stop();
    await registry.stop();
    await removeTempDir(layout);
  });

  it("copies and reads back the exact manifest bytes", async () => {
    // async run(): the token server and proxy live in this process, a sync exec would deadlock
    const skopeo = requireBinary("skopeo", "skopeo");
    const creds = `${registry.username ?? ""}:${registry.password ?? ""}`;
    const ref = `docker://${proxy.host}/selftest/skopeo:v1`;
    await run(skopeo, ["copy", "--dest-tls-verify=false", "--dest-creds", creds, `oci:${layout}:v1`, ref]);
    const raw = await run(skopeo, ["inspect", "--raw", "--tls-verify=false", "--creds", creds, ref]);
    expect(raw).toBe(manifest);
    // uploads stayed on the proxy (Location rewriting) and the token flow ran
    expect(proxy.requests.some((r) => r.method === "PUT" && r.path.includes("/blobs/uploads/") && r.status === 201)).toBe(true);
    expect(proxy.requests.some((r) => r.status === 401)).toBe(true);
  });
});
