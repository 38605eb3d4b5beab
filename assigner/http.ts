// The HTTP server: the route table on Express 5, with the agents' poll
// (GET /artifacts/for-host/{host_id}) answered before Express. That one
// route carries nearly all traffic (every host, every 30 s), and Express's
// per-request cost is several times a Redis read's; see bench/assigner.ts.
import type { IncomingMessage, ServerResponse } from "node:http";
import express, { type NextFunction, type Request, type Response } from "express";
import type { z } from "zod";
import { AssignerError, HostId } from "./api/index.js";
import { toAssignerError } from "./errors.js";
import { openApiDocument } from "./openapi.js";
import { ROUTES, type Route } from "./routes.js";
import type { AssignerServices } from "./services.js";

const FOR_HOST = "/artifacts/for-host/";

function parseInput<T>(schema: z.ZodType<T>, value: unknown, where: string): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const field = issue.path.length > 0 ? `${where}.${issue.path.join(".")}` : where;
  throw new AssignerError("BAD_REQUEST", `${field}: ${issue.message}`);
}

function sendError(res: ServerResponse, err: unknown): void {
  const error = toAssignerError(err);
  if (error.code === "INTERNAL") console.error("assigner: internal error:", error.cause);
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify({ error: error.message, code: error.code, ...(error.detail ? { detail: error.detail } : {}) });
  res.writeHead(error.status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

function mount(app: express.Express, route: Route, services: AssignerServices): void {
  const handler = route.handler;
  if (!handler) return;
  const path = route.path.replace(/\{(\w+)\}/g, ":$1");
  const parsers = route.body ? [express.json({ limit: route.bodyLimit ?? "64kb" })] : [];
  app[route.method](path, ...parsers, async (req: Request, res: Response, next: NextFunction) => {
    const done = services.metrics.observe(route.method, route.path);
    res.on("finish", () => done(res.statusCode));
    try {
      const principal = route.access === "public" ? undefined : await services.auth.authenticate(req.headers.authorization);
      if (route.access === "admin") services.auth.requireAdmin(principal!);
      const params = route.params ? parseInput(route.params, req.params, "path") : undefined;
      if (route.body && req.body === undefined) throw new AssignerError("BAD_REQUEST", "request body must be JSON (Content-Type: application/json)");
      const body = route.body ? parseInput(route.body, req.body, "body") : undefined;
      const result = await handler({ req, res, params, body, principal, services });
      if (result) res.status(result.status ?? route.responseStatus ?? 200).json(result.json);
    } catch (err) {
      next(err);
    }
  });
}

export function createRequestHandler(services: AssignerServices, version: string): (req: IncomingMessage, res: ServerResponse) => void {
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);
  const openapi = JSON.stringify(openApiDocument(ROUTES, version));
  app.get("/openapi.json", (_req, res) => {
    res.type("application/json").send(openapi);
  });
  app.get("/metrics", async (_req, res) => {
    res.type(services.metrics.registry.contentType).send(await services.metrics.registry.metrics());
  });
  for (const route of ROUTES) mount(app, route, services);
  app.use((req: Request) => {
    throw new AssignerError("NOT_FOUND", `no such endpoint: ${req.method} ${req.path}`);
  });
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => sendError(res, err));

  return (req, res) => {
    if ((req.method === "GET" || req.method === "HEAD") && req.url?.startsWith(FOR_HOST)) void serveForHost(req, res, services);
    else app(req, res);
  };
}

/**
 * GET (and HEAD) /artifacts/for-host/{host_id} on plain node:http, the only
 * implementation of the route: same checks and error answers as the routed
 * API. Node leaves out the body of an answer to HEAD.
 */
async function serveForHost(req: IncomingMessage, res: ServerResponse, services: AssignerServices): Promise<void> {
  const done = services.metrics.observe("get", "/artifacts/for-host/{host_id}");
  try {
    const path = req.url!.slice(FOR_HOST.length).split("?")[0]!;
    let hostId: string;
    try {
      hostId = decodeURIComponent(path);
    } catch {
      throw new AssignerError("BAD_REQUEST", "path.host_id: invalid percent-encoding");
    }
    const principal = await services.auth.authenticate(req.headers.authorization);
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
    sendError(res, err);
  } finally {
    done(res.statusCode);
  }
}
