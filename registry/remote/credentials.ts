// Registry credentials from the environment, for the programs that own it
// (the CLI, the assigner) to pass to the client, which reads nothing itself.
// First match wins: AEGIS_REGISTRY_USERNAME / AEGIS_REGISTRY_PASSWORD for the
// one host AEGIS_REGISTRY_HOST names (never for any registry that asks: a
// reference an operator registers may name a hostile one), then the Docker
// config file ($DOCKER_CONFIG/config.json or ~/.docker/config.json)
// that `docker login` and `oras login` write. Credential helpers (credsStore,
// credHelpers) and identity tokens are not supported.
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { InputError } from "../../errors.js";

export interface Credentials {
  username: string;
  password: string;
}

/** The credentials for one registry host ("host[:port]"), or none. */
export type CredentialLookup = (registry: string) => Credentials | undefined;

interface DockerConfig {
  auths?: Record<string, { auth?: string; username?: string; password?: string }>;
}

/**
 * The environment's pair, when `registry` ("host[:port]") is the host
 * AEGIS_REGISTRY_HOST names. A username without that setting is refused
 * rather than sent to whichever registry challenges for it.
 */
export function credentialsFromEnv(registry: string, env: NodeJS.ProcessEnv = process.env): Credentials | undefined {
  const host = credentialsHost(env);
  if (host === undefined) return undefined;
  return host.toLowerCase() === registry.toLowerCase() ? { username: env.AEGIS_REGISTRY_USERNAME!, password: env.AEGIS_REGISTRY_PASSWORD! } : undefined;
}

/**
 * The host the environment's credentials are for, or undefined when there
 * are none; throws when a username is set without AEGIS_REGISTRY_HOST, so a
 * service can refuse to start rather than fail at its first pull.
 */
export function credentialsHost(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (!env.AEGIS_REGISTRY_USERNAME || env.AEGIS_REGISTRY_PASSWORD === undefined) return undefined;
  const host = env.AEGIS_REGISTRY_HOST?.trim();
  if (!host) {
    throw new InputError(
      "INVALID_ARGUMENT",
      "AEGIS_REGISTRY_USERNAME is set but AEGIS_REGISTRY_HOST is not: set it to the registry host[:port] the credentials are for",
    );
  }
  return host;
}

export function credentialsFromDockerConfig(registry: string, env: NodeJS.ProcessEnv = process.env): Credentials | undefined {
  const file = join(env.DOCKER_CONFIG ?? join(homedir(), ".docker"), "config.json");
  let config: DockerConfig;
  try {
    config = JSON.parse(readFileSync(file, "utf8")) as DockerConfig;
  } catch {
    return undefined;
  }
  // Docker Hub's key is a URL; others are host[:port], sometimes with a scheme.
  const entry = Object.entries(config.auths ?? {}).find(([key]) => key.replace(/^https?:\/\//, "").replace(/\/.*$/, "") === registry)?.[1];
  if (!entry) return undefined;
  if (entry.username && entry.password !== undefined) return { username: entry.username, password: entry.password };
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon > 0) return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  return undefined;
}

/** The CLI's and the assigner's lookup: the environment's pair for its host, else the Docker config's entry for `registry`. */
export function credentialsFromEnvironment(registry: string, env: NodeJS.ProcessEnv = process.env): Credentials | undefined {
  return credentialsFromEnv(registry, env) ?? credentialsFromDockerConfig(registry, env);
}
