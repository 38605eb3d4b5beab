import { mkdtempSync, rmSync } from "node:fs";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll } from "vitest";
import { MemoryTarget, OciLayoutTarget, RemoteRepository } from "../../registry/index.js";
import { startRegistryProxy, type RegistryProxy } from "../harness/proxy.js";
import { startRegistry, type RegistryServer } from "../harness/registry.js";
import { targetConformance } from "./conformance.js";

let registry: RegistryServer;
let proxy: RegistryProxy;
const dirs: string[] = [];
let counter = 0;

beforeAll(async () => {
  registry = await startRegistry();
  proxy = await startRegistryProxy(registry.url, { referrersApi: true });
});
afterAll(async () => {
  await proxy?.stop();
  await registry?.stop();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

targetConformance("memory", () => new MemoryTarget(), { deleter: (t) => t });
targetConformance(
  "OCI layout",
  () => {
    const dir = mkdtempSync(join(tmpdir(), "aegis-layout-"));
    dirs.push(dir);
    return new OciLayoutTarget(dir);
  },
  {
    deleter: (t) => t,
    alterAtRest: async (layout, desc) => {
      // Same size, one byte flipped: what a disk fault or a hand edit leaves.
      const path = join(layout.dir, "blobs", "sha256", desc.digest.slice("sha256:".length));
      const bytes = await readFile(path);
      bytes[0] = bytes[0]! ^ 0xff;
      await writeFile(path, bytes);
    },
    leftovers: async (layout) => (await readdir(join(layout.dir, "blobs", "sha256"))).filter((name) => name.startsWith(".tmp-")),
  },
);
targetConformance("registry 2.8.2 (tag-schema referrers)", () => new RemoteRepository(registry.host, `conformance/repo${counter++}`), { referencePusher: (t) => t });
targetConformance("registry with the referrers API", () => new RemoteRepository(proxy.host, `conformance/api${counter++}`), { referencePusher: (t) => t });
