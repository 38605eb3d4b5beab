// `aegis assigner serve` and the operator's commands that change assignments
// (assign, unassign; what they read is fleet-view.ts). Only `serve` loads the
// server, and only when it runs; the others use the client in assigner/api,
// loaded when they run too (cli/main.ts).
import type { Command } from "commander";
import type { AssignerClient } from "../../assigner/api/index.js";
import { InputError } from "../../errors.js";
import { env } from "../env.js";
import { report, type OutputOptions } from "../output.js";

interface ServeOptions {
  port: string;
  host: string;
  redis?: string;
  dataDir?: string;
  registry?: string;
  nats?: string;
  adminToken?: string;
  adminTokenFile?: string;
  enrollSecret?: string;
  trust?: string;
  maxUploadBytes?: string;
  maxConnections?: string;
  maxConnectionsPerClient?: string;
  metricsToken?: string;
  headersTimeout?: string;
  requestTimeout?: string;
  keepAliveTimeout?: string;
  telemetryMaxSkew?: string;
  logLevel: string;
  healthInterval?: string;
}

/** A positive number flag (unset: the assigner's default), times `scale` (seconds to ms). */
function positive(flag: string, value: string | undefined, scale = 1): number | undefined {
  if (value === undefined) return undefined;
  const number = Number(value);
  if (!Number.isFinite(number) || number <= 0) throw new InputError("INVALID_ARGUMENT", `--${flag} ${value} is not a positive number`);
  return Math.round(number * scale);
}

/**
 * The operator token, or the file to read it from: a flag wins over the
 * other's variable (a unit's --admin-token-file over an AEGIS_ADMIN_TOKEN
 * left in its environment file, which rotating the file would not change);
 * both given the same way is refused rather than one silently ignored.
 */
function adminTokenSource(options: ServeOptions, command: Command): { adminToken?: string; adminTokenFile?: string } {
  const { adminToken, adminTokenFile } = options;
  if (!adminToken || !adminTokenFile) return adminToken ? { adminToken } : adminTokenFile ? { adminTokenFile } : {};
  const tokenFlag = command.getOptionValueSource("adminToken") === "cli";
  if (tokenFlag !== (command.getOptionValueSource("adminTokenFile") === "cli")) return tokenFlag ? { adminToken } : { adminTokenFile };
  throw new InputError("INVALID_ARGUMENT", `both an admin token and an admin token file are given (${tokenFlag ? "--admin-token and --admin-token-file" : "AEGIS_ADMIN_TOKEN and AEGIS_ADMIN_TOKEN_FILE"}): give one`);
}

export function registerAssigner(program: Command): void {
  const assigner = program.command("assigner").description("the assigner service");
  assigner
    .command("serve")
    .description("serve the assigner HTTP API (embedded store unless --redis)")
    .option("--port <port>", "listen port (AEGIS_PORT)", env("AEGIS_PORT") ?? "8080")
    .option("--host <host>", "listen address (AEGIS_HOST)", env("AEGIS_HOST") ?? "127.0.0.1")
    .option("--redis <url>", "redis://… (AEGIS_REDIS_URL); unset: embedded store in --data-dir", env("AEGIS_REDIS_URL"))
    .option("--data-dir <dir>", "embedded store, generated admin token, default upload layout (AEGIS_DATA_DIR)", env("AEGIS_DATA_DIR"))
    .option("--registry <repo>", "where uploads are pushed: host/repo or oci:<dir> (AEGIS_REGISTRY)", env("AEGIS_REGISTRY"))
    .option("--nats <url>", "nats://… (AEGIS_NATS_URL); optional", env("AEGIS_NATS_URL"))
    .option("--admin-token <token>", "operator token (AEGIS_ADMIN_TOKEN); default: generated into <data-dir>/admin-token", env("AEGIS_ADMIN_TOKEN"))
    .option("--admin-token-file <file>", "read the operator token from a file (AEGIS_ADMIN_TOKEN_FILE)", env("AEGIS_ADMIN_TOKEN_FILE"))
    .option("--enroll-secret <secret>", "require this secret to register agents (AEGIS_ENROLL_SECRET)", env("AEGIS_ENROLL_SECRET"))
    .option("--trust <files>", "trusted public keys or trust file, comma-separated (AEGIS_TRUST)", env("AEGIS_TRUST"))
    .option("--max-upload-bytes <n>", "largest bundle POST /artifacts takes, decoded (AEGIS_MAX_UPLOAD_BYTES); default 16777216 (16 MiB)", env("AEGIS_MAX_UPLOAD_BYTES"))
    .option("--max-connections <n>", "open connections at most, agents' keep-alive polls included (AEGIS_MAX_CONNECTIONS); default 10000", env("AEGIS_MAX_CONNECTIONS"))
    .option("--max-connections-per-client <n>", "open connections at most from one client address (AEGIS_MAX_CONNECTIONS_PER_CLIENT); default: no cap of its own; not behind a load balancer or NAT, whose clients share its address", env("AEGIS_MAX_CONNECTIONS_PER_CLIENT"))
    .option("--metrics-token <token>", "GET /metrics needs this Bearer token or the operator's (AEGIS_METRICS_TOKEN); default: /metrics is public", env("AEGIS_METRICS_TOKEN"))
    .option("--headers-timeout <seconds>", "time to receive a request's headers (AEGIS_HEADERS_TIMEOUT); default 10", env("AEGIS_HEADERS_TIMEOUT"))
    .option("--request-timeout <seconds>", "time to receive a whole request, body included (AEGIS_REQUEST_TIMEOUT); default 120", env("AEGIS_REQUEST_TIMEOUT"))
    .option("--keep-alive-timeout <seconds>", "idle keep-alive connections are closed after this; above the agents' 30 s poll (AEGIS_KEEP_ALIVE_TIMEOUT); default 65", env("AEGIS_KEEP_ALIVE_TIMEOUT"))
    .option("--telemetry-max-skew <seconds>", "refuse agents' signed telemetry whose time is further than this from the assigner's clock (AEGIS_TELEMETRY_MAX_SKEW); default 300", env("AEGIS_TELEMETRY_MAX_SKEW"))
    .option("--log-level <level>", "fatal, error, warn, info (one line per request), debug, trace or silent (AEGIS_LOG_LEVEL); JSON lines unless stdout is a terminal", env("AEGIS_LOG_LEVEL") ?? "info")
    .option("--health-interval <seconds>", "how often Redis, the registry and NATS are checked, to log when one goes away or comes back (AEGIS_HEALTH_INTERVAL); default 5", env("AEGIS_HEALTH_INTERVAL"))
    .action(async (options: ServeOptions, command: Command) => {
      const port = Number(options.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new InputError("INVALID_ARGUMENT", `--port ${options.port} is not a port number`);
      const limits = {
        maxUploadBytes: positive("max-upload-bytes", options.maxUploadBytes),
        maxConnections: positive("max-connections", options.maxConnections),
        maxConnectionsPerClient: positive("max-connections-per-client", options.maxConnectionsPerClient),
        headersTimeoutMs: positive("headers-timeout", options.headersTimeout, 1000),
        requestTimeoutMs: positive("request-timeout", options.requestTimeout, 1000),
        keepAliveTimeoutMs: positive("keep-alive-timeout", options.keepAliveTimeout, 1000),
        telemetryMaxSkewMs: positive("telemetry-max-skew", options.telemetryMaxSkew, 1000),
        healthIntervalMs: positive("health-interval", options.healthInterval, 1000),
      };
      const [{ startAssigner }, { createLogger, LOG_LEVELS }] = await Promise.all([import("../../assigner/index.js"), import("../../assigner/logging.js")]);
      if (!(LOG_LEVELS as readonly string[]).includes(options.logLevel)) throw new InputError("INVALID_ARGUMENT", `--log-level ${options.logLevel} is not one of ${LOG_LEVELS.join(", ")}`);
      const logger = createLogger({ level: options.logLevel });
      const running = await startAssigner({
        logger,
        port,
        host: options.host,
        ...(options.redis ? { redisUrl: options.redis } : {}),
        ...(options.dataDir ? { dataDir: options.dataDir } : {}),
        ...(options.registry ? { registry: options.registry } : {}),
        ...(options.nats ? { natsUrl: options.nats } : {}),
        ...adminTokenSource(options, command),
        ...(options.enrollSecret ? { enrollSecret: options.enrollSecret } : {}),
        ...(options.trust ? { trust: options.trust } : {}),
        ...(options.metricsToken ? { metricsToken: options.metricsToken } : {}),
        ...Object.fromEntries(Object.entries(limits).filter(([, value]) => value !== undefined)),
      });
      logger.info(
        { url: running.url, store: options.redis ? "redis" : "embedded", nats: Boolean(options.nats), ...(running.adminTokenFile ? { admin_token_file: running.adminTokenFile } : {}) },
        `aegis assigner listening on ${running.url}`,
      );
      if (!options.enrollSecret) logger.warn("no --enroll-secret: anything that can reach this port can register a new host");
      const stop = async (signal: NodeJS.Signals) => {
        logger.info({ signal }, "stopping");
        await running.close();
        process.exit(0);
      };
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
    });
}

export interface ClientOptions extends OutputOptions {
  assigner: string;
  token?: string;
}

export async function client(options: ClientOptions): Promise<AssignerClient> {
  const token = options.token ?? env("AEGIS_ADMIN_TOKEN");
  if (!token) throw new InputError("INVALID_ARGUMENT", "no operator token: pass --token or set AEGIS_ADMIN_TOKEN");
  const { AssignerClient } = await import("../../assigner/api/index.js");
  return new AssignerClient(options.assigner, token);
}

export function withClientOptions(command: Command): Command {
  return command
    .option("--assigner <url>", "assigner URL (AEGIS_ASSIGNER_URL)", env("AEGIS_ASSIGNER_URL") ?? "http://127.0.0.1:8080")
    .option("--token <token>", "operator token (AEGIS_ADMIN_TOKEN)")
    .option("--json", "print JSON for scripts");
}

export function registerOperatorCommands(program: Command): void {
  for (const op of ["assign", "unassign"] as const) {
    const command = withClientOptions(
      program
        .command(op)
        .description(op === "assign" ? "assign an artifact (by digest) to a host" : "remove an artifact from a host")
        .argument("<digest>", "artifact id: sha256:…")
        .argument("<host>", "host id"),
    );
    if (op === "assign") command.option("--force", "assign even when the host's reported kernel cannot run the artifact's program");
    command.action(async (digest: string, host: string, options: ClientOptions & { force?: boolean }) => {
      const assigner = await client(options);
      const result = op === "assign" ? await assigner.assign(digest, host, { force: options.force ?? false }) : await assigner.unassign(digest, host);
      const what = result.changed ? (op === "assign" ? "assigned" : "unassigned") : op === "assign" ? "already assigned" : "was not assigned";
      report(options, `${digest} ${what} ${op === "assign" ? "to" : "from"} ${host} (host version ${result.version})`, result);
    });
  }
}
