// Starting and stopping an assigner: options resolved once (README "The
// assigner", docs/operations.md), the store chosen (Redis, or the embedded
// file store by default), NATS started when configured.
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdir, readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { describeError, InputError } from "../errors.js";
import { credentialsFromEnvironment, credentialsHost } from "../registry/index.js";
import { loadTrust, trustedRootFetcher } from "../signing/index.js";
import { atomicWrite } from "../util/index.js";
import { MAX_ASSIGNED, SELECTOR_ASSIGNMENTS_MAX } from "./api/index.js";
import { ArtifactSource } from "./artifacts.js";
import { Auth } from "./auth.js";
import { AssignerEvents } from "./events.js";
import { capConnectionsPerClient } from "./connections.js";
import { createRequestHandler } from "./http.js";
import { SILENT, watchDependencies, type Logger } from "./logging.js";
import { AssignerMetrics } from "./metrics.js";
import { AssignerServices, DEFAULT_TELEMETRY_MAX_SKEW_MS } from "./services.js";
import { EmbeddedStore } from "./store/embedded.js";
import { RedisStore } from "./store/redis.js";
import type { AssignerStore } from "./store/store.js";

export interface AssignerOptions {
  port?: number;
  host?: string;
  /** redis://…; unset: the embedded store in dataDir. */
  redisUrl?: string;
  /** Default ./.aegis/assigner */
  dataDir?: string;
  /** Where uploads are pushed: host/repo or oci:<dir>; default oci:<dataDir>/oci. */
  registry?: string;
  natsUrl?: string;
  /** Base of the waits between attempts to reach NATS, and to subscribe again after a refusal (ms); default 500. */
  natsRetryMs?: number;
  adminToken?: string;
  adminTokenFile?: string;
  enrollSecret?: string;
  /** Public key files / trust files (comma-separated) for the `signature` field. */
  trust?: string;
  /** Prefix of Redis keys; default "aegis". */
  redisPrefix?: string;
  /** The largest bundle POST /artifacts takes (decoded); default 16 MiB. */
  maxUploadBytes?: number;
  /** Open connections at most, agents' keep-alive polls included; default 10,000. */
  maxConnections?: number;
  /** Open connections at most from one client address; default: no cap of its own (only maxConnections). */
  maxConnectionsPerClient?: number;
  /** When set, GET /metrics needs this token (or the operator's) as a Bearer token; default: public. */
  metricsToken?: string;
  /** Time to receive a request's headers; default 10 s. */
  headersTimeoutMs?: number;
  /** Time to receive a whole request, body included; default 120 s. */
  requestTimeoutMs?: number;
  /** How long an idle keep-alive connection stays open; default 65 s. */
  keepAliveTimeoutMs?: number;
  /** How far an agent's signed telemetry may be from this clock; default 5 minutes. */
  telemetryMaxSkewMs?: number;
  /** Most artifacts a host may be assigned (directly and through selectors); default and most MAX_ASSIGNED, what an agent takes. */
  maxAssignedPerHost?: number;
  /** Selector assignments held at most, checked in the store's atomic step; default SELECTOR_ASSIGNMENTS_MAX (tests set a small one). */
  maxSelectorAssignments?: number;
  /** Where requests and dependency changes are logged (logging.ts); default: nowhere. */
  logger?: Logger;
  /** How often Redis, the registry and NATS are checked, to log when one goes away or comes back; default 5 s. */
  healthIntervalMs?: number;
}

/**
 * Defaults of the request limits (README "The assigner"). Agents poll every
 * 30 s on keep-alive connections, so an idle one is kept past that (and past
 * a load balancer's usual 60 s); a fleet of thousands of hosts fits the
 * connection cap; a bundle is far below the upload cap (a policy.json and one
 * eBPF object); a slow client gets a request's headers in 10 s and a 16 MiB
 * upload in 120 s.
 */
const LIMIT_DEFAULTS: Readonly<Record<"maxUploadBytes" | "maxConnections" | "headersTimeoutMs" | "requestTimeoutMs" | "keepAliveTimeoutMs" | "telemetryMaxSkewMs" | "healthIntervalMs" | "maxAssignedPerHost" | "maxSelectorAssignments", number>> = {
  maxUploadBytes: 16 * 1024 * 1024,
  maxConnections: 10_000,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 120_000,
  keepAliveTimeoutMs: 65_000,
  telemetryMaxSkewMs: DEFAULT_TELEMETRY_MAX_SKEW_MS,
  healthIntervalMs: 5000,
  maxAssignedPerHost: MAX_ASSIGNED,
  maxSelectorAssignments: SELECTOR_ASSIGNMENTS_MAX,
};

export interface RunningAssigner {
  url: string;
  server: Server;
  services: AssignerServices;
  adminToken: string;
  /** Where the generated admin token was written, when none was given. */
  adminTokenFile?: string;
  close(): Promise<void>;
}

export const VERSION = "0.1.0";

/** The operator token: given, read from a file, or generated once and kept in the data dir. */
async function resolveAdminToken(options: AssignerOptions, dataDir: string): Promise<{ token: string; file?: string }> {
  if (options.adminToken) return { token: options.adminToken };
  const file = options.adminTokenFile ?? join(dataDir, "admin-token");
  try {
    const token = (await readFile(file, "utf8")).trim();
    if (token) return { token, file };
    // A given file that is empty is a mistake (a failed secret mount, say):
    // generating a token into it would hide that, and keep its permissions.
    if (options.adminTokenFile) throw new InputError("INVALID_ARGUMENT", `admin token file ${file} is empty`);
  } catch (err) {
    if (options.adminTokenFile) throw err instanceof InputError ? err : new InputError("FILE_NOT_FOUND", `cannot read admin token file ${file}: ${(err as Error).message}`, { cause: err });
  }
  const token = randomBytes(32).toString("base64url");
  await mkdir(dataDir, { recursive: true });
  // A new file (atomicWrite renames one into place), so 0600 holds even over an old one.
  await atomicWrite(file, token + "\n", { mode: 0o600 });
  return { token, file };
}

function definedLimits(options: AssignerOptions): Partial<typeof LIMIT_DEFAULTS> {
  const limits: Partial<Record<keyof typeof LIMIT_DEFAULTS, number>> = {};
  // Each is given or left to its default; 0 or a negative one is a mistake, not "no limit".
  for (const key of Object.keys(LIMIT_DEFAULTS) as (keyof typeof LIMIT_DEFAULTS)[]) {
    const value = options[key];
    if (value === undefined) continue;
    if (!Number.isFinite(value) || value <= 0) throw new InputError("INVALID_ARGUMENT", `${key} must be a positive number, not ${value}`);
    limits[key] = value;
  }
  return limits;
}

/** The store, and whether it was down at start-up (logged here, so the watch does not say it again). */
async function openStore(options: AssignerOptions, dataDir: string, logger: Logger, selectorAssignmentsMax: number): Promise<{ store: AssignerStore; down: boolean }> {
  if (!options.redisUrl) return { store: await EmbeddedStore.open(join(dataDir, "store.json"), { selectorAssignmentsMax }), down: false };
  const store = new RedisStore(options.redisUrl, { ...(options.redisPrefix ? { prefix: options.redisPrefix } : {}), selectorAssignmentsMax });
  // Start even if Redis is down: the API answers 503 until it is back.
  const endpoint = dependencyName(options.redisUrl, "redis");
  try {
    await store.connect();
    return { store, down: false };
  } catch (err) {
    logger.warn({ dependency: "store", endpoint }, `${endpoint} is unavailable (${describeError(err)}); retrying in the background`);
    return { store, down: true };
  }
}

/** A dependency as the log names it: its kind and host, never a URL's credentials. */
function dependencyName(url: string, kind: string): string {
  try {
    return `${kind} ${new URL(url).host}`;
  } catch {
    return kind;
  }
}

export async function startAssigner(options: AssignerOptions = {}): Promise<RunningAssigner> {
  const dataDir = resolve(options.dataDir ?? ".aegis/assigner");
  const perClient = options.maxConnectionsPerClient;
  if (perClient !== undefined && !(Number.isInteger(perClient) && perClient > 0)) throw new InputError("INVALID_ARGUMENT", `maxConnectionsPerClient must be a positive integer, not ${perClient}`);
  if (options.metricsToken === "") throw new InputError("INVALID_ARGUMENT", "the metrics token is empty");
  // Registry credentials without the one host they are for: refuse to start,
  // rather than fail at the first registration.
  credentialsHost();
  const admin = await resolveAdminToken(options, dataDir);
  const trust = options.trust ? await loadTrust([options.trust], { fetchTrustedRoot: trustedRootFetcher({ credentials: credentialsFromEnvironment }) }) : undefined;
  const logger = options.logger ?? SILENT;
  // Checked before the store opens: the store holds the cap on selector assignments, in its atomic step.
  const limits = { ...LIMIT_DEFAULTS, ...definedLimits(options) };
  const { store, down: storeDown } = await openStore(options, dataDir, logger, limits.maxSelectorAssignments);
  const metrics = new AssignerMetrics();
  const uploadRepository = options.registry ?? `oci:${join(dataDir, "oci")}`;
  // Redis is shared by several assigners (docs/operations.md); a layout on this machine is not: an agent whose
  // poll another assigner answers cannot fetch what was uploaded here. A warning, not a refusal: one assigner
  // on Redis (the tests, a small site) works as it is.
  if (options.redisUrl && !options.registry) {
    logger.warn(
      { uploads: uploadRepository },
      `uploads (POST /artifacts with data) go to ${uploadRepository}, on this machine, while the store is shared Redis: another assigner on this Redis cannot serve them; give every assigner the same --registry`,
    );
  }
  const artifacts = new ArtifactSource({
    uploadRepository,
    // Registry credentials come from the assigner's environment, as the CLI's do.
    registryOptions: { credentials: credentialsFromEnvironment },
    ...(trust ? { trust } : {}),
  });
  const auth = new Auth(store, { adminToken: admin.token, ...(options.enrollSecret ? { enrollSecret: options.enrollSecret } : {}) });
  const events: AssignerEvents | undefined = options.natsUrl
    ? AssignerEvents.start(options.natsUrl, {
        // Messages arrive only after start-up, once `services` exists.
        telemetry: (message, hostId): Promise<boolean> => services.recordTelemetry(message, hostId),
        malformed: (hostId, why) => services.refuseMalformed(hostId, why),
        failed: (hostId, err) => services.notRecorded(hostId, err),
        refused: (use, err) =>
          logger.error({ dependency: "nats", endpoint: dependencyName(options.natsUrl!, "nats") }, `NATS refused the assigner's ${use} (${describeError(err)}): NATS counts as unavailable until it accepts them`),
        accepted: (use) => logger.info({ dependency: "nats", endpoint: dependencyName(options.natsUrl!, "nats") }, `NATS takes the assigner's ${use} again`),
      }, options.natsRetryMs !== undefined ? { retryMs: options.natsRetryMs } : {})
    : undefined;
  // More than an agent takes would have the assigner accept changes that its agents then refuse whole.
  if (limits.maxAssignedPerHost > MAX_ASSIGNED) throw new InputError("INVALID_ARGUMENT", `maxAssignedPerHost must be at most ${MAX_ASSIGNED} (what an agent takes), not ${limits.maxAssignedPerHost}`);
  const services = new AssignerServices(store, auth, artifacts, metrics, events, { telemetryMaxSkewMs: limits.telemetryMaxSkewMs, maxAssignedPerHost: limits.maxAssignedPerHost }, logger);
  const requestTimeout = limits.requestTimeoutMs;
  // Node refuses a headers timeout longer than the request timeout.
  const headersTimeout = Math.min(limits.headersTimeoutMs, requestTimeout);
  const handler = createRequestHandler(services, VERSION, { maxUploadBytes: limits.maxUploadBytes, ...(options.metricsToken !== undefined ? { metricsToken: options.metricsToken } : {}) }, logger);
  const server = createServer(
    {
      headersTimeout,
      requestTimeout,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      // Node enforces both timeouts on this tick (default 30 s), so a short timeout needs a short tick.
      connectionsCheckingInterval: Math.max(50, Math.min(1000, headersTimeout / 4)),
    },
    handler,
  );
  server.maxConnections = limits.maxConnections;
  if (perClient !== undefined) capConnectionsPerClient(server, perClient, logger);
  // The answer to Expect: 100-continue waits for the caller to be known (http.ts, readBody).
  server.on("checkContinue", handler);
  await new Promise<void>((done, fail) => {
    server.once("error", fail);
    server.listen(options.port ?? 8080, options.host ?? "127.0.0.1", () => done());
  });
  // Only when someone reads the warnings: the registry check is a request.
  const watch = !logger.isLevelEnabled("warn") ? undefined : watchDependencies(
    () => services.health(),
    {
      store: options.redisUrl ? dependencyName(options.redisUrl, "redis") : "the embedded store",
      // host/repo or oci:<dir>: no credentials in either.
      registry: `registry ${uploadRepository}`,
      nats: options.natsUrl ? dependencyName(options.natsUrl, "nats") : "nats",
    },
    logger,
    limits.healthIntervalMs,
    storeDown ? ["store"] : [],
  );
  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}`,
    server,
    services,
    adminToken: admin.token,
    ...(admin.file ? { adminTokenFile: admin.file } : {}),
    async close() {
      watch?.stop();
      await new Promise<void>((done) => {
        server.close(() => done());
        server.closeAllConnections();
      });
      await events?.close();
      await store.close();
    },
  };
}
