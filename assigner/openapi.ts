// /openapi.json, generated from the route table and its zod schemas.
// https://spec.openapis.org/oas/v3.1.0
import { z } from "zod";
import { ErrorJson } from "./api/index.js";
import type { Route } from "./routes.js";

function schema(type: z.ZodType): unknown {
  return z.toJSONSchema(type, { io: "input", unrepresentable: "any" });
}

function parameters(route: Route): unknown[] {
  const of = (type: z.ZodType | undefined, where: "path" | "query") =>
    type instanceof z.ZodObject
      ? Object.entries(type.shape as Record<string, z.ZodType>).map(([name, field]) => ({ name, in: where, required: where === "path", schema: schema(field) }))
      : [];
  const ifMatch = route.conditional
    ? [{ name: "If-Match", in: "header", required: false, description: 'The desired-state version the change was planned on ("12", the ETag of GET /assignments); 412 PRECONDITION_FAILED when it moved since', schema: { type: "string" } }]
    : [];
  const ifNoneMatch = route.etag && route.method === "get" && !route.produces
    ? [{ name: "If-None-Match", in: "header", required: false, description: "The ETag of an earlier answer: 304 when it still holds", schema: { type: "string" } }]
    : [];
  return [...of(route.params, "path"), ...of(route.query, "query"), ...ifMatch, ...ifNoneMatch];
}

export function openApiDocument(routes: Route[], version: string): unknown {
  const paths: Record<string, Record<string, unknown>> = {};
  const error = { description: "Error", content: { "application/json": { schema: schema(ErrorJson) } } };
  for (const route of routes) {
    const headers = route.etag ? { headers: { ETag: { description: route.etag, schema: { type: "string" } } } } : {};
    const ok = route.produces
      ? { description: "OK", ...headers, content: { [route.produces]: { schema: { type: "string", format: "binary" } } } }
      : { description: "OK", ...headers, content: { "application/json": { schema: route.response ? schema(route.response) : {} } } };
    const more = Object.fromEntries(
      Object.entries(route.responses ?? {}).map(([status, { description, body }]) => [status, body ? { description, content: { "application/json": { schema: schema(body) } } } : { ...ok, description }]),
    );
    (paths[route.path] ??= {})[route.method] = {
      summary: route.summary,
      ...(route.access === "public" ? { security: [] } : {}),
      parameters: parameters(route),
      ...(route.body ? { requestBody: { required: true, content: { "application/json": { schema: schema(route.body) } } } } : {}),
      responses: {
        [String(route.responseStatus ?? 200)]: ok,
        ...(route.path === "/artifacts/for-host/{host_id}" ? { "304": { description: "Not modified since the ETag given in If-None-Match", ...headers } } : {}),
        ...(route.conditional ? { "412": { ...error, description: "The desired state moved since the If-Match version: read it again and plan on that" } } : {}),
        "4XX": error,
        "503": error,
        ...more,
      },
    };
  }
  return {
    openapi: "3.1.0",
    info: { title: "Aegis assigner", version, description: "Maps hosts to policy artifacts (OCI manifest digests)." },
    components: { securitySchemes: { bearer: { type: "http", scheme: "bearer", description: "The operator token, or an agent token from registration" } } },
    security: [{ bearer: [] }],
    paths,
  };
}
