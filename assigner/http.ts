// The HTTP server: the route table on Express 5, with the agents' poll
// (GET /artifacts/for-host/{host_id}) answered before Express. That one
// route carries nearly all traffic (every host, every 30 s), and Express's
// per-request cost is several times a Redis read's; see bench/assigner.ts.
import type { IncomingMessage, ServerResponse } from "node:http";
import express, { type NextFunction, type Request, type Response } from "express";
import type { z } from "zod";
import { AssignerError, HostId } from "./api/index.js";
import { toAssignerError } from "./errors.js";
import { logRequest, noteFailure, noteRequest, SILENT, type Logger } from "./logging.js";
import { openApiDocument } from "./openapi.js";
import { ROUTES, type Route } from "./routes.js";
import type { AssignerServices } from "./services.js";
import { maxUploadBodyBytes, scanUploadBody, type Upload } from "./upload.js";

const FOR_HOST = "/artifacts/for-host/";
/** Bodies other than the upload (a registration, say): a few small fields. */
const SMALL_BODY_LIMIT = 64 * 1024;

export interface HttpLimits {
  /** The largest bundle POST /artifacts takes, decoded, in bytes. */
  maxUploadBytes: number;
  /** When set, GET /metrics needs this token (or the operator's) as a Bearer token; unset, it is public. */
  metricsToken?: string;
}

function parseInput<T>(schema: z.ZodType<T>, value: unknown, where: string): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const field = issue.path.length > 0 ? `${where}.${issue.path.join(".")}` : where;
  throw new AssignerError("BAD_REQUEST", `${field}: ${issue.message}`);
}

/**
 * A connection is kept alive only for a caller that proved who it is: an
 * anonymous request (health, metrics, OpenAPI, a registration, a refused
 * token) is answered with Connection: close. Else one client could hold
 * every --max-connections slot with idle connections, a cheap request on
 * each a minute, and lock agents and operators out.
 */
function closeUntilKnown(res: ServerResponse): void {
  res.setHeader("connection", "close");
}

/** The caller proved who it is: its connection may stay open for its next request. */
function keepAlive(res: ServerResponse): void {
  res.removeHeader("connection");
}

function sendError(res: ServerResponse, err: unknown, logger: Logger): void {
  const error = toAssignerError(err);
  // A 5xx is the operator's to act on: its reason is logged (codes and messages name no token), on the request's line if it has one.
  if (error.status >= 500) {
    const reason = { code: error.code, ...(error.code === "INTERNAL" ? { err: error.cause } : {}), ...(error.detail ? { detail: error.detail } : {}), error: error.message };
    if (!noteFailure(res.req, reason)) logger.error(reason, error.code === "INTERNAL" ? "internal error" : error.message);
  }
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify({ error: error.message, code: error.code, ...(error.detail ? { detail: error.detail } : {}) });
  // A body not read to its end (a 401 before it, a 413 within it) is not
  // read on: Node would drain it to keep the connection alive, so the
  // connection is closed once the answer is out. A refused caller (401,
  // 403) keeps no connection either (closeUntilKnown).
  const close = (res.req && !res.req.complete) || error.status === 401 || error.status === 403 ? { connection: "close" } : {};
  res.writeHead(error.status, { "content-type": "application/json", "content-length": Buffer.byteLength(body), ...close });
  res.end(body);
}

/** Reads a small body whole: at most `limit` bytes, refused as it passes. */
async function readSmall(req: Request, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  // Not destroyed when refused part-way: the 413 still goes out (sendError closes the connection after it).
  for await (const chunk of req.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new AssignerError("PAYLOAD_TOO_LARGE", `request body is too large (at most ${limit} bytes)`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/**
 * The body of a route that takes one, read only now that the caller is
 * known: the upload streamed (upload.ts), anything else read whole up to
 * the route's small limit. Too large a Content-Length is refused before a
 * byte is read. A client that sent Expect: 100-continue is told to go on
 * here, not before.
 */
async function readBody(route: Route, req: Request, res: Response, limits: HttpLimits): Promise<{ json: unknown; upload?: Upload }> {
  if (!req.is("application/json")) return { json: undefined };
  const encoding = req.headers["content-encoding"];
  if (encoding && encoding.toLowerCase() !== "identity") throw new AssignerError("UNSUPPORTED_MEDIA_TYPE", `unsupported Content-Encoding: ${encoding}`);
  const charset = /;\s*charset=([^;\s]+)/i.exec(req.headers["content-type"] ?? "")?.[1]?.replace(/"/g, "").toLowerCase();
  if (charset && charset !== "utf-8" && charset !== "utf8") throw new AssignerError("UNSUPPORTED_MEDIA_TYPE", `unsupported charset: ${charset}`);
  const limit = route.streamsUpload ? maxUploadBodyBytes(limits.maxUploadBytes) : (route.bodyLimit ?? SMALL_BODY_LIMIT);
  const length = Number(req.headers["content-length"] ?? 0);
  if (length > limit) {
    const what = route.streamsUpload ? `this assigner takes bundles up to ${limits.maxUploadBytes} bytes (--max-upload-bytes)` : `at most ${limit} bytes`;
    throw new AssignerError("PAYLOAD_TOO_LARGE", `request body is too large: ${what}`);
  }
  if (req.headers.expect?.toLowerCase() === "100-continue") res.writeContinue();
  let text: string;
  let upload: Upload | undefined;
  if (route.streamsUpload) ({ rest: text, upload } = await scanUploadBody(req, limits.maxUploadBytes, length));
  else text = await readSmall(req, limit);
  try {
    return { json: JSON.parse(text), ...(upload ? { upload } : {}) };
  } catch (err) {
    throw new AssignerError("BAD_REQUEST", `malformed JSON body: ${(err as Error).message}`);
  }
}

function mount(app: express.Express, route: Route, services: AssignerServices, limits: HttpLimits): void {
  const handler = route.handler;
  if (!handler) return;
  const path = route.path.replace(/\{(\w+)\}/g, ":$1");
  app[route.method](path, async (req: Request, res: Response, next: NextFunction) => {
    const done = services.metrics.observe(route.method, route.path);
    res.on("finish", () => done(res.statusCode));
    noteRequest(req, { route: route.path });
    try {
      // Who is calling, before a byte of the body is read: a caller without a
      // token cannot make the assigner hold a large body.
      const principal = route.access === "public" ? undefined : await services.auth.authenticate(req.headers.authorization);
      if (principal) {
        noteRequest(req, { principal });
        keepAlive(res);
      }
      if (route.access === "admin") services.auth.requireAdmin(principal!);
      const params = route.params ? parseInput(route.params, req.params, "path") : undefined;
      route.authorize?.(principal!, params);
      const query = route.query ? parseInput(route.query, req.query, "query") : undefined;
      const read = route.body ? await readBody(route, req, res, limits) : undefined;
      if (read && read.json === undefined) throw new AssignerError("BAD_REQUEST", "request body must be JSON (Content-Type: application/json)");
      const body = route.body ? parseInput(route.body, read!.json, "body") : undefined;
      const result = await handler({ req, res, params, query, body, principal, services, upload: read?.upload });
      if (result) res.status(result.status ?? route.responseStatus ?? 200).json(result.json);
    } catch (err) {
      next(err);
    }
  });
}

export function createRequestHandler(services: AssignerServices, version: string, limits: HttpLimits, logger: Logger = SILENT): (req: IncomingMessage, res: ServerResponse) => void {
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);
  const openapi = JSON.stringify(openApiDocument(ROUTES, version));
  app.get("/openapi.json", (req, res) => {
    noteRequest(req, { route: "/openapi.json" });
    res.type("application/json").send(openapi);
  });
  const metricsReader = limits.metricsToken === undefined ? undefined : services.auth.tokenCheck(limits.metricsToken);
  app.get("/metrics", async (req, res) => {
    noteRequest(req, { route: "/metrics" });
    if (metricsReader) {
      // The metrics token, or the operator's: a scraper needs no more than this route.
      const authorization = req.headers.authorization;
      if (metricsReader(authorization)) noteRequest(req, { principal: { kind: "metrics" } });
      else {
        const principal = await services.auth.authenticate(authorization);
        services.auth.requireAdmin(principal);
        noteRequest(req, { principal });
      }
      keepAlive(res);
    }
    res.type(services.metrics.registry.contentType).send(await services.metrics.registry.metrics());
  });
  for (const route of ROUTES) mount(app, route, services, limits);
  app.use((req: Request) => {
    throw new AssignerError("NOT_FOUND", `no such endpoint: ${req.method} ${req.path}`);
  });
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => sendError(res, err, logger));

  return (req, res) => {
    logRequest(logger, req, res);
    closeUntilKnown(res);
    if ((req.method === "GET" || req.method === "HEAD") && req.url?.startsWith(FOR_HOST)) void serveForHost(req, res, services, logger);
    else app(req, res);
  };
}

/**
 * GET (and HEAD) /artifacts/for-host/{host_id} on plain node:http, the only
 * implementation of the route: same checks and error answers as the routed
 * API. Node leaves out the body of an answer to HEAD.
 */
async function serveForHost(req: IncomingMessage, res: ServerResponse, services: AssignerServices, logger: Logger): Promise<void> {
  const done = services.metrics.observe("get", "/artifacts/for-host/{host_id}");
  noteRequest(req, { route: "/artifacts/for-host/{host_id}" });
  try {
    const path = req.url!.slice(FOR_HOST.length).split("?")[0]!;
    let hostId: string;
    try {
      hostId = decodeURIComponent(path);
    } catch {
      throw new AssignerError("BAD_REQUEST", "path.host_id: invalid percent-encoding");
    }
    const principal = await services.auth.authenticate(req.headers.authorization);
    noteRequest(req, { principal });
    keepAlive(res);
    parseInput(HostId, hostId, "path.host_id");
    const answer = await services.forHost(principal, hostId, req.headers["if-none-match"]);
    if (answer.status === 304) {
      res.writeHead(304, { etag: answer.etag });
      res.end();
    } else {
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(answer.body), etag: answer.etag });
      res.end(answer.body);
    }
  } catch (err) {
    sendError(res, err, logger);
  } finally {
    done(res.statusCode);
  }
}
