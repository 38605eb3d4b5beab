// A real distribution 2.8.2 registry (Debian `docker-registry`) on a free
// loopback port. Config reference:
// https://distribution.github.io/distribution/about/configuration/
import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { join } from "node:path";
import { freePort } from "./ports.js";
import { makeTempDir, removeTempDir, requireBinary, run, spawnManaged, waitUntilReady, type StartError } from "./process.js";
import { startTokenServer } from "./token-server.js";
import type { TokenServer } from "./token-server.js";

export type RegistryAuth = "none" | "htpasswd" | "token";

export interface RegistryOptions {
  auth?: RegistryAuth;
  /** For auth "token": the token server to trust; one is started (and stopped) when omitted. */
  tokenServer?: TokenServer;
}

export interface RegistryServer {
  /** "127.0.0.1:PORT" */
  host: string;
  /** "http://127.0.0.1:PORT" */
  url: string;
  /** Filesystem storage root. */
  dataDir: string;
  /** Set for auth "htpasswd" and "token". */
  username?: string;
  password?: string;
  /** For auth "token": the token server in use (its `requests` show the flow). */
  tokenServer?: TokenServer;
  stop(): Promise<void>;
}

export const TEST_USERNAME = "aegis";
export const TEST_PASSWORD = "aegis-test-password";

const START_TIMEOUT_MS = 15_000;
const PORT_ATTEMPTS = 5;

function authSection(auth: RegistryAuth, htpasswdPath: string, tokenServer: TokenServer | undefined): string {
  switch (auth) {
    case "none":
      return "";
    case "htpasswd":
      return `auth:\n  htpasswd:\n    realm: aegis-test\n    path: ${JSON.stringify(htpasswdPath)}\n`;
    case "token":
      if (tokenServer === undefined) throw new Error("token auth needs a token server");
      return (
        "auth:\n  token:\n" +
        `    realm: ${JSON.stringify(tokenServer.realm)}\n` +
        `    service: ${JSON.stringify(tokenServer.service)}\n` +
        `    issuer: ${JSON.stringify(tokenServer.issuer)}\n` +
        `    rootcertbundle: ${JSON.stringify(tokenServer.certPath)}\n`
      );
  }
}

function configYaml(addr: string, dataDir: string, auth: string): string {
  // JSON strings are valid YAML scalars, so paths need no further quoting.
  // A fixed http.secret avoids the "No HTTP secret provided" warning;
  // upload purging is off so no background goroutine touches the temp dir.
  return (
    "version: 0.1\n" +
    "log:\n  level: error\n  accesslog:\n    disabled: true\n" +
    "storage:\n" +
    `  filesystem:\n    rootdirectory: ${JSON.stringify(dataDir)}\n` +
    "  delete:\n    enabled: true\n" +
    "  maintenance:\n    uploadpurging:\n      enabled: false\n" +
    "http:\n" +
    `  addr: ${JSON.stringify(addr)}\n` +
    `  secret: ${JSON.stringify(randomBytes(16).toString("hex"))}\n` +
    auth
  );
}

/** Resolves true once `GET /v2/` answers with any HTTP status. */
function probe(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(`${url}/v2/`, { method: "GET", timeout: 1000 }, (res) => {
      res.resume();
      resolve(true);
    });
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(false));
    req.end();
  });
}

export async function startRegistry(options: RegistryOptions = {}): Promise<RegistryServer> {
  const auth = options.auth ?? "none";
  const binary = requireBinary("docker-registry", "docker-registry");
  const dir = makeTempDir("aegis-registry-");
  let ownTokenServer: TokenServer | undefined;
  try {
    const dataDir = join(dir, "data");
    await mkdir(dataDir);
    const htpasswdPath = join(dir, "htpasswd");
    if (auth === "htpasswd") {
      // distribution only accepts bcrypt entries (-B)
      const htpasswd = requireBinary("htpasswd", "apache2-utils");
      await writeFile(htpasswdPath, await run(htpasswd, ["-Bbn", TEST_USERNAME, TEST_PASSWORD]));
    }
    let tokenServer = options.tokenServer;
    if (auth === "token" && tokenServer === undefined) {
      ownTokenServer = await startTokenServer({ username: TEST_USERNAME, password: TEST_PASSWORD });
      tokenServer = ownTokenServer;
    }
    const authYaml = authSection(auth, htpasswdPath, tokenServer);
    const configPath = join(dir, "config.yml");

    // freePort() can race with other processes: retry on "address already in use".
    let lastReason = "";
    for (let attempt = 0; attempt < PORT_ATTEMPTS; attempt++) {
      const port = await freePort();
      const host = `127.0.0.1:${port}`;
      const url = `http://${host}`;
      await writeFile(configPath, configYaml(host, dataDir, authYaml));
      const proc = spawnManaged(binary, ["serve", configPath], { cleanupDir: dir });
      const started = await waitUntilReady(proc, () => probe(url), `docker-registry on ${url}`, START_TIMEOUT_MS).then(
        () => undefined,
        (err: unknown) => err as StartError,
      );
      if (!started) {
        const credentials =
          auth === "htpasswd"
            ? { username: TEST_USERNAME, password: TEST_PASSWORD }
            : auth === "token" && tokenServer !== undefined
              ? { username: tokenServer.username, password: tokenServer.password, tokenServer }
              : {};
        let stopped = false;
        return {
          host,
          url,
          dataDir,
          ...credentials,
          async stop() {
            if (stopped) return;
            stopped = true;
            await proc.stop();
            await ownTokenServer?.stop();
            await removeTempDir(dir);
          },
        };
      }
      await proc.stop();
      lastReason = started.message;
      if (!/address already in use/i.test(started.output)) break;
    }
    throw new Error(`docker-registry failed to start: ${lastReason}`);
  } catch (err) {
    await ownTokenServer?.stop();
    await removeTempDir(dir);
    throw err;
  }
}
