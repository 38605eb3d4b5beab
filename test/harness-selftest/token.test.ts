import { fetch } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRegistry } from "../harness/registry.js";
import type { RegistryServer } from "../harness/registry.js";
import { startTokenServer } from "../harness/token-server.js";
import type { TokenServer } from "../harness/token-server.js";
import { basicAuth, pushBlob } from "./oci-util.js";

const USER = "alice";
const PASS = "s3cret";
const REPO = "selftest/token";

/** Parses `Bearer realm="…",service="…",scope="…"` (token spec "How to authenticate"). */
function parseBearer(header: string | null): Record<string, string> {
  expect(header).toMatch(/^Bearer /);
  const params: Record<string, string> = {};
  for (const m of (header ?? "").matchAll(/(\w+)="([^"]*)"/g)) {
    if (m[1] !== undefined && m[2] !== undefined) params[m[1]] = m[2];
  }
  return params;
}

async function getToken(realm: string, service: string, scope: string | undefined, user: string, pass: string) {
  const url = new URL(realm);
  url.searchParams.set("service", service);
  if (scope !== undefined) url.searchParams.set("scope", scope);
  const res = await fetch(url, { headers: { authorization: basicAuth(user, pass) } });
  return { status: res.status, body: (await res.json()) as { token?: string; access_token?: string; expires_in?: number } };
}

function decodeJwtPart(token: string, index: number): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split(".")[index] ?? "", "base64url").toString("utf8")) as Record<string, unknown>;
}

describe("token server + registry (auth: token)", () => {
  let tokens: TokenServer;
  let registry: RegistryServer;
  beforeAll(async () => {
    tokens = await startTokenServer({ username: USER, password: PASS });
    registry = await startRegistry({ auth: "token", tokenServer: tokens });
  });
  afterAll(async () => {
    await registry.stop();
    await tokens.stop();
  });

  it("challenges anonymous /v2/ with realm and service (no scope on the base endpoint)", async () => {
    const res = await fetch(`${registry.url}/v2/`);
    expect(res.status).toBe(401);
    const challenge = parseBearer(res.headers.get("www-authenticate"));
    expect(challenge).toEqual({ realm: `${tokens.url}/token`, service: "aegis-test-registry" });
    expect(registry.username).toBe(USER);
    expect(registry.password).toBe(PASS);
    expect(registry.tokenServer).toBe(tokens);
  });

  it("challenges a repository endpoint with its scope", async () => {
    const res = await fetch(`${registry.url}/v2/${REPO}/tags/list`);
    expect(res.status).toBe(401);
    expect(parseBearer(res.headers.get("www-authenticate")).scope).toBe(`repository:${REPO}:pull`);
  });

  it("refuses wrong credentials with 401 and records the attempt", async () => {
    const before = tokens.requests.length;
    const { status, body } = await getToken(tokens.realm, tokens.service, `repository:${REPO}:pull`, USER, "nope");
    expect(status).toBe(401);
    expect(body.token).toBeUndefined();
    expect(tokens.requests.slice(before)).toEqual([
      { scope: `repository:${REPO}:pull`, service: "aegis-test-registry", authorized: false },
    ]);
  });

  it("issues an ES256 JWT that the registry accepts on /v2/", async () => {
    const { status, body } = await getToken(tokens.realm, tokens.service, undefined, USER, PASS);
    expect(status).toBe(200);
    expect(body.access_token).toBe(body.token);
    expect(body.expires_in).toBe(300);
    const token = body.token ?? "";
    expect(decodeJwtPart(token, 0)).toMatchObject({ typ: "JWT", alg: "ES256" });
    expect(decodeJwtPart(token, 1)).toMatchObject({ iss: "aegis-test-issuer", aud: "aegis-test-registry", sub: USER, access: [] });
    // raw r||s P-256 signature is exactly 64 bytes
    expect(Buffer.from(token.split(".")[2] ?? "", "base64url").length).toBe(64);

    const ok = await fetch(`${registry.url}/v2/`, { headers: { authorization: `Bearer ${token}` } });
    expect(ok.status).toBe(200);
    const forged = `${token.slice(0, -4)}AAAA`;
    const bad = await fetch(`${registry.url}/v2/`, { headers: { authorization: `Bearer ${forged}` } });
    expect(bad.status).toBe(401);
  });

  it("pushes a blob with a pull,push token and records the scope", async () => {
    const scope = `repository:${REPO}:pull,push`;
    const before = tokens.requests.length;
    const { body } = await getToken(tokens.realm, tokens.service, scope, USER, PASS);
    expect(decodeJwtPart(body.token ?? "", 1).access).toEqual([{ type: "repository", name: REPO, actions: ["pull", "push"] }]);
    const authorization = `Bearer ${body.token ?? ""}`;
    const bytes = new TextEncoder().encode("pushed with a token");
    const digest = await pushBlob(registry.url, REPO, bytes, authorization);
    const pulled = await fetch(`${registry.url}/v2/${REPO}/blobs/${digest}`, { headers: { authorization } });
    expect(pulled.status).toBe(200);
    expect(Buffer.from(await pulled.arrayBuffer())).toEqual(Buffer.from(bytes));
    expect(tokens.requests.slice(before)).toEqual([{ scope, service: "aegis-test-registry", authorized: true }]);
  });

  it("refuses a push with a pull-only token", async () => {
    const { body } = await getToken(tokens.realm, tokens.service, `repository:${REPO}:pull`, USER, PASS);
    const res = await fetch(`${registry.url}/v2/${REPO}/blobs/uploads/`, {
      method: "POST",
      headers: { authorization: `Bearer ${body.token ?? ""}` },
    });
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toContain('error="insufficient_scope"');
  });

  it("refuses a token granted for another repository", async () => {
    const { body } = await getToken(tokens.realm, tokens.service, "repository:selftest/other:pull", USER, PASS);
    const res = await fetch(`${registry.url}/v2/${REPO}/tags/list`, { headers: { authorization: `Bearer ${body.token ?? ""}` } });
    expect(res.status).toBe(401);
  });
});

describe("registry auth: token without a token server", () => {
  it("starts and stops its own token server", async () => {
    const registry = await startRegistry({ auth: "token" });
    try {
      const challenge = parseBearer((await fetch(`${registry.url}/v2/`)).headers.get("www-authenticate"));
      const realm = challenge.realm ?? "";
      const { status, body } = await getToken(realm, challenge.service ?? "", undefined, registry.username ?? "", registry.password ?? "");
      expect(status).toBe(200);
      const ok = await fetch(`${registry.url}/v2/`, { headers: { authorization: `Bearer ${body.token ?? ""}` } });
      expect(ok.status).toBe(200);
      expect(registry.tokenServer?.requests).toEqual([{ scope: "", service: "aegis-test-registry", authorized: true }]);
      await registry.stop();
      await expect(fetch(realm)).rejects.toThrow();
    } finally {
      await registry.stop();
    }
  });
});
