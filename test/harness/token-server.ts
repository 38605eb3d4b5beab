// A Docker registry token server for tests.
// Flow: https://distribution.github.io/distribution/spec/auth/token/
// JWT format accepted by distribution 2.8:
// https://distribution.github.io/distribution/spec/auth/jwt/
import { createPrivateKey, randomUUID, sign, timingSafeEqual, X509Certificate } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { makeTempDir, removeTempDir, requireBinary, run } from "./process.js";

export const TOKEN_SERVICE = "aegis-test-registry";
export const TOKEN_ISSUER = "aegis-test-issuer";
/** Token lifetime, also answered as `expires_in`. */
export const TOKEN_TTL_SECONDS = 300;

export interface TokenRequestRecord {
  /** The `scope` parameters, space-separated (OAuth2 style); "" when none. */
  scope: string;
  service: string;
  authorized: boolean;
}

export interface TokenServer {
  /** e.g. "http://127.0.0.1:PORT"; the realm is `${url}/token`. */
  url: string;
  realm: string;
  service: string;
  issuer: string;
  /** PEM file with the self-signed signing certificate (registry `rootcertbundle`). */
  certPath: string;
  username: string;
  password: string;
  /** Every /token request, in arrival order. */
  requests: TokenRequestRecord[];
  stop(): Promise<void>;
}

interface AccessEntry {
  type: string;
  name: string;
  actions: string[];
}

/**
 * Parses `type:name:actions` (spec "Requesting a Token"). The name may
 * itself contain ':' (a registry host with a port), so split on the first
 * and last colons.
 */
function parseScope(scope: string): AccessEntry | undefined {
  const first = scope.indexOf(":");
  const last = scope.lastIndexOf(":");
  if (first <= 0 || last <= first + 1) return undefined;
  const actions = scope
    .slice(last + 1)
    .split(",")
    .filter((a) => a !== "");
  return { type: scope.slice(0, first), name: scope.slice(first + 1, last), actions };
}

function base64url(data: string | Buffer): string {
  return Buffer.from(data).toString("base64url");
}

function sameSecret(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  return ab.length === bb.length && timingSafeEqual(ab, bb);
}

function basicCredentials(req: IncomingMessage): { user: string; pass: string } | undefined {
  const header = req.headers.authorization;
  if (header === undefined || !/^basic /i.test(header)) return undefined;
  const decoded = Buffer.from(header.slice(6).trim(), "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon < 0) return undefined;
  return { user: decoded.slice(0, colon), pass: decoded.slice(colon + 1) };
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

export async function startTokenServer(options: { username: string; password: string }): Promise<TokenServer> {
  const openssl = requireBinary("openssl", "openssl");
  const dir = makeTempDir("aegis-token-");
  try {
    const keyPath = join(dir, "key.pem");
    const certPath = join(dir, "cert.pem");
    // One EC P-256 key + self-signed cert per server: ES256 tokens whose x5c
    // chain the registry verifies against `rootcertbundle`.
    await run(openssl, [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
      "-nodes", "-keyout", keyPath, "-out", certPath,
      "-subj", "/CN=aegis-test-token-issuer", "-days", "2",
    ]);
    const privateKey = createPrivateKey(await readFile(keyPath));
    const certDer = new X509Certificate(await readFile(certPath)).raw.toString("base64");

    const requests: TokenRequestRecord[] = [];
    const server = createServer((req, res) => {
      handle(req, res, { options, requests, privateKey, certDer });
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    const { port } = server.address() as AddressInfo;
    const url = `http://127.0.0.1:${port}`;

    let stopped = false;
    return {
      url,
      realm: `${url}/token`,
      service: TOKEN_SERVICE,
      issuer: TOKEN_ISSUER,
      certPath,
      username: options.username,
      password: options.password,
      requests,
      async stop() {
        if (stopped) return;
        stopped = true;
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
        await removeTempDir(dir);
      },
    };
  } catch (err) {
    await removeTempDir(dir);
    throw err;
  }
}

interface HandlerContext {
  options: { username: string; password: string };
  requests: TokenRequestRecord[];
  privateKey: KeyObject;
  certDer: string;
}

function handle(req: IncomingMessage, res: ServerResponse, ctx: HandlerContext): void {
  req.resume();
  const url = new URL(req.url ?? "/", "http://token.invalid");
  if (url.pathname !== "/token") {
    sendJson(res, 404, { error: "not found" });
    return;
  }
  // Only the GET flow is implemented; clients trying the OAuth2 POST flow
  // first (containerd) fall back to GET on 405.
  if (req.method !== "GET") {
    sendJson(res, 405, { error: "method not allowed" }, { allow: "GET" });
    return;
  }
  const scopes = url.searchParams.getAll("scope").flatMap((s) => s.split(" ")).filter((s) => s !== "");
  const service = url.searchParams.get("service") ?? "";
  const creds = basicCredentials(req);
  const authorized =
    creds !== undefined && sameSecret(creds.user, ctx.options.username) && sameSecret(creds.pass, ctx.options.password);
  ctx.requests.push({ scope: scopes.join(" "), service, authorized });
  if (!authorized || creds === undefined) {
    sendJson(res, 401, { errors: [{ code: "UNAUTHORIZED", message: "invalid username or password" }] }, {
      "www-authenticate": 'Basic realm="aegis-test-token"',
    });
    return;
  }
  const access = scopes.map(parseScope).filter((a): a is AccessEntry => a !== undefined);
  const token = signToken(ctx, { subject: creds.user, service, access });
  sendJson(res, 200, {
    token,
    access_token: token,
    expires_in: TOKEN_TTL_SECONDS,
    issued_at: new Date().toISOString(),
  });
}

function signToken(ctx: HandlerContext, grant: { subject: string; service: string; access: AccessEntry[] }): string {
  const now = Math.floor(Date.now() / 1000);
  const header = { typ: "JWT", alg: "ES256", x5c: [ctx.certDer] };
  const claims = {
    iss: TOKEN_ISSUER,
    sub: grant.subject,
    aud: grant.service,
    exp: now + TOKEN_TTL_SECONDS,
    // backdated a little so the registry's clock check never rejects a fresh token
    nbf: now - 10,
    iat: now,
    jti: randomUUID(),
    access: grant.access,
  };
  const signingInput = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
  // JOSE ES256 signatures are raw r||s (RFC 7518 §3.4), not DER.
  const signature = sign("sha256", Buffer.from(signingInput), { key: ctx.privateKey, dsaEncoding: "ieee-p1363" });
  return `${signingInput}.${base64url(signature)}`;
}
