import { mkdtempSync, rmSync } from "node:fs";
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

targetConformance("memory", () => new MemoryTarget());
targetConformance("OCI layout", () => {
  const dir = mkdtempSync(join(tmpdir(), "aegis-layout-"));
  dirs.push(dir);
  return new OciLayoutTarget(dir);
});
targetConformance("registry 2.8.2 (tag-schema referrers)", () => new RemoteRepository(registry.host, `conformance/repo${counter++}`));
targetConformance("registry with the referrers API", () => new RemoteRepository(proxy.host, `conformance/api${counter++}`));
