// The HTTP API as one table: each route's path, who may call it, its zod
// schemas and its handler. http.ts mounts the table on Express (and answers
// the agents' poll before it) and openapi.ts documents it, so the two cannot
// drift apart.
import type { Request, Response } from "express";
import { z } from "zod";
import { toArtifactJson } from "./artifacts.js";
import type { Principal } from "./auth.js";
import {
  AssignerError,
  AgentDetailJson,
  ErrorJson,
  AgentList,
  AgentUid,
  AssignmentChangesBody,
  AssignmentChangesResult,
  ArtifactJson,
  ArtifactList,
  ArtifactStatusJson,
  ASSIGNMENT_CHANGES_BODY_LIMIT,
  AssignmentJson,
  canonicalSelector,
  capabilitiesJson,
  DesiredStateJson,
  Digest,
  featuresOf,
  HealthJson,
  HostAssignmentsJson,
  HostId,
  RegisterArtifactBody,
  RegisterCompleteBody,
  RegisterCompleteResponse,
  RegisterInitBody,
  RegisterInitResponse,
  RolloutId,
  ROLLOUT_BODY_LIMIT,
  RolloutJson,
  RolloutList,
  SignaturesJson,
  TELEMETRY_BODY_LIMIT,
  TelemetryBody,
  TelemetryResult,
} from "./api/index.js";
import type { AgentRecord, AssignmentChange, StatusRecord } from "./store/store.js";
import type { AssignerServices } from "./services.js";
import type { Upload } from "./upload.js";
import { byCodeUnit } from "../util/index.js";
import { errorCode } from "../errors.js";

export type Access = "public" | "admin" | "agent";

export interface RouteContext<P, B, Q = unknown> {
  req: Request;
  res: Response;
  params: P;
  body: B;
  /** The query string, validated by the route's `query` schema (undefined without one). */
  query: Q;
  principal: Principal | undefined;
  services: AssignerServices;
  /** The decoded `data` of a route that streams its upload. */
  upload: Upload | undefined;
}

/** A JSON answer; handlers that stream write to `res` themselves and return undefined. */
export interface JsonResult {
  status?: number;
  json: unknown;
}

export interface Route<P = unknown, B = unknown, Q = unknown> {
  method: "get" | "post" | "put" | "delete";
  /** OpenAPI-style path: /artifacts/{id} */
  path: string;
  summary: string;
  /** public: no token; admin: operator token; agent: an agent token (scoped by the handler) or the operator token. */
  access: Access;
  params?: z.ZodType<P>;
  /** Query-string parameters (each optional): validated, and documented in OpenAPI. */
  query?: z.ZodType<Q>;
  body?: z.ZodType<B>;
  /**
   * The body's top-level base64 "data" is decoded as it arrives, up to the
   * upload limit (upload.ts), and `body` validates the rest with data "".
   */
  streamsUpload?: true;
  response?: z.ZodType;
  responseStatus?: number;
  produces?: string;
  /** The largest body taken, when not the default 64 KiB (bodies other than the upload are read whole). */
  bodyLimit?: number;
  /** Takes If-Match (the desired-state version; 412 when stale): documented as a header parameter in OpenAPI. */
  conditional?: true;
  /** What the answer's ETag is, for OpenAPI. */
  etag?: string;
  /** Answers besides the success status and the errors every route has, for OpenAPI: status → what it means (a body like the success's, or `body`). */
  responses?: Record<number, { description: string; body?: z.ZodType }>;
  /** Checks the caller against the path before the body is read (a 403 costs the caller its body, not the assigner). */
  authorize?: (principal: Principal, params: P) => void;
  /** Absent only for the agents' poll, which http.ts answers before Express (serveForHost). */
  handler?: (ctx: RouteContext<P, B, Q>) => Promise<JsonResult | undefined>;
}

function route<P, B, Q = unknown>(spec: Route<P, B, Q>): Route {
  return spec as unknown as Route;
}

function agentJson(agent: AgentRecord) {
  return {
    uid: agent.uid,
    host_id: agent.hostId,
    ...(agent.hostname ? { hostname: agent.hostname } : {}),
    ...(agent.kernel ? { kernel: agent.kernel } : {}),
    ...(agent.labels ? { labels: agent.labels } : {}),
    ...(agent.capabilities ? { capabilities: capabilitiesJson(agent.capabilities) } : {}),
    registered_at: agent.registeredAt,
    last_seen: agent.lastSeen ?? null,
  };
}

function statusJson(status: StatusRecord) {
  return {
    host_id: status.hostId,
    artifact_id: status.artifactId,
    event: status.event,
    ...(status.code ? { code: status.code } : {}),
    ...(status.reason ? { reason: status.reason } : {}),
    ...(status.counters ? { counters: status.counters } : {}),
    ...(status.receipt ? { program_id: status.receipt.programId, interfaces: status.receipt.interfaces, since: status.receipt.since } : {}),
    time: status.time,
    ...(status.seq !== undefined ? { seq: status.seq } : {}),
  };
}

async function requireArtifact(services: AssignerServices, id: string) {
  const record = await services.store.getArtifact(id);
  if (!record) throw new AssignerError("NOT_FOUND", `artifact ${id} is not registered`);
  return record;
}

/**
 * An agent may read an artifact only while it is assigned to its host; the
 * assignment is checked first, so an agent cannot probe which artifacts exist.
 */
async function requireReadable(services: AssignerServices, principal: Principal | undefined, id: string) {
  if (principal?.kind === "agent") {
    const { artifactIds } = await services.hostView(principal.hostId);
    if (!artifactIds.includes(id)) throw new AssignerError("FORBIDDEN", `artifact ${id} is not assigned to host "${principal.hostId}"`);
  }
  return requireArtifact(services, id);
}

const IdParams = z.strictObject({ id: Digest });
const UidParams = z.strictObject({ uid: AgentUid });
const HostParams = z.strictObject({ host_id: HostId });
const AssignParams = z.strictObject({ artifact_id: Digest, host_id: HostId });
const StatusQuery = z.strictObject({
  view: z.enum(["full", "summary"]).optional().meta({ description: "summary: each host's event, code, reason and time, without its receipt's counters and interfaces (a rollout reads thousands of hosts every second)" }),
});
const RolloutsQuery = z.strictObject({
  active: z.enum(["true", "false"]).optional().meta({ description: "true: only those running or rolling back (what an apply checks before it begins)" }),
});
const AssignQuery = z.strictObject({
  force: z.enum(["true", "false"]).optional().meta({ description: "true: assign even when a host's reported kernel cannot run the artifact's program" }),
});

/**
 * The If-Match header as a desired-state version: `"12"` (the ETag of GET
 * /assignments) or 12; absent or `*`: no condition.
 */
function ifMatch(req: Request): { ifVersion?: number } {
  const header = req.headers["if-match"]?.trim();
  if (header === undefined || header === "*") return {};
  const match = /^(?:W\/)?"?(\d{1,15})"?$/.exec(header);
  if (!match) throw new AssignerError("BAD_REQUEST", `If-Match: ${header.slice(0, 40)} is not a desired-state version (the ETag of GET /assignments)`);
  return { ifVersion: Number(match[1]) };
}

async function changeAssignment(services: AssignerServices, req: Request, params: z.infer<typeof AssignParams>, add: boolean, force = false): Promise<JsonResult> {
  const result = await services.changeAssignments([{ add, artifactId: params.artifact_id, target: { hostId: params.host_id } }], { ...ifMatch(req), force });
  const host = result.hosts[0]!;
  return { json: { artifact_id: params.artifact_id, host_id: params.host_id, assigned: add, changed: host.changed, version: host.version } };
}

type Entry = { artifact_id: string; host_id: string } | { artifact_id: string; selector: string };

/** Wire entries as store changes, selectors in their canonical text. */
function toChanges(entries: Entry[] | undefined, add: boolean): AssignmentChange[] {
  return (entries ?? []).map((e) => ({ add, artifactId: e.artifact_id, target: "host_id" in e ? { hostId: e.host_id } : { selector: canonicalSelector(e.selector) } }));
}

const RolloutParams = z.strictObject({ id: RolloutId });

export const ROUTES: Route[] = [
  route({
    method: "get",
    path: "/healthz",
    summary: "Reachability of the store, the upload registry and NATS",
    access: "public",
    response: HealthJson,
    responses: { 503: { description: "The store is unavailable (the same document)", body: HealthJson } },
    handler: async ({ services }) => {
      const health = await services.health();
      return { status: health.store === "ok" ? 200 : 503, json: health };
    },
  }),
  route({
    method: "post",
    path: "/agents/register/init",
    summary: "Start registering an agent: returns a nonce to sign with the agent's Ed25519 key",
    access: "public",
    body: RegisterInitBody,
    response: RegisterInitResponse,
    handler: async ({ body, services }) => ({
      json: await services.auth.startRegistration({
        hostId: body.host_id,
        publicKey: body.public_key,
        ...(body.hostname ? { hostname: body.hostname } : {}),
        ...(body.kernel ? { kernel: body.kernel } : {}),
        ...(body.labels ? { labels: body.labels } : {}),
        ...(body.capabilities ? { capabilities: featuresOf(body.capabilities) } : {}),
        ...(body.enroll_secret !== undefined ? { enrollSecret: body.enroll_secret } : {}),
      }),
    }),
  }),
  route({
    method: "post",
    path: "/agents/register/complete",
    summary: "Finish registering: the signed nonce buys an agent token",
    access: "public",
    body: RegisterCompleteBody,
    response: RegisterCompleteResponse,
    handler: async ({ body, services }) => {
      const registered = await services.auth.completeRegistration(body.registration_id, body.signature);
      // Its labels may be new: what selectors give the host may have changed.
      await services.hostLabelsChanged(registered.host_id);
      return { json: registered };
    },
  }),
  route({
    method: "get",
    path: "/agents",
    summary: "Registered agents",
    access: "admin",
    response: AgentList,
    handler: async ({ services }) => {
      const agents = (await services.store.listAgents()).map(agentJson);
      return { json: { agents, total: agents.length } };
    },
  }),
  route({
    method: "get",
    path: "/agents/{uid}",
    summary: "One agent, its assignments and its latest status per artifact",
    access: "admin",
    params: UidParams,
    response: AgentDetailJson,
    handler: async ({ params, services }) => {
      const agent = await services.store.getAgent(params.uid);
      if (!agent) throw new AssignerError("NOT_FOUND", `agent ${params.uid} is not registered`);
      const [{ artifactIds }, status] = await Promise.all([services.hostView(agent.hostId), services.store.hostStatus(agent.hostId)]);
      return { json: { ...agentJson(agent), assignments: artifactIds, status: status.map(statusJson) } };
    },
  }),
  route({
    method: "post",
    path: "/agents/{uid}/telemetry",
    summary: "Signed telemetry from an agent without NATS: one SignedTelemetry, or {messages: […]} (at most 32); each is verified as on NATS",
    access: "agent",
    params: UidParams,
    authorize: (principal, params) => {
      if (principal.kind !== "agent" || principal.agentUid !== params.uid) throw new AssignerError("FORBIDDEN", `only agent ${params.uid}'s own token may post its telemetry`);
    },
    body: TelemetryBody,
    bodyLimit: TELEMETRY_BODY_LIMIT,
    response: TelemetryResult,
    handler: async ({ body, principal, services }) => {
      const { hostId } = principal as Extract<Principal, { kind: "agent" }>;
      let recorded = 0;
      const messages = "messages" in body ? body.messages : [body];
      for (const message of messages) if (await services.recordTelemetry(message, hostId)) recorded++;
      return { json: { recorded, refused: messages.length - recorded } };
    },
  }),
  route({
    method: "delete",
    path: "/agents/{uid}",
    summary: "Forget an agent and revoke its tokens, so its host can be registered with a new key",
    access: "admin",
    params: UidParams,
    response: z.object({ uid: z.string(), deleted: z.literal(true) }),
    handler: async ({ params, services }) => {
      const agent = await services.store.getAgent(params.uid);
      if (!agent || !(await services.store.deleteAgent(params.uid))) throw new AssignerError("NOT_FOUND", `agent ${params.uid} is not registered`);
      services.auth.forgetAgent(params.uid);
      // Its labels went with it: what selectors gave the host is served no more.
      await services.hostLabelsChanged(agent.hostId);
      return { json: { uid: params.uid, deleted: true } };
    },
  }),
  route({
    method: "get",
    path: "/artifacts",
    summary: "Registered artifacts",
    access: "admin",
    response: ArtifactList,
    handler: async ({ services }) => {
      const artifacts = (await services.store.listArtifacts()).map(toArtifactJson);
      return { json: { artifacts, total: artifacts.length } };
    },
  }),
  route({
    method: "post",
    path: "/artifacts",
    summary: "Register an artifact: {reference: host/repo@sha256:…}, or the seed's upload (base64 data), pushed to the assigner's registry",
    access: "admin",
    body: RegisterArtifactBody,
    streamsUpload: true,
    response: ArtifactJson,
    responseStatus: 201,
    responses: {
      200: { description: "Registered before: the first record (with a signature found since filled in)" },
      502: { description: "The registry failed: unreachable, refusing, or serving bytes that fail verification or are no bundle", body: ErrorJson },
    },
    handler: async ({ body, upload, services }) => {
      const record = "reference" in body ? await services.artifacts.fromReference(body.reference) : await services.artifacts.fromUpload(body, upload);
      if (await services.store.putArtifact(record)) return { status: 201, json: toArtifactJson(record) };
      // Registering the same digest again is not an error: the first record
      // stays, except that a signature found since is filled in.
      const stored = await requireArtifact(services, record.id);
      if (stored.signature || !record.signature) return { status: 200, json: toArtifactJson(stored) };
      await services.updateSignature({ ...stored, signature: record.signature });
      return { status: 200, json: toArtifactJson({ ...stored, signature: record.signature }) };
    },
  }),
  route({
    method: "get",
    path: "/artifacts/for-host/{host_id}",
    summary: "What is assigned to a host (the agent's poll). ETag is the host's version; If-None-Match gives 304",
    access: "agent",
    params: HostParams,
    response: ArtifactList,
    etag: 'The host\'s version, "v12" (with the embedded store "v12.<epoch>"): send it as If-None-Match',
    // No handler: http.ts answers this route before Express (the hot path).
  }),
  route({
    method: "get",
    path: "/artifacts/{id}",
    summary: "One artifact (agents: only if assigned to their host)",
    access: "agent",
    params: IdParams,
    response: ArtifactJson,
    handler: async ({ params, principal, services }) => ({ json: toArtifactJson(await requireReadable(services, principal, params.id)) }),
  }),
  route({
    method: "get",
    path: "/artifacts/{id}/binary",
    summary: "The bundle (tar.zst), streamed from the registry and verified on the way (agents: only if assigned)",
    access: "agent",
    params: IdParams,
    produces: "application/octet-stream",
    etag: "The layer's digest",
    responses: { 502: { description: "The registry failed before the answer began (after it, the connection is cut short)", body: ErrorJson } },
    handler: async ({ params, principal, services, res }) => {
      const record = await requireReadable(services, principal, params.id);
      const stream = await services.artifacts.binary(record);
      const headers = { "content-type": "application/octet-stream", "content-length": String(record.size), etag: `"${record.layerDigest}"` };
      res.status(200).set(headers);
      // A digest mismatch surfaces at the end of the stream: the verifier holds
      // back the last chunk, so the client never sees a "complete" bad body.
      // Before any byte went out (a bundle of one chunk), the answer is the
      // route's 502 with the code in `detail`; after, the connection is cut,
      // and the client sees a short body. Either way the operator is told
      // which artifact failed and why. A client that goes away closes the
      // registry stream too.
      await new Promise<void>((done, fail) => {
        let gone = false;
        // Errors after the first, or after the client left (the destroy's own), are not news.
        stream.on("error", () => undefined);
        stream.once("error", (err) => {
          if (gone) return;
          stream.unpipe(res);
          stream.destroy();
          services.logger.warn(
            { artifact_id: record.id, code: errorCode(err), answered: res.headersSent ? "cut short" : "502" },
            `the binary of ${record.id} failed on its way from ${record.reference} (${errorCode(err)}: ${(err as Error).message})`,
          );
          if (!res.headersSent) {
            for (const name of Object.keys(headers)) res.removeHeader(name);
            fail(err);
          } else {
            res.destroy();
            done();
          }
        });
        res.once("close", () => {
          gone = true;
          stream.destroy();
          done();
        });
        stream.pipe(res);
      });
      return undefined;
    },
  }),
  route({
    method: "get",
    path: "/artifacts/{id}/manifest",
    summary: "The artifact's manifest, exactly as stored and verified against its digest (agents: only if assigned)",
    access: "agent",
    params: IdParams,
    produces: "application/vnd.oci.image.manifest.v1+json",
    responses: { 502: { description: "The registry failed", body: ErrorJson } },
    handler: async ({ params, principal, services, res }) => {
      const { mediaType, bytes } = await services.artifacts.manifest(await requireReadable(services, principal, params.id));
      res.status(200).set({ "content-type": mediaType, "docker-content-digest": params.id }).end(bytes);
      return undefined;
    },
  }),
  route({
    method: "get",
    path: "/artifacts/{id}/signatures",
    summary: "The artifact's sigstore bundle referrers as stored, for agents that cannot reach a registry (agents: only if assigned)",
    access: "agent",
    params: IdParams,
    response: SignaturesJson,
    responses: { 502: { description: "The registry failed", body: ErrorJson } },
    handler: async ({ params, principal, services }) => {
      const signatures = await services.artifacts.signatures(await requireReadable(services, principal, params.id));
      return { json: { artifact_id: params.id, signatures: signatures.map((s) => ({ manifest: s.manifest.toString("base64"), bundle: s.bundle.toString("base64") })) } };
    },
  }),
  route({
    method: "get",
    path: "/artifacts/{id}/status",
    summary: "The latest telemetry of every host about this artifact",
    access: "admin",
    params: IdParams,
    query: StatusQuery,
    response: ArtifactStatusJson,
    handler: async ({ params, query, services }) => {
      await requireArtifact(services, params.id);
      // The summary (a rollout polls it each second) is read alone, never the counters and receipts it leaves out.
      const records = query.view === "summary" ? await services.store.artifactStatusSummary(params.id) : await services.store.artifactStatus(params.id);
      const hosts = records.map(statusJson);
      return { json: { artifact_id: params.id, hosts, total: hosts.length } };
    },
  }),
  route({
    method: "post",
    path: "/assign/{artifact_id}/{host_id}",
    summary:
      "Assign an artifact to a host (idempotent). 409 when the host's agent reported a kernel that cannot run the artifact's program, unless ?force=true, and when the host would be assigned more artifacts than an agent takes (256, its own and its selectors')",
    access: "admin",
    params: AssignParams,
    query: AssignQuery,
    conditional: true,
    response: AssignmentJson,
    handler: async ({ req, params, query, services }) => changeAssignment(services, req, params, true, query.force === "true"),
  }),
  route({
    method: "post",
    path: "/unassign/{artifact_id}/{host_id}",
    summary: "Remove an assignment (idempotent)",
    access: "admin",
    params: AssignParams,
    conditional: true,
    response: AssignmentJson,
    handler: async ({ req, params, services }) => changeAssignment(services, req, params, false),
  }),
  route({
    method: "get",
    path: "/assignments",
    summary: "The whole desired state: every assignment to a host or to a label selector. ETag is its version; send it as If-Match on writes",
    access: "admin",
    response: DesiredStateJson,
    etag: 'The desired state\'s version, "12"',
    handler: async ({ res, services }) => {
      const state = await services.store.desiredState();
      const assignments = [
        ...state.direct.map((d) => ({ artifact_id: d.artifactId, host_id: d.hostId })).sort((a, b) => byCodeUnit(a.host_id, b.host_id) || byCodeUnit(a.artifact_id, b.artifact_id)),
        ...state.selectors.map((s) => ({ artifact_id: s.artifactId, selector: s.selector })).sort((a, b) => byCodeUnit(a.selector, b.selector) || byCodeUnit(a.artifact_id, b.artifact_id)),
      ];
      res.set("etag", `"${state.version}"`);
      return { json: { version: state.version, assignments, total: assignments.length } };
    },
  }),
  route({
    method: "post",
    path: "/assignments",
    summary:
      "Add and remove assignments (to hosts or label selectors) in one atomic step. With If-Match (the version of GET /assignments), 412 PRECONDITION_FAILED when the desired state changed since. Artifacts must be registered; at most 1000 changes. 409 when the selector assignments would be more than 10,000 (adds of ones already there do not count), when a host's agent reported a kernel that cannot run an added artifact's program, unless ?force=true, and when a host would be assigned more artifacts than an agent takes (256, its own and its selectors'); nothing is changed then",
    access: "admin",
    query: AssignQuery,
    body: AssignmentChangesBody,
    bodyLimit: ASSIGNMENT_CHANGES_BODY_LIMIT,
    conditional: true,
    response: AssignmentChangesResult,
    etag: 'The desired state\'s version after the change, "13"',
    handler: async ({ req, res, body, query, services }) => {
      const result = await services.changeAssignments([...toChanges(body.remove, false), ...toChanges(body.add, true)], { ...ifMatch(req), force: query.force === "true" });
      res.set("etag", `"${result.version}"`);
      return { json: { version: result.version, added: result.added, removed: result.removed } };
    },
  }),
  route({
    method: "get",
    path: "/hosts/{host_id}/assignments",
    summary: "What a host is served and why: its own assignments and the selector assignments its agent's labels match",
    access: "admin",
    params: HostParams,
    response: HostAssignmentsJson,
    handler: async ({ params, services }) => {
      const [view, agent] = await Promise.all([services.hostView(params.host_id), services.store.getAgentByHost(params.host_id)]);
      return {
        json: {
          host_id: params.host_id,
          version: view.version,
          ...(agent?.labels ? { labels: agent.labels } : {}),
          assignments: view.via.map((v) => ({ artifact_id: v.artifactId, via: v.via, ...(v.selector ? { selector: v.selector } : {}) })),
        },
      };
    },
  }),
  route({
    method: "put",
    path: "/rollouts/{id}",
    summary: "Record a staged rollout's state (written by the process driving it: `aegis apply --rollout`)",
    access: "admin",
    params: RolloutParams,
    body: RolloutJson,
    bodyLimit: ROLLOUT_BODY_LIMIT,
    response: RolloutJson,
    handler: async ({ params, body, services }) => {
      if (body.id !== params.id) throw new AssignerError("BAD_REQUEST", `body.id ${body.id} is not the path's ${params.id}`);
      await services.store.putRollout(body);
      return { json: body };
    },
  }),
  route({
    method: "get",
    path: "/rollouts",
    summary: "Staged rollouts, newest first (the last 100); ?active=true, only those running or rolling back",
    access: "admin",
    query: RolloutsQuery,
    response: RolloutList,
    handler: async ({ query, services }) => {
      // The active ones are found without reading every record (each may be megabytes).
      const rollouts = query.active === "true" ? await services.store.listActiveRollouts() : await services.store.listRollouts();
      return { json: { rollouts, total: rollouts.length } };
    },
  }),
  route({
    method: "get",
    path: "/rollouts/{id}",
    summary: "One staged rollout: its rings, receipts counted, failures and state",
    access: "admin",
    params: RolloutParams,
    response: RolloutJson,
    handler: async ({ params, services }) => {
      const rollout = await services.store.getRollout(params.id);
      if (!rollout) throw new AssignerError("NOT_FOUND", `rollout ${params.id} is not known`);
      return { json: rollout };
    },
  }),
];
