// The assigner's log, as a service's: pino (https://getpino.io), one
// structured line per request and a warning when Redis, the registry or NATS
// goes away (and a line when it comes back), once per change rather than per
// retry. JSON lines when stdout is not a terminal (journald, a log shipper),
// a short readable line on a terminal. Tokens and Authorization headers are
// never logged: a request's line carries the route template and who called
// (admin, agent or anonymous), not the URL or any header.
import type { IncomingMessage, ServerResponse } from "node:http";
import { pino, type Level, type Logger } from "pino";
import type { Principal } from "./auth.js";

export type { Logger } from "pino";

export const LOG_LEVELS: readonly (Level | "silent")[] = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

/** A logger that writes nothing: startAssigner's default when embedded (tests, benchmarks). */
export const SILENT: Logger = pino({ level: "silent" });

export interface LoggerOptions {
  level?: string;
  /** Where lines go; default stdout. */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Readable lines instead of JSON; default: whether the stream is a terminal. */
  readable?: boolean;
}

const LEVEL_NAMES: Readonly<Record<number, string>> = { 10: "TRACE", 20: "DEBUG", 30: "INFO", 40: "WARN", 50: "ERROR", 60: "FATAL" };

/**
 * One JSON line as people read it on a terminal: `12:00:01.234 INFO  GET
 * /agents 200 1.2ms admin`, or the message and its fields as key=value.
 */
function readableLine(json: string): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const { level, time, msg, pid: _pid, hostname: _hostname, name: _name, ...fields } = entry;
  const clock = typeof time === "string" ? time.slice(11, 23) : "";
  const label = (typeof level === "string" ? level.toUpperCase() : (LEVEL_NAMES[level as number] ?? String(level))).padEnd(5);
  if (msg === "request") {
    const { method, route, status, duration_ms: ms, principal, ...rest } = fields;
    return `${clock} ${label} ${String(method)} ${String(route)} ${String(status)} ${String(ms)}ms ${String(principal)}${pairs(rest)}\n`;
  }
  return `${clock} ${label} ${String(msg ?? "")}${pairs(fields)}\n`;
}

function pairs(fields: Record<string, unknown>): string {
  const text = Object.entries(fields)
    .filter(([, value]) => value !== undefined)
    .map(([key, value]) => `${key}=${typeof value === "string" ? value : JSON.stringify(value)}`)
    .join(" ");
  return text ? `  ${text}` : "";
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const stream = options.stream ?? process.stdout;
  const level = options.level ?? "info";
  if (!LOG_LEVELS.includes(level as Level)) throw new Error(`unknown log level "${level}" (one of ${LOG_LEVELS.join(", ")})`);
  const readable = options.readable ?? Boolean(stream.isTTY);
  // JSON to stdout through pino's asynchronous writer (sonic-boom, flushed at
  // exit): a line per request written synchronously to a pipe halved the
  // agents' poll rate; batched, it costs a few percent.
  const destination = readable ? { write: (line: string) => stream.write(readableLine(line)) } : options.stream ? stream : pino.destination({ dest: 1, sync: false });
  return pino(
    {
      name: "aegis-assigner",
      level,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      // No `redact`: the request line is built from named fields only (no
      // headers, no URL), and pino's redaction doubled the cost of a line.
    },
    destination,
  );
}

/**
 * What the request log knows of a request besides what node:http has: its
 * route template and caller, whether its line will be logged, and why it
 * failed, for a 5xx (its code, detail or cause, and message).
 */
const requestNotes = new WeakMap<IncomingMessage, { route?: string; principal?: Principal["kind"] | "metrics"; logged?: true; failure?: Record<string, unknown> }>();

/** Called by the router once a request is matched, and again once the caller is known (a scraper with --metrics-token: "metrics"). */
export function noteRequest(req: IncomingMessage, note: { route?: string; principal?: Principal | { kind: "metrics" } }): void {
  const notes = requestNotes.get(req) ?? {};
  if (note.route) notes.route = note.route;
  if (note.principal) notes.principal = note.principal.kind;
  requestNotes.set(req, notes);
}

/**
 * Puts why `req` failed (a 5xx) on its request line, one line per failure
 * (a Redis outage under a fleet's polls is a line per poll, not two).
 * False when no request line will be logged (info is off), or it was
 * already (the client left first): the caller logs the reason itself then.
 */
export function noteFailure(req: IncomingMessage, failure: Record<string, unknown>): boolean {
  const notes = requestNotes.get(req);
  if (!notes?.logged) return false;
  notes.failure = failure;
  return true;
}

/**
 * Logs `req` once its answer is out (or the connection is gone): method,
 * route template, status, duration and the kind of caller, at info; at
 * error for a 5xx, with why (noteFailure), also when the failure came after
 * the status went out (an aborted answer). Nothing is attached when info is
 * off, so a quiet assigner pays nothing per request.
 */
export function logRequest(logger: Logger, req: IncomingMessage, res: ServerResponse): void {
  if (!logger.isLevelEnabled("info")) return;
  requestNotes.set(req, { ...requestNotes.get(req), logged: true });
  const start = process.hrtime.bigint();
  res.once("close", () => {
    const notes = requestNotes.get(req);
    const line = {
      method: req.method,
      route: notes?.route ?? "unmatched",
      status: res.statusCode,
      duration_ms: Math.round(Number(process.hrtime.bigint() - start) / 1000) / 1000,
      principal: notes?.principal ?? "anonymous",
      ...(res.writableFinished ? {} : { aborted: true }),
      ...notes?.failure,
    };
    if (res.statusCode >= 500 || notes?.failure) logger.error(line, "request");
    else logger.info(line, "request");
    // The line is out: a failure that comes later (the handler still at work after the client left) logs its own.
    if (notes) delete notes.logged;
  });
}

/** The state of each dependency, as services.health() reports it. */
interface DependencyStates {
  store: "ok" | "unavailable";
  registry: "ok" | "unavailable";
  nats: "connected" | "disconnected" | "disabled";
}

/**
 * Checks the dependencies every `intervalMs` and logs each change of state
 * once: a warning when one goes away, info when it is back. Retries (ioredis
 * and NATS reconnect on their own, the registry is tried per request) are not
 * logged. `names` says what each is (`redis 127.0.0.1:6379`, say: hosts, never
 * URLs with their credentials).
 */
export function watchDependencies(
  check: () => Promise<DependencyStates>,
  names: Readonly<Record<keyof DependencyStates, string>>,
  logger: Logger,
  intervalMs: number,
  /** What is known to be down already (and was logged so): Redis that refused at start-up, say. */
  down: readonly (keyof DependencyStates)[] = [],
): { stop(): void } {
  const up: Record<keyof DependencyStates, boolean> = { store: !down.includes("store"), registry: !down.includes("registry"), nats: !down.includes("nats") };
  let running = false;
  const tick = async () => {
    if (running) return;
    running = true;
    try {
      const states = await check();
      const now = { store: states.store === "ok", registry: states.registry === "ok", nats: states.nats !== "disconnected" };
      for (const key of Object.keys(up) as (keyof DependencyStates)[]) {
        if (now[key] === up[key]) continue;
        up[key] = now[key];
        if (now[key]) logger.info({ dependency: key, endpoint: names[key] }, `${names[key]} is back`);
        else logger.warn({ dependency: key, endpoint: names[key] }, `${names[key]} is unavailable`);
      }
    } finally {
      running = false;
    }
  };
  const timer = setInterval(() => void tick().catch((err: unknown) => logger.error({ err }, "dependency check failed")), intervalMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
