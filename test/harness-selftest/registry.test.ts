import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { fetch } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../harness/ports.js";
import { requireBinary } from "../harness/process.js";
import { startRegistry } from "../harness/registry.js";
import type { RegistryServer } from "../harness/registry.js";
import { basicAuth, pushBlob, sha256 } from "./oci-util.js";

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

describe("freePort", () => {
  it("returns a bindable loopback port", async () => {
    const port = await freePort();
    expect(port).toBeGreaterThan(0);
    expect(await canBind(port)).toBe(true);
  });
});

describe("requireBinary", () => {
  it("names the Debian package when a binary is missing", () => {
    expect(() => requireBinary("aegis-no-such-binary", "aegis-no-such-package")).toThrow(
      /aegis-no-such-binary.*Debian package 'aegis-no-such-package'/,
    );
  });
});

describe("registry, anonymous", () => {
  let registry: RegistryServer;
  beforeAll(async () => {
    registry = await startRegistry();
  });
  afterAll(() => registry.stop());

  it("serves /v2/ on 127.0.0.1", async () => {
    expect(registry.host).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(registry.url).toBe(`http://${registry.host}`);
    const res = await fetch(`${registry.url}/v2/`);
    expect(res.status).toBe(200);
    expect(res.headers.get("docker-distribution-api-version")).toBe("registry/2.0");
  });

  it("pushes and pulls a blob into its data dir", async () => {
    const bytes = new TextEncoder().encode(`aegis blob ${Date.now()}`);
    const digest = await pushBlob(registry.url, "selftest/anon", bytes);
    const res = await fetch(`${registry.url}/v2/selftest/anon/blobs/${digest}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("docker-content-digest")).toBe(digest);
    expect(Buffer.from(await res.arrayBuffer())).toEqual(Buffer.from(bytes));
    const hex = digest.slice("sha256:".length);
    expect(existsSync(`${registry.dataDir}/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`)).toBe(true);
  });

  it("has deletes enabled", async () => {
    const digest = await pushBlob(registry.url, "selftest/anon", new TextEncoder().encode("delete me"));
    const del = await fetch(`${registry.url}/v2/selftest/anon/blobs/${digest}`, { method: "DELETE" });
    expect(del.status).toBe(202);
    const head = await fetch(`${registry.url}/v2/selftest/anon/blobs/${digest}`, { method: "HEAD" });
    expect(head.status).toBe(404);
  });
});

describe("registry, htpasswd", () => {
  let registry: RegistryServer;
  beforeAll(async () => {
    registry = await startRegistry({ auth: "htpasswd" });
  });
  afterAll(() => registry.stop());

  it("answers 401 with a Basic challenge without credentials", async () => {
    const res = await fetch(`${registry.url}/v2/`);
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toMatch(/^Basic realm=/);
  });

  it("answers 401 to a wrong password", async () => {
    const res = await fetch(`${registry.url}/v2/`, {
      headers: { authorization: basicAuth(registry.username ?? "", "wrong") },
    });
    expect(res.status).toBe(401);
  });

  it("answers 200 and accepts pushes with the test credentials", async () => {
    expect(registry.username).toBeTruthy();
    expect(registry.password).toBeTruthy();
    const authorization = basicAuth(registry.username ?? "", registry.password ?? "");
    const res = await fetch(`${registry.url}/v2/`, { headers: { authorization } });
    expect(res.status).toBe(200);
    const bytes = new TextEncoder().encode("htpasswd blob");
    const digest = await pushBlob(registry.url, "selftest/basic", bytes, authorization);
    expect(digest).toBe(sha256(bytes));
  });
});

describe("registry stop()", () => {
  it("frees the port and removes the data dir", async () => {
    const registry = await startRegistry();
    const port = Number(registry.host.split(":")[1]);
    expect(await canBind(port)).toBe(false);
    await registry.stop();
    expect(await canBind(port)).toBe(true);
    expect(existsSync(registry.dataDir)).toBe(false);
    await expect(fetch(`${registry.url}/v2/`)).rejects.toThrow();
    await registry.stop(); // idempotent
  });
});
