// The desired-state API (issue 11): GET/POST /assignments with its version as
// ETag and If-Match, selector assignments served to matching hosts (and
// readable by their agents), the bounds and error codes (a host's share
// among them, which aegis apply's changes of over 1000 keep to), rollout
// records, and their place in /openapi.json. Embedded store (but for the cap
// on selector assignments, held by two assigners on one Redis); Redis runs the
// same routes in test/fleet/apply.test.ts.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateKeyPairSync } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AssignerClient, MAX_ASSIGNED } from "../../assigner/api/index.js";
import { startAssigner, type RunningAssigner } from "../../assigner/index.js";
import { buildBundle, pushBundle } from "../../bundle/index.js";
import { applyPlan, type PlanEntry } from "../../fleet/index.js";
import { RemoteRepository } from "../../registry/index.js";
import { beginRegistration, http as httpTo, type HttpOptions } from "../harness/assigner-http.js";
import { startRegistry, type RegistryServer } from "../harness/registry.js";
import { startRedis, type TcpServer } from "../harness/tcp-server.js";

let registry: RegistryServer;
let assigner: RunningAssigner;
let work: string;
let digest: string;
const admin = { token: "assignments-operator" };
const http = (method: string, path: string, options?: HttpOptions) => httpTo(assigner.url, method, path, options);

beforeAll(async () => {
  registry = await startRegistry();
  work = mkdtempSync(join(tmpdir(), "aegis-assignments-"));
  assigner = await startAssigner({ port: 0, dataDir: work, registry: `${registry.host}/aegis/uploads`, adminToken: admin.token });
  const { bytes, policy } = await buildBundle("policies/block-icmp-8888");
  const artifact = await pushBundle(bytes, policy, new RemoteRepository(registry.host, "assignments/p"), "1.0.0");
  digest = artifact.manifest.digest;
  expect((await http("POST", "/artifacts", { ...admin, body: { reference: `${registry.host}/assignments/p@${digest}` } })).status).toBe(201);
});
afterAll(async () => {
  await assigner?.close();
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

async function register(host: string, labels: Record<string, string>, url = assigner.url): Promise<string> {
  const started = await beginRegistration(url, host, generateKeyPairSync("ed25519"), { labels });
  const done = await started.complete();
  expect(done.status, JSON.stringify(done.json)).toBe(200);
  return done.json.token as string;
}

describe("the desired-state API", () => {
  it("answers the whole state with its version as ETag, and refuses a stale If-Match with 412", async () => {
    const first = await http("GET", "/assignments", admin);
    expect(first.headers.get("etag")).toBe(`"${first.json.version}"`);
    const version = first.json.version as number;
    const added = await http("POST", "/assignments", { ...admin, headers: { "if-match": `"${version}"` }, body: { add: [{ artifact_id: digest, selector: "zone in (b,a),env=prod" }, { artifact_id: digest, host_id: "api-h1" }] } });
    expect(added.json, "both added, one version step").toEqual({ version: version + 1, added: 2, removed: 0 });
    const now = await http("GET", "/assignments", admin);
    expect(now.json.assignments).toEqual([{ artifact_id: digest, host_id: "api-h1" }, { artifact_id: digest, selector: "env=prod,zone in (a,b)" }]);
    const stale = await http("POST", "/assignments", { ...admin, headers: { "if-match": `"${version}"` }, body: { remove: [{ artifact_id: digest, host_id: "api-h1" }] } });
    expect({ status: stale.status, code: stale.json.code }).toEqual({ status: 412, code: "PRECONDITION_FAILED" });
    const assign = await http("POST", `/assign/${digest}/api-h2`, { ...admin, headers: { "if-match": String(version) } });
    expect(assign.status, "If-Match holds for the single-assignment routes too").toBe(412);
    expect((await http("GET", "/assignments", admin)).json.version, "a refused write changed nothing").toBe(version + 1);
  });

  it("serves selector assignments to the hosts whose labels match, and lets their agents read the artifact", async () => {
    const prod = await register("api-prod-a", { env: "prod", zone: "a" });
    const dev = await register("api-dev", { env: "dev", zone: "a" });
    const poll = await http("GET", "/artifacts/for-host/api-prod-a", { token: prod });
    expect((poll.json.artifacts as { id: string }[]).map((a) => a.id)).toEqual([digest]);
    expect((await http("GET", `/artifacts/${digest}`, { token: prod })).status, "an agent reads what a selector gives it").toBe(200);
    expect((await http("GET", `/artifacts/${digest}`, { token: dev })).status, "and not what it does not").toBe(403);
    const view = await http("GET", "/hosts/api-prod-a/assignments", admin);
    expect(view.json).toMatchObject({ host_id: "api-prod-a", labels: { env: "prod", zone: "a" }, assignments: [{ artifact_id: digest, via: "selector", selector: "env=prod,zone in (a,b)" }] });
    const etag = poll.headers.get("etag")!;
    await http("POST", "/assignments", { ...admin, body: { remove: [{ artifact_id: digest, selector: "env=prod,zone in (a,b)" }] } });
    const after = await http("GET", "/artifacts/for-host/api-prod-a", { token: prod, headers: { "if-none-match": etag } });
    expect({ status: after.status, total: after.json.total }, "removing the selector moved the host's version").toEqual({ status: 200, total: 0 });
  });

  it.each([
    ["a selector that does not parse", { add: [{ artifact_id: "sha256:" + "1".repeat(64), selector: "zone in (a" }] }, 400, "body.add.0.selector: selector \"zone in (a\": unbalanced parentheses"],
    ["an unregistered artifact", { add: [{ artifact_id: "sha256:" + "1".repeat(64), host_id: "h" }] }, 404, "is not registered"],
    ["both a host and a selector", { add: [{ artifact_id: "sha256:" + "1".repeat(64), host_id: "h", selector: "a=b" }] }, 400, "body"],
    ["more than 1000 changes", { add: Array.from({ length: 1001 }, (_, i) => ({ artifact_id: "sha256:" + "1".repeat(64), host_id: `h${i}` })) }, 400, "body.add"],
  ])("refuses %s", async (_what, body, status, message) => {
    const answer = await http("POST", "/assignments", { ...admin, body });
    expect(answer.status, JSON.stringify(answer.json)).toBe(status);
    expect(answer.json.error).toContain(message);
  });

  it("refuses a malformed If-Match, and agents", async () => {
    const bad = await http("POST", "/assignments", { ...admin, headers: { "if-match": "yesterday" }, body: { add: [] } });
    expect({ status: bad.status, code: bad.json.code }).toEqual({ status: 400, code: "BAD_REQUEST" });
    const agent = await register("api-agent", { env: "x" });
    expect((await http("GET", "/assignments", { token: agent })).status).toBe(403);
    expect((await http("GET", "/rollouts", { token: agent })).status).toBe(403);
  });

  it("keeps rollout records, newest first, and refuses a body for another id", async () => {
    const rollout = { id: "r-api-1", state: "running", changes: [{ to: digest, target: "host h" }], rings: [{ spec: "100%", hosts: 1, state: "waiting", in_force: 0, failed: 0, failures: [] }], max_failures: "0", ring_timeout_ms: 1000, started_at: new Date().toISOString(), updated_at: new Date().toISOString() };
    expect((await http("PUT", "/rollouts/r-api-1", { ...admin, body: rollout })).status).toBe(200);
    expect((await http("PUT", "/rollouts/r-api-2", { ...admin, body: rollout })).json.error).toContain("is not the path's r-api-2");
    expect((await http("GET", "/rollouts/r-api-1", admin)).json.state).toBe("running");
    expect((await http("GET", "/rollouts/nope", admin)).json.code).toBe("NOT_FOUND");
    expect(((await http("GET", "/rollouts", admin)).json.rollouts as { id: string }[]).map((r) => r.id)).toEqual(["r-api-1"]);
    // ?active=true: those running or rolling back alone (what an apply asks before it begins).
    expect((await http("PUT", "/rollouts/r-api-3", { ...admin, body: { ...rollout, id: "r-api-3", state: "completed" } })).status).toBe(200);
    expect((await http("PUT", "/rollouts/r-api-4", { ...admin, body: { ...rollout, id: "r-api-4", state: "rolling_back" } })).status).toBe(200);
    const ids = async (query: string) => ((await http("GET", `/rollouts${query}`, admin)).json.rollouts as { id: string }[]).map((r) => r.id);
    expect([await ids(""), await ids("?active=true"), await ids("?active=false")], "all; active; all").toEqual([
      ["r-api-4", "r-api-3", "r-api-1"],
      ["r-api-4", "r-api-1"],
      ["r-api-4", "r-api-3", "r-api-1"],
    ]);
    expect((await http("GET", "/rollouts?active=yes", admin)).status, "?active=yes").toBe(400);
  });

  it("takes the largest rollout record its schema allows (1000 changes of long targets, 16 rings of 20 failures, every character escaped)", async () => {
    const escaped = (n: number) => "\u0001".repeat(n); // six bytes of JSON each
    const failures = Array.from({ length: 20 }, (_, i) => ({ host_id: `h${String(i).padStart(127, "0")}`, artifact_id: digest, code: escaped(64), reason: escaped(512) }));
    const largest = {
      id: "r-api-largest",
      state: "running",
      reason: escaped(2048),
      changes: Array.from({ length: 1000 }, () => ({ from: digest, to: digest, target: escaped(1100) })),
      rings: Array.from({ length: 16 }, () => ({ spec: "100%", hosts: 1, state: "failed", in_force: 0, failed: 20, failures })),
      max_failures: "0",
      ring_timeout_ms: 1000,
      started_at: new Date().toISOString(),
      updated_at: new Date().toISOString(),
    };
    expect(JSON.stringify(largest).length, "the body's size").toBeGreaterThan(7_900_000);
    const put = await http("PUT", "/rollouts/r-api-largest", { ...admin, body: largest });
    expect(put.status, JSON.stringify(put.json)).toBe(200);
    expect(((await http("GET", "/rollouts/r-api-largest", admin)).json.changes as unknown[]).length, "all 1000 changes kept").toBe(1000);
  });

  it("takes the largest change its schema allows (1000 changes of 1024-character selectors, their whitespace escaped)", async () => {
    const selector = (i: number) => `k${i} in${"\u000b".repeat(1024 - `k${i} in(a)`.length)}(a)`; // six bytes of JSON each
    const largest = { remove: Array.from({ length: 1000 }, (_, i) => ({ artifact_id: digest, selector: selector(i) })) };
    expect(selector(999).length, "a selector's length").toBe(1024);
    expect(JSON.stringify(largest).length, "the body's size").toBeGreaterThan(6_000_000);
    const posted = await http("POST", "/assignments", { ...admin, body: largest });
    expect(posted.status, JSON.stringify(posted.json).slice(0, 300)).toBe(200);
    expect(posted.json.removed, "none of them was assigned").toBe(0);
  });

  it("documents the routes in /openapi.json from the same schemas", async () => {
    const doc = (await http("GET", "/openapi.json")).json as { paths: Record<string, Record<string, { requestBody?: unknown; summary: string }>> };
    expect(Object.keys(doc.paths["/assignments"]!).sort()).toEqual(["get", "post"]);
    expect(doc.paths["/assignments"]!.post!.summary).toContain("412 PRECONDITION_FAILED");
    expect(JSON.stringify(doc.paths["/assignments"]!.post!.requestBody)).toContain("selector");
    for (const path of ["/hosts/{host_id}/assignments", "/rollouts", "/rollouts/{id}"]) expect(doc.paths[path], path).toBeDefined();
    expect(Object.keys(doc.paths["/rollouts/{id}"]!).sort()).toEqual(["get", "put"]);
    for (const [path, method] of [["/assignments", "post"], ["/assign/{artifact_id}/{host_id}", "post"], ["/unassign/{artifact_id}/{host_id}", "post"]] as const) {
      const op = doc.paths[path]![method] as unknown as { parameters: { name: string; in: string }[]; responses: Record<string, unknown> };
      expect(op.parameters.some((p) => p.name === "If-Match" && p.in === "header"), `${path} documents If-Match`).toBe(true);
      expect(op.responses["412"], `${path} documents its 412`).toBeDefined();
    }
  });
});

describe("a host's share", () => {
  /** An assigner that takes at most two artifacts per host, and three artifacts registered with it. */
  let small: RunningAssigner;
  const ids: string[] = [];
  const call = (method: string, path: string, options?: HttpOptions) => httpTo(small.url, method, path, options);

  beforeAll(async () => {
    small = await startAssigner({ port: 0, dataDir: join(work, "small"), registry: `${registry.host}/aegis/uploads`, adminToken: admin.token, maxAssignedPerHost: 2 });
    for (const version of ["1.0.0", "2.0.0", "3.0.0"]) {
      const dir = join(work, `share-${version}`);
      cpSync("policies/block-icmp-8888", dir, { recursive: true });
      writeFileSync(join(dir, "policy.yaml"), readFileSync(join(dir, "policy.yaml"), "utf8").replace(/^version: .*$/m, `version: ${version}`));
      const { bytes, policy } = await buildBundle(dir);
      const { manifest } = await pushBundle(bytes, policy, new RemoteRepository(registry.host, "assignments/share"), version);
      expect((await call("POST", "/artifacts", { ...admin, body: { reference: `${registry.host}/assignments/share@${manifest.digest}` } })).status).toBe(201);
      ids.push(manifest.digest);
    }
  });
  afterAll(async () => {
    await small?.close();
  });

  const state = async () => (await call("GET", "/assignments", admin)).json as { version: number; assignments: unknown[] };

  it("refuses (409, nothing changed) a change that would give a host more artifacts than an agent takes, directly or through a selector", async () => {
    const [a, b, c] = ids as [string, string, string];
    expect((await call("POST", "/assignments", { ...admin, body: { add: [{ artifact_id: a, host_id: "share-h" }, { artifact_id: b, host_id: "share-h" }] } })).status).toBe(200);
    const before = await state();
    const direct = await call("POST", `/assign/${c}/share-h`, admin);
    expect({ status: direct.status, code: direct.json.code }, "a third, directly").toEqual({ status: 409, code: "CONFLICT" });
    expect(direct.json.error).toBe("this change would assign share-h (3) more than the 2 artifacts an agent takes: nothing was changed");
    const many = await call("POST", "/assignments", { ...admin, body: { add: [{ artifact_id: c, host_id: "share-h" }, { artifact_id: a, host_id: "share-g" }] } });
    expect({ status: many.status, code: many.json.code }, "one host over in a change of two").toEqual({ status: 409, code: "CONFLICT" });
    const stale = await call("POST", "/assignments", { ...admin, headers: { "if-match": `"${before.version - 1}"` }, body: { add: [{ artifact_id: c, host_id: "share-h" }] } });
    expect({ status: stale.status, code: stale.json.code }, "a stale If-Match is told first").toEqual({ status: 412, code: "PRECONDITION_FAILED" });
    expect(await state(), "nothing changed").toEqual(before);

    // A registered host whose labels a selector matches counts the selector's artifacts too.
    await register("share-h", { env: "prod" }, small.url);
    const selected = await call("POST", "/assignments", { ...admin, body: { add: [{ artifact_id: c, selector: "env=prod" }] } });
    expect({ status: selected.status, code: selected.json.code }, "a third through a selector").toEqual({ status: 409, code: "CONFLICT" });
    expect(selected.json.error).toContain("share-h (3)");
    expect(await state(), "nothing changed").toEqual(before);
    // The same artifact twice (its own and a selector's) counts once; one that matches no host changes no count.
    expect((await call("POST", "/assignments", { ...admin, body: { add: [{ artifact_id: a, selector: "env=prod" }, { artifact_id: c, selector: "env=dev" }] } })).status).toBe(200);

    // Removed and added in one change: within the share, taken.
    const swapped = await call("POST", "/assignments", { ...admin, body: { remove: [{ artifact_id: b, host_id: "share-h" }], add: [{ artifact_id: c, host_id: "share-h" }] } });
    expect(swapped.status, JSON.stringify(swapped.json)).toBe(200);
    const served = await call("GET", "/hosts/share-h/assignments", admin);
    expect((served.json.assignments as { artifact_id: string }[]).map((x) => x.artifact_id).sort(), "what share-h is served").toEqual([a, a, c].sort());
  });

  it("changes sent at once cannot together pass the share: each is checked against the state it is written on", async () => {
    const answers = await Promise.all(ids.map((id) => call("POST", `/assign/${id}/share-race`, admin)));
    expect(answers.map((a) => a.status).sort(), JSON.stringify(answers.map((a) => a.json))).toEqual([200, 200, 409]);
    const served = await call("GET", "/hosts/share-race/assignments", admin);
    expect((served.json.assignments as unknown[]).length, "share-race holds two").toBe(2);
  });

  it("aegis apply's swap of a digest on 600 hosts (1,200 changes, several requests), one host at the share: each host's add and remove go in one request, so none goes over, and it completes", async () => {
    const [a, b, c] = ids as [string, string, string];
    const hosts = Array.from({ length: 600 }, (_, i) => `swap-${i}`);
    // Every host on a; swap-0 also on c, so it is at the share of two.
    const before = [...hosts.map((host) => ({ artifact_id: a, host_id: host })), { artifact_id: c, host_id: "swap-0" }];
    expect((await call("POST", "/assignments", { ...admin, body: { add: before } })).status, "the hosts' first assignments").toBe(200);
    // a and b are two versions of one policy (b replaces a); c is another.
    const names = new Map([[a, "icmp"], [b, "icmp"], [c, "other"]]);
    const desired: PlanEntry[] = [...hosts.map((host) => ({ artifactId: b, target: { host }, policy: "icmp", name: "icmp" })), { artifactId: c, target: { host: "swap-0" }, policy: "other", name: "other" }];
    const sent: number[] = [];
    const client = new (class extends AssignerClient {
      override changeAssignments(...args: Parameters<AssignerClient["changeAssignments"]>) {
        sent.push((args[0].add?.length ?? 0) + (args[0].remove?.length ?? 0));
        return super.changeAssignments(...args);
      }
    })(small.url, admin.token);
    const result = await applyPlan(client, desired, names);
    expect({ applied: result.applied, add: result.plan.add.length, remove: result.plan.remove.length }, "the plan").toEqual({ applied: true, add: 600, remove: 600 });
    expect(sent.length, `requests sent (changes in each: ${sent.join(", ")})`).toBeGreaterThan(1);
    const after = ((await state()).assignments as { artifact_id: string; host_id?: string }[]).filter((x) => x.host_id?.startsWith("swap-"));
    expect(after.filter((x) => x.artifact_id === a), "hosts left on a").toEqual([]);
    expect(after.filter((x) => x.artifact_id === b).length, "hosts on b").toBe(600);
    expect(after.filter((x) => x.artifact_id === c).map((x) => x.host_id), "c stays where it was").toEqual(["swap-0"]);
  });

  it("takes no limit above what an agent takes", async () => {
    await expect(startAssigner({ port: 0, dataDir: join(work, "too-many"), adminToken: admin.token, maxAssignedPerHost: MAX_ASSIGNED + 1 })).rejects.toThrow(`maxAssignedPerHost must be at most ${MAX_ASSIGNED}`);
  });
});

describe("the cap on selector assignments", () => {
  /** Two assigners on one Redis, holding at most three selector assignments. */
  let redis: TcpServer;
  const pair: RunningAssigner[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    for (const name of ["cap-a", "cap-b"]) {
      pair.push(await startAssigner({ port: 0, dataDir: join(work, name), registry: `${registry.host}/aegis/uploads`, adminToken: admin.token, redisUrl: redis.url, maxSelectorAssignments: 3 }));
    }
    expect((await httpTo(pair[0]!.url, "POST", "/artifacts", { ...admin, body: { reference: `${registry.host}/assignments/p@${digest}` } })).status).toBe(201);
  });
  afterAll(async () => {
    await Promise.all(pair.map((a) => a.close()));
    await redis?.stop();
  });

  it("holds under concurrent adds through two assigners (409 naming the cap), and lets a re-add at the cap through", async () => {
    const add = (url: string, selector: string) => httpTo(url, "POST", "/assignments", { ...admin, body: { add: [{ artifact_id: digest, selector }] } });
    expect((await add(pair[0]!.url, "n=1")).status, "the first").toBe(200);
    expect((await add(pair[1]!.url, "n=2")).status, "the second").toBe(200);
    // Four single adds at once, two through each assigner, each read under the cap: one goes in.
    const answers = await Promise.all(["n=3", "n=4", "n=5", "n=6"].map((selector, i) => add(pair[i % 2]!.url, selector)));
    expect(answers.map((a) => a.status).sort(), JSON.stringify(answers.map((a) => a.json))).toEqual([200, 409, 409, 409]);
    const refused = answers.find((a) => a.status === 409)!;
    expect({ code: refused.json.code, error: refused.json.error }, "a refused add").toEqual({
      code: "CONFLICT",
      error: "this change would leave 4 selector assignments, more than the 3 an assigner holds: nothing was changed",
    });
    const state = await httpTo(pair[1]!.url, "GET", "/assignments", admin);
    expect((state.json.assignments as unknown[]).length, "never past the cap").toBe(3);
    const again = await add(pair[1]!.url, "n=1");
    expect({ status: again.status, json: again.json }, "re-adding one already there at the cap").toEqual({ status: 200, json: { version: state.json.version, added: 0, removed: 0 } });
    const swap = await httpTo(pair[0]!.url, "POST", "/assignments", { ...admin, body: { remove: [{ artifact_id: digest, selector: "n=1" }], add: [{ artifact_id: digest, selector: "n=9" }] } });
    expect(swap.status, `a remove makes room in its own change: ${JSON.stringify(swap.json)}`).toBe(200);
  });
});
