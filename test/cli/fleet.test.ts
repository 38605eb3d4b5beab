// The operator's view of a fleet (issue 11, "An operator's CLI"): `aegis
// artifact add`, `artifacts`, `hosts` and `status <digest>` against a real
// assigner process and registry 2.8.2, with agents registered and their
// signed telemetry posted as real agents do. Tables have headers; --json
// prints the data.
import { generateKeyPairSync } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startAssignerProcess, type AssignerProcess } from "../harness/assigner-process.js";
import { makeTempDir, removeTempDir } from "../harness/process.js";
import { http, registerAgent, signed, telemetry } from "../harness/assigner-http.js";
import { startRegistry, type RegistryServer } from "../harness/registry.js";
import { aegis, expectOneErrorLine } from "./run.js";

const TOKEN = "fleet-operator-token";
let registry: RegistryServer;
let assigner: AssignerProcess;
let env: NodeJS.ProcessEnv;
let digest: string;

beforeAll(async () => {
  [registry, assigner] = await Promise.all([startRegistry(), startAssignerProcess(["--admin-token", TOKEN])]);
  env = { AEGIS_ASSIGNER_URL: assigner.url, AEGIS_ADMIN_TOKEN: TOKEN };
  const pushed = await aegis(["push", "policies/block-icmp-8888", `${registry.host}/fleet/icmp:1.0.0`], env);
  expect(pushed.code, pushed.stderr).toBe(0);
  digest = pushed.stdout.trim();
});
afterAll(async () => {
  await assigner?.stop();
  await registry?.stop();
});

/** The rows of a table printed by the CLI, split on runs of two or more spaces, and its header. */
function parseTable(stdout: string, header: string[]): string[][] {
  const lines = stdout.trimEnd().split("\n");
  const at = lines.findIndex((line) => line.split(/ {2,}/).join("|") === header.join("|"));
  if (at < 0) throw new Error(`no header ${header.join(" ")} in:\n${stdout}`);
  return lines.slice(at + 1).map((line) => line.split(/ {2,}/));
}

describe("artifact add and artifacts", () => {
  it("refuses a tag with the digest it resolves to; --resolve registers that digest; a digest registers as is", async () => {
    const tag = `${registry.host}/fleet/icmp:1.0.0`;
    const line = expectOneErrorLine(await aegis(["artifact", "add", tag], env));
    expect(line).toContain(`resolves to ${registry.host}/fleet/icmp@${digest}`);
    expect(line).toMatch(/--resolve/);
    expect((await http(assigner.url, "GET", "/artifacts", { token: TOKEN })).json.total, "nothing registered after the refusal").toBe(0);

    const resolved = await aegis(["artifact", "add", tag, "--resolve", "--json"], env);
    expect(resolved.code, resolved.stderr).toBe(0);
    expect(JSON.parse(resolved.stdout)).toMatchObject({ id: digest, name: "block-icmp-8888", version: "1.0.0", reference: `${registry.host}/fleet/icmp@${digest}` });

    const byDigest = await aegis(["artifact", "add", `${registry.host}/fleet/icmp@${digest}`], env);
    expect(byDigest.code, byDigest.stderr).toBe(0);
    expect(byDigest.stdout).toBe(`${digest}\n`);
  });

  it("an OCI layout on the assigner's machine registers by digest too", async () => {
    const layout = makeTempDir("aegis-fleet-layout-");
    const pushed = await aegis(["push", "policies/deny-egress-cidrs", `oci:${layout}:1.2.0`], env);
    expect(pushed.code, pushed.stderr).toBe(0);
    const layoutDigest = pushed.stdout.trim();
    expect(expectOneErrorLine(await aegis(["artifact", "add", `oci:${layout}:1.2.0`], env))).toContain(`resolves to oci:${layout}@${layoutDigest}`);
    const added = await aegis(["artifact", "add", `oci:${layout}@${layoutDigest}`, "--json"], env);
    expect(added.code, added.stderr).toBe(0);
    expect(JSON.parse(added.stdout)).toMatchObject({ id: layoutDigest, name: "deny-egress-cidrs" });
    await removeTempDir(layout);
  });

  it("a missing artifact is one error line", async () => {
    const missing = `${registry.host}/fleet/none@sha256:${"1".repeat(64)}`;
    expect(expectOneErrorLine(await aegis(["artifact", "add", missing], env))).toMatch(/assigner answered/);
  });

  it("artifacts: a table with a header, or JSON", async () => {
    const listed = await aegis(["artifacts"], env);
    expect(listed.code, listed.stderr).toBe(0);
    const rows = parseTable(listed.stdout, ["DIGEST", "NAME", "VERSION", "SIGNED", "REFERENCE"]);
    expect(rows).toContainEqual([digest, "block-icmp-8888", "1.0.0", "no", `${registry.host}/fleet/icmp@${digest}`]);
    const json = JSON.parse((await aegis(["artifacts", "--json"], env)).stdout) as { artifacts: { id: string }[]; total: number };
    expect(json.total).toBe(rows.length);
    expect(json.artifacts.map((a) => a.id)).toContain(digest);
  });
});

describe("hosts and status", () => {
  const keys = { web1: generateKeyPairSync("ed25519"), web2: generateKeyPairSync("ed25519"), db1: generateKeyPairSync("ed25519") };

  beforeAll(async () => {
    // Registered here too (idempotent), so these tests also run alone.
    const registered = await http(assigner.url, "POST", "/artifacts", { token: TOKEN, body: { reference: `${registry.host}/fleet/icmp@${digest}` } });
    expect(registered.status, JSON.stringify(registered.json)).toBeLessThan(300);
    const [web1, web2] = await Promise.all([registerAgent(assigner.url, "web-01", keys.web1), registerAgent(assigner.url, "web-02", keys.web2), registerAgent(assigner.url, "db-01", keys.db1)]);
    for (const host of ["web-01", "web-02"]) expect((await aegis(["assign", digest, host], env)).code, `assign to ${host}`).toBe(0);
    // What the agents would send: web-01's in-force receipt, web-02's failure.
    const post = (who: { uid: string; token: string }, body: unknown) => http(assigner.url, "POST", `/agents/${who.uid}/telemetry`, { token: who.token, body });
    expect((await post(web1!, signed(telemetry("web-01", digest), keys.web1))).json).toMatchObject({ recorded: 1 });
    expect((await post(web2!, signed(telemetry("web-02", digest, { event: "failed", code: "LOAD_FAILED", reason: "the verifier refused the program" }), keys.web2))).json).toMatchObject({ recorded: 1 });
  });

  it("hosts: a table with host, labels, last seen, assigned, enforced, failed", async () => {
    const listed = await aegis(["hosts"], env);
    expect(listed.code, listed.stderr).toBe(0);
    const rows = parseTable(listed.stdout, ["HOST", "LABELS", "LAST SEEN", "ASSIGNED", "ENFORCED", "FAILED"]);
    const byHost = Object.fromEntries(rows.map((row) => [row[0], row]));
    expect(Object.keys(byHost).sort()).toEqual(["db-01", "web-01", "web-02"]);
    expect(byHost["web-01"]!.slice(3), "web-01: assigned, enforced, failed").toEqual(["1", "1", "0"]);
    expect(byHost["web-02"]!.slice(3), "web-02").toEqual(["1", "0", "1"]);
    expect(byHost["db-01"]!.slice(3), "db-01").toEqual(["0", "0", "0"]);
    expect(byHost["web-01"]![1]).toBe("role=web");
    expect(byHost["web-01"]![2], "web-01 reported, so it was seen").toMatch(/^\d{4}-\d\d-\d\dT/);

    const json = JSON.parse((await aegis(["hosts", "--json"], env)).stdout) as { hosts: { host_id: string; assigned: number; enforced: number; failed: number; labels: unknown }[]; total: number };
    expect(json.total).toBe(3);
    expect(json.hosts.find((h) => h.host_id === "web-02")).toMatchObject({ assigned: 1, enforced: 0, failed: 1, labels: { role: "web" } });
  });

  it("status: n of m assigned hosts enforcing, failures with their reasons, a table per host", async () => {
    const shown = await aegis(["status", digest], env);
    expect(shown.code, shown.stderr).toBe(0);
    const [summary] = shown.stdout.split("\n");
    expect(summary).toBe(`${digest} (block-icmp-8888 1.0.0): 1 of 2 assigned hosts enforcing, 1 failed (web-02: [LOAD_FAILED] the verifier refused the program)`);
    const rows = parseTable(shown.stdout, ["HOST", "ASSIGNED", "STATE", "REPORTED", "DETAIL"]);
    expect(rows.map((row) => [row[0], row[1], row[2]])).toEqual([
      ["web-01", "yes", "attached"],
      ["web-02", "yes", "failed"],
    ]);
    expect(rows[0]![4]).toBe("program 42 on eth0/egress since 2026-01-01T00:00:00.000Z, drops rule0=7");

    const json = JSON.parse((await aegis(["status", digest, "--json"], env)).stdout) as Record<string, unknown>;
    expect(json).toMatchObject({ artifact_id: digest, assigned: 2, enforcing: 1, failed: 1 });
    expect(json.hosts).toEqual([
      expect.objectContaining({ host_id: "web-01", assigned: true, state: "attached" }),
      expect.objectContaining({ host_id: "web-02", assigned: true, state: "failed", status: expect.objectContaining({ code: "LOAD_FAILED" }) }),
    ]);
  });

  it("status --summary: each host's event and reason, no receipt's program, interfaces or counters", async () => {
    const json = JSON.parse((await aegis(["status", digest, "--summary", "--json"], env)).stdout) as { hosts: { host_id: string; status?: Record<string, unknown> }[] };
    expect(json.hosts.map((h) => [h.host_id, Object.keys(h.status ?? {}).filter((k) => ["program_id", "interfaces", "counters", "since"].includes(k))]), "receipt fields per host").toEqual([
      ["web-01", []],
      ["web-02", []],
    ]);
    expect(json.hosts.find((h) => h.host_id === "web-02")?.status, "the failure, still told").toMatchObject({ event: "failed", code: "LOAD_FAILED" });
    const shown = await aegis(["status", digest, "--summary"], env);
    expect(parseTable(shown.stdout, ["HOST", "ASSIGNED", "STATE", "REPORTED", "DETAIL"]).map((row) => row[2]), "states").toEqual(["attached", "failed"]);
  });

  it("status of an unregistered digest is one error line", async () => {
    expect(expectOneErrorLine(await aegis(["status", `sha256:${"2".repeat(64)}`], env))).toMatch(/assigner answered 404/);
  });
});

/**
 * A pass-through in front of the assigner that runs `beforeListing` once,
 * after the assigner answered GET /agents and before the CLI gets that
 * answer: the fleet changes between the CLI's list and its reads of each
 * agent, every time, not by chance of timing.
 */
async function interposer(upstream: string, beforeListing: () => Promise<void>): Promise<{ url: string; server: Server }> {
  let pending: (() => Promise<void>) | undefined = beforeListing;
  const server = createServer((req, res) => {
    void (async () => {
      const answer = await fetch(new URL(req.url!, upstream), { method: req.method, headers: { authorization: req.headers.authorization ?? "" } });
      const body = Buffer.from(await answer.arrayBuffer());
      if (req.method === "GET" && req.url === "/agents" && pending) {
        const hook = pending;
        pending = undefined;
        await hook();
      }
      res.writeHead(answer.status, { "content-type": answer.headers.get("content-type") ?? "application/json" });
      res.end(body);
    })().catch((err: unknown) => {
      res.writeHead(599);
      res.end(String(err));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

describe("a fleet that changes while it is read", () => {
  beforeAll(async () => {
    // Registered here too (idempotent), so these tests also run alone.
    const registered = await http(assigner.url, "POST", "/artifacts", { token: TOKEN, body: { reference: `${registry.host}/fleet/icmp@${digest}` } });
    expect(registered.status, JSON.stringify(registered.json)).toBeLessThan(300);
    await registerAgent(assigner.url, "stays-01");
  });

  /** Registers gone-NN and moved-NN; the returned hook deletes the first and registers the second again (a new uid). */
  async function churn(tag: string) {
    const movedKeys = generateKeyPairSync("ed25519");
    const gone = await registerAgent(assigner.url, `gone-${tag}`);
    const moved = await registerAgent(assigner.url, `moved-${tag}`, movedKeys);
    return async () => {
      expect((await http(assigner.url, "DELETE", `/agents/${gone.uid}`, { token: TOKEN })).status, `delete gone-${tag}`).toBe(200);
      const again = await registerAgent(assigner.url, `moved-${tag}`, movedKeys);
      expect(again.uid, `moved-${tag} registered again has a new uid`).not.toBe(moved.uid);
      expect((await http(assigner.url, "GET", `/agents/${moved.uid}`, { token: TOKEN })).status, `moved-${tag}'s old uid is gone`).toBe(404);
    };
  }

  it.each([
    ["hosts", false],
    ["hosts", true],
    ["status", false],
    ["status", true],
  ])("%s (--json: %s): an agent deleted and one registered again between the list and their reads are left out and counted, not an error", async (command, json) => {
    const tag = `${command}-${json ? "json" : "table"}`;
    const proxy = await interposer(assigner.url, await churn(tag));
    try {
      const args = command === "hosts" ? ["hosts"] : ["status", digest];
      const result = await aegis([...args, ...(json ? ["--json"] : [])], { ...env, AEGIS_ASSIGNER_URL: proxy.url });
      expect(result.code, `${tag}: exit code; stderr: ${result.stderr}`).toBe(0);
      if (json) {
        const parsed = JSON.parse(result.stdout) as { skipped: number; hosts: { host_id: string }[] };
        expect(parsed.skipped, `${tag}: skipped in the JSON`).toBe(2);
        if (command === "hosts") expect(parsed.hosts.map((h) => h.host_id), `${tag}: hosts listed`).not.toContain(`gone-${tag}`);
        expect(result.stderr, `${tag}: nothing on stderr with --json`).toBe("");
      } else {
        expect(result.stderr, `${tag}: the note on stderr`).toBe("aegis: 2 hosts were left out: deleted or registered again while this ran; run it again to see them as they are now\n");
        if (command === "hosts") expect(parseTable(result.stdout, ["HOST", "LABELS", "LAST SEEN", "ASSIGNED", "ENFORCED", "FAILED"]).map((row) => row[0]), `${tag}: rows; stdout: ${result.stdout}`).toContain("stays-01");
      }
    } finally {
      await new Promise((resolve) => proxy.server.close(resolve));
    }
  });
});
