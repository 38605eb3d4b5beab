// `aegis apply` against a real assigner process on Redis and NATS and
// registry 2.8.2 (issue 11, acceptance 1): applying twice changes nothing
// the second time, --prune removes exactly what the files dropped, a host
// registering later with matching labels is served the selector's policies at
// once (and told on NATS), two applies on one version cannot overwrite each
// other (412, planned again), and the files' rules: digests only (a tag is
// refused with its digest, or pinned with --pin), trusted signatures with
// --trust, errors naming file and field.
import { spawn } from "node:child_process";
import { createPrivateKey, generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AssignerClient, type RolloutJson } from "../../assigner/api/index.js";
import { buildBundle, pushBundle } from "../../bundle/index.js";
import { applyPlan, desiredEntries, prepareFleet, registerArtifacts } from "../../fleet/index.js";
import { RemoteRepository } from "../../registry/index.js";
import { generateKeyPair, KeySigner, signArtifact } from "../../signing/index.js";
import { beginRegistration, http } from "../harness/assigner-http.js";
import { startAssignerProcess, type AssignerProcess } from "../harness/assigner-process.js";
import { startRegistry, type RegistryServer } from "../harness/registry.js";
import { startNats, startRedis, type TcpServer } from "../harness/tcp-server.js";
import { aegis, AEGIS, expectOneErrorLine } from "../cli/run.js";

let registry: RegistryServer;
let redis: TcpServer;
let nats: TcpServer;
let assigner: AssignerProcess;
let admin: AssignerClient;
let work: string;
let env: Record<string, string>;
const ciKey = generateKeyPair("ed25519");
const TOKEN = "fleet-apply-operator";
/** Digests by label: icmp v1/v2 (one policy name), other (another name), unsigned. */
const d: Record<string, string> = {};
let repo: string;

async function publish(label: string, version: string, name = "block-icmp-8888", signed = true): Promise<void> {
  const { bytes, policy } = await buildBundle("policies/block-icmp-8888");
  const target = new RemoteRepository(registry.host, "fleet/policies");
  const artifact = await pushBundle(bytes, { ...policy, name, version }, target, label);
  if (signed) await signArtifact(target, artifact.manifest, new KeySigner(createPrivateKey(ciKey.privateKey)), target.name);
  d[label] = artifact.manifest.digest;
}

beforeAll(async () => {
  [registry, redis, nats] = await Promise.all([startRegistry(), startRedis(), startNats()]);
  assigner = await startAssignerProcess(["--redis", redis.url, "--nats", nats.url, "--admin-token", TOKEN, "--registry", `${registry.host}/fleet/uploads`]);
  admin = new AssignerClient(assigner.url, TOKEN);
  work = mkdtempSync(join(tmpdir(), "aegis-fleet-apply-"));
  writeFileSync(join(work, "ci.pub"), ciKey.publicKey);
  writeFileSync(join(work, "trust.yaml"), "keys:\n  - name: ci\n    key: ci.pub\n");
  repo = `${registry.host}/fleet/policies`;
  await publish("v1", "1.0.0");
  await publish("v2", "2.0.0");
  await publish("other", "1.0.0", "other-policy");
  await publish("unsigned", "9.0.0", "unsigned-policy", false);
  env = { AEGIS_ASSIGNER_URL: assigner.url, AEGIS_ADMIN_TOKEN: TOKEN };
}, 120_000);
afterAll(async () => {
  await assigner?.stop();
  await Promise.all([registry?.stop(), redis?.stop(), nats?.stop()]);
  if (work) rmSync(work, { recursive: true, force: true });
});

/** Writes a fleet file; `policies` as YAML list items. */
function fleetFile(name: string, policies: string[], environment?: string): string {
  const file = join(work, name);
  writeFileSync(file, [...(environment ? [`environment: ${environment}`] : []), "policies:", ...policies, ""].join("\n"));
  return file;
}

const entry = (name: string, digest: string, targets: { hosts?: string[]; selectors?: string[] }) =>
  `  - name: ${name}\n    ref: ${repo}@${digest}\n${targets.hosts ? `    hosts: [${targets.hosts.join(", ")}]\n` : ""}${targets.selectors ? `    selectors: [${targets.selectors.map((s) => JSON.stringify(s)).join(", ")}]\n` : ""}`.trimEnd();

async function state() {
  const s = await admin.desiredState();
  return { version: s.version, assignments: s.assignments.map((a) => `${a.artifact_id === d.v1 ? "v1" : a.artifact_id === d.v2 ? "v2" : a.artifact_id === d.other ? "other" : a.artifact_id} ${"host_id" in a ? `host:${a.host_id}` : `selector:${a.selector}`}`).sort() };
}

/** A registered host polls once, as a running agent does, so a rollout stages it (it was seen lately). */
async function seen(host: string, completed: { status: number; json: Record<string, unknown> }): Promise<void> {
  expect(completed.status, `${host} registers`).toBe(200);
  const poll = await http(assigner.url, "GET", `/artifacts/for-host/${host}`, { token: completed.json.token as string });
  expect(poll.status, `${host} polls`).toBe(200);
}

async function apply(...args: string[]) {
  const result = await aegis(["apply", ...args], env);
  if (result.code !== 0) throw new Error(`aegis apply ${args.join(" ")} failed (${result.code}):\n${result.stdout}${result.stderr}`);
  return result;
}

describe("aegis apply", () => {
  it("applies a fleet file, and a second run changes nothing", async () => {
    const file = fleetFile("twice.yaml", [entry("icmp", d.v1!, { hosts: ["twice-1"], selectors: ["env=prod,zone in (b,a)"] }), entry("other", d.other!, { hosts: ["twice-2"] })]);
    const first = await apply("-f", file);
    expect(first.stdout, "the plan is printed before acting").toMatch(/plan on desired-state version \d+: 3 to add, 0 to remove, 0 unchanged/);
    const after = await state();
    expect(after.assignments, "what the file names, selectors in canonical form").toEqual(["other host:twice-2", "v1 host:twice-1", "v1 selector:env=prod,zone in (a,b)"]);
    const second = await aegis(["apply", "-f", file, "--json"], env);
    expect(second.code, second.stderr).toBe(0);
    const json = JSON.parse(second.stdout) as { applied: boolean; plan: { add: unknown[]; remove: unknown[]; unchanged: unknown[] } };
    expect({ applied: json.applied, add: json.plan.add.length, remove: json.plan.remove.length, unchanged: json.plan.unchanged.length }, "second run: nothing to do").toEqual({ applied: false, add: 0, remove: 0, unchanged: 3 });
    expect(await state(), "the desired state and its version did not move").toEqual(after);
  });

  it("a plan of more changes than one request takes (1,200) goes in several, and a second run changes nothing", async () => {
    await admin.changeAssignments({ remove: (await admin.desiredState()).assignments });
    const hosts = (prefix: string) => Array.from({ length: 600 }, (_, i) => `${prefix}-${i}`).join(", ");
    const file = join(work, "bulk.yaml");
    writeFileSync(file, `environment: bulk\npolicies:\n  - name: icmp\n    ref: ${repo}@${d.v1}\n    hosts: [${hosts("bulk-a")}]\n  - name: other\n    ref: ${repo}@${d.other}\n    hosts: [${hosts("bulk-b")}]\n`);
    const applied = await aegis(["apply", "-f", file, "--json"], env);
    expect(applied.code, applied.stderr).toBe(0);
    expect((await admin.desiredState()).assignments, "assignments made").toHaveLength(1200);
    const again = await aegis(["apply", "-f", file, "--json"], env);
    expect((JSON.parse(again.stdout) as { applied: boolean }).applied, "the second run").toBe(false);
    const all = (await admin.desiredState()).assignments;
    for (let i = 0; i < all.length; i += 1000) await admin.changeAssignments({ remove: all.slice(i, i + 1000) });
  });

  it("takes up to 1000 policies per file (README), not in all: two files of 600 plan 1,200; a file of 1001 is refused, naming it", async () => {
    const policies = (from: number, n: number) => Array.from({ length: n }, (_, i) => entry(`many-${from + i}`, d.v1!, { hosts: [`many-${from + i}`] }));
    const two = await aegis(["apply", "-f", fleetFile("many-a.yaml", policies(0, 600)), "-f", fleetFile("many-b.yaml", policies(600, 600)), "--dry-run", "--json"], env);
    expect(two.code, `two files of 600 policies\n${two.stderr}`).toBe(0);
    expect((JSON.parse(two.stdout) as { plan: { add: unknown[] } }).plan.add, "the plan of two files of 600 policies").toHaveLength(1200);
    const big = fleetFile("many-big.yaml", policies(0, 1001));
    expect(expectOneErrorLine(await aegis(["apply", "-f", big, "--dry-run"], env)), "a file of 1001 policies").toContain(`${big}: policies: `);
  });

  it("--dry-run prints the plan and changes nothing; --prune removes exactly what the file dropped", async () => {
    await admin.changeAssignments({ remove: (await admin.desiredState()).assignments });
    const full = fleetFile("prune.yaml", [entry("icmp", d.v1!, { hosts: ["prune-1", "prune-2"], selectors: ["role=db"] }), entry("other", d.other!, { hosts: ["prune-3"] })]);
    await apply("-f", full);
    const before = await state();
    const dropped = fleetFile("prune.yaml", [entry("icmp", d.v1!, { hosts: ["prune-1"], selectors: ["role=db"] })]);
    const kept = await apply("-f", dropped);
    expect(kept.stdout, "without --prune, what the file dropped is kept and said so").toContain("2 assignments the files do not name kept; --prune removes them");
    expect(await state(), "nothing removed without --prune").toEqual(before);
    const dry = await apply("-f", dropped, "--prune", "--dry-run");
    expect(dry.stdout).toContain(`- ${d.v1!.slice(0, 19)} block-icmp-8888 → host prune-2  (prune)`);
    expect(dry.stdout).toContain("dry run: nothing changed");
    expect(await state(), "a dry run changes nothing").toEqual(before);
    await apply("-f", dropped, "--prune");
    const after = await state();
    expect(after.assignments, "exactly the dropped two are gone").toEqual(["v1 host:prune-1", "v1 selector:role=db"]);
    expect(after.version, "one atomic change").toBe(before.version + 1);
  });

  it("replaces the previous digest of a policy on the same target without --prune", async () => {
    await admin.changeAssignments({ remove: (await admin.desiredState()).assignments });
    await apply("-f", fleetFile("replace.yaml", [entry("icmp", d.v1!, { selectors: ["tier=web"] })]));
    const next = await apply("-f", fleetFile("replace.yaml", [entry("icmp", d.v2!, { selectors: ["tier=web"] })]));
    expect(next.stdout).toContain(`~ ${d.v1!.slice(0, 19)} ⇒ ${d.v2!.slice(0, 19)} block-icmp-8888 → selector tier=web  (replace)`);
    expect((await state()).assignments).toEqual(["v2 selector:tier=web"]);
  });

  it("serves a host that registers later with matching labels at once, and tells it on NATS", async () => {
    await admin.changeAssignments({ remove: (await admin.desiredState()).assignments });
    await apply("-f", fleetFile("labels.yaml", [entry("icmp", d.v1!, { selectors: ["env=prod,zone in (a,b)"] }), entry("other", d.other!, { selectors: ["env=staging"] })]));
    const nc: NatsConnection = await connect({ servers: nats.url });
    try {
      const subscription = nc.subscribe("aegis.assignments.late-prod");
      const notice = (async () => {
        for await (const msg of subscription) return msg.json<{ host_id: string; version: number }>();
        return undefined;
      })();
      await nc.flush();
      const register = async (host: string, labels: Record<string, string>) => {
        const started = await beginRegistration(assigner.url, host, generateKeyPairSync("ed25519"), { labels });
        const done = await started.complete();
        expect(done.status, JSON.stringify(done.json)).toBe(200);
        return done.json.token as string;
      };
      const prod = await register("late-prod", { env: "prod", zone: "b" });
      const told = await Promise.race([notice, new Promise((r) => setTimeout(() => r("no notice in 10 s"), 10_000))]);
      expect(told, "the registering host is told on aegis.assignments.<host>").toMatchObject({ host_id: "late-prod" });
      const poll = await http(assigner.url, "GET", "/artifacts/for-host/late-prod", { token: prod });
      expect((poll.json.artifacts as { id: string }[]).map((a) => a.id), "the selector's policy, on the first poll").toEqual([d.v1]);
      const other = await register("late-c", { env: "prod", zone: "c" });
      expect((await http(assigner.url, "GET", "/artifacts/for-host/late-c", { token: other })).json.total, "zone c is not in (a,b)").toBe(0);
      const why = await admin.hostAssignments("late-prod");
      expect(why.assignments, "the host view says why").toEqual([{ artifact_id: d.v1, via: "selector", selector: "env=prod,zone in (a,b)" }]);
      const shown = await aegis(["assignments", "--host", "late-prod"], env);
      expect(shown.stdout, "aegis assignments --host: labels, a header, and why").toBe(
        `host late-prod (labels env=prod,zone=b, version ${why.version})\nARTIFACT${" ".repeat(65)}VIA\n${d.v1}  selector env=prod,zone in (a,b)\n`,
      );
      const all = JSON.parse((await aegis(["assignments", "--json"], env)).stdout) as { version: number; assignments: unknown[] };
      expect(all.assignments, "aegis assignments --json: the whole desired state").toEqual(expect.arrayContaining([{ artifact_id: d.v1, selector: "env=prod,zone in (a,b)" }, { artifact_id: d.other, selector: "env=staging" }]));
      // A selector added after the host registered reaches it too (its version moves).
      const etag = poll.headers.get("etag")!;
      await admin.changeAssignments({ add: [{ artifact_id: d.other!, selector: "zone=b" }] });
      const moved = await http(assigner.url, "GET", "/artifacts/for-host/late-prod", { token: prod, headers: { "if-none-match": etag } });
      expect(moved.status, "the host's ETag moved with the new selector").toBe(200);
      expect((moved.json.artifacts as { id: string }[]).map((a) => a.id).sort()).toEqual([d.v1, d.other].sort());
    } finally {
      await nc.close();
    }
  });

  it("refuses a write planned on a stale version with 412, and a concurrent apply plans again and loses nothing", async () => {
    await admin.changeAssignments({ remove: (await admin.desiredState()).assignments });
    const { version } = await admin.desiredState();
    const first = await http(assigner.url, "POST", "/assignments", { token: TOKEN, headers: { "if-match": `"${version}"` }, body: { add: [{ artifact_id: d.v1, host_id: "race-1" }] } });
    expect(first.status).toBe(200);
    expect(first.headers.get("etag")).toBe(`"${version + 1}"`);
    const stale = await http(assigner.url, "POST", "/assignments", { token: TOKEN, headers: { "if-match": `"${version}"` }, body: { add: [{ artifact_id: d.v1, host_id: "race-2" }] } });
    expect({ status: stale.status, code: stale.json.code }, "a write on the old version").toEqual({ status: 412, code: "PRECONDITION_FAILED" });

    // Two `aegis apply` processes at once, each naming what the other does not: both succeed, nothing is lost.
    const fileA = fleetFile("race-a.yaml", [entry("icmp", d.v1!, { hosts: ["race-a"] })]);
    const fileB = fleetFile("race-b.yaml", [entry("other", d.other!, { hosts: ["race-b"] })]);
    const races = await Promise.all([aegis(["apply", "-f", fileA], env), aegis(["apply", "-f", fileB], env)]);
    for (const r of races) expect(r.code, r.stdout + r.stderr).toBe(0);
    expect((await state()).assignments, "both applies' assignments are there: no lost update").toEqual(expect.arrayContaining(["v1 host:race-a", "other host:race-b"]));
  });

  it("plans again after a 412 when another writer gets in between the plan and the write", async () => {
    await admin.changeAssignments({ remove: (await admin.desiredState()).assignments });
    const file = fleetFile("between.yaml", [entry("icmp", d.v1!, { hosts: ["between-1"] })]);
    const prepared = await prepareFleet([file]);
    const names = await registerArtifacts(admin, prepared.fleet, prepared.names);
    const versions: number[] = [];
    const result = await applyPlan(admin, desiredEntries(prepared.fleet, names), names, {
      onPlan: async (plan, attempt) => {
        versions.push(plan.version);
        // The first time only: another operator's change lands after this plan was made, before it is sent.
        if (attempt === 1) await admin.changeAssignments({ add: [{ artifact_id: d.other!, host_id: "between-other" }] });
      },
    });
    expect({ applied: result.applied, replans: result.replans }, `plans made on versions ${versions.join(", ")}`).toEqual({ applied: true, replans: 1 });
    expect(versions[1], "the second plan was made on the other writer's version").toBe(versions[0]! + 1);
    expect((await state()).assignments, "both changes are there").toEqual(["other host:between-other", "v1 host:between-1"]);
  });

  it("refuses a tag with the digest it resolves to, and pins it with --pin (atomically, keeping comments)", async () => {
    const file = join(work, "tagged.yaml");
    writeFileSync(file, `# production fleet\npolicies:\n  - name: icmp # the ping blocker\n    ref: ${repo}:v2\n    hosts: [tag-1]\n`);
    const refused = await aegis(["apply", "-f", file], env);
    const line = expectOneErrorLine(refused);
    expect(line, "names file, field, tag and digest").toContain(`${file}: policies[0].ref: ${repo}:v2 is a tag, not a digest; it resolves to ${repo}@${d.v2}`);
    const pinned = await apply("-f", file, "--pin");
    expect(pinned.stdout).toContain(`pinned ${file} policies[0] (icmp) to ${repo}@${d.v2}`);
    const text = readFileSync(file, "utf8");
    expect(text, "the digest is written back").toContain(`ref: ${repo}@${d.v2}`);
    expect(text, "comments stay").toContain("# the ping blocker");
    expect((await state()).assignments).toContain("v2 host:tag-1");
  });

  it("--pin writes nothing when the command is refused, nor with --dry-run", async () => {
    const file = join(work, "pin-refused.yaml");
    const text = `policies:\n  - name: unsigned # kept as written\n    ref: ${repo}:unsigned\n    hosts: [pin-1]\n`;
    writeFileSync(file, text);
    const refused = await aegis(["apply", "-f", file, "--pin", "--trust", join(work, "trust.yaml")], env);
    expect(expectOneErrorLine(refused)).toContain(`is not signed by a trusted key`);
    expect(readFileSync(file, "utf8"), "the file after a refused --pin").toBe(text);
    const dry = await aegis(["apply", "-f", file, "--pin", "--dry-run"], env);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout, "what --pin would write").toContain(`would pin ${file} policies[0] (unsigned) to ${repo}@${d.unsigned}`);
    expect(readFileSync(file, "utf8"), "the file after --pin --dry-run").toBe(text);
  });

  it("with --trust, refuses a digest no trusted key signed, before changing anything", async () => {
    const before = await state();
    const file = fleetFile("unsigned.yaml", [entry("unsigned", d.unsigned!, { hosts: ["trust-1"] }), entry("icmp", d.v1!, { hosts: ["trust-2"] })]);
    const refused = await aegis(["apply", "-f", file, "--trust", join(work, "trust.yaml")], env);
    expect(expectOneErrorLine(refused)).toContain(`${file}: policies[0].ref: ${d.unsigned} is not signed by a trusted key`);
    expect(await state(), "nothing applied").toEqual(before);
    const signed = fleetFile("signed.yaml", [entry("icmp", d.v1!, { hosts: ["trust-2"] })]);
    await apply("-f", signed, "--trust", join(work, "trust.yaml"));
    expect((await state()).assignments).toContain("v1 host:trust-2");
  });

  it("names the file and field of every mistake in a fleet file", async () => {
    const cases: [string, string][] = [
      ["policies:\n  - name: x\n    ref: a.example/r@sha256:" + "0".repeat(64) + "\n", "policies[0]: a policy needs at least one target: hosts or selectors"],
      ["policies:\n  - name: x\n    ref: a.example/r@sha256:" + "0".repeat(64) + "\n    hosts: [h]\n    color: red\n", 'policies[0]: Unrecognized key: "color"'],
      ["policies:\n  - name: x\n    ref: a.example/r@sha256:" + "0".repeat(64) + "\n    selectors: ['zone in (a']\n", "policies[0].selectors[0]: selector"],
      ["policies:\n  - name: x\n    ref: oci:./layout@sha256:" + "0".repeat(64) + "\n    hosts: [h]\n", "policies[0].ref: an OCI layout cannot be assigned"],
      ["environment: prod\npolicies: {}\n", "policies: "],
    ];
    for (const [text, expected] of cases) {
      const file = join(work, "bad.yaml");
      writeFileSync(file, text);
      const line = expectOneErrorLine(await aegis(["apply", "-f", file, "--dry-run"], env));
      expect(line, `${JSON.stringify(text)}`).toContain(`${file}: `);
      expect(line, `${JSON.stringify(text)}`).toContain(expected);
    }
    const a = fleetFile("dup-a.yaml", [entry("same", d.v1!, { hosts: ["h"] })]);
    const b = fleetFile("dup-b.yaml", [entry("same", d.v2!, { hosts: ["h"] })]);
    expect(expectOneErrorLine(await aegis(["apply", "-f", a, "-f", b, "--dry-run"], env))).toContain(`${b}: policies[0].name: "same" is also the name of ${a} policies[0]`);
  });
});

describe("aegis promote", () => {
  it("moves the same digest from one environment's file to the next, and applies it with --apply", async () => {
    const dir = mkdtempSync(join(work, "envs-"));
    writeFileSync(join(dir, "staging.yaml"), `environment: staging\npolicies:\n  - name: icmp\n    ref: ${repo}@${d.v2}\n    selectors: [env=staging]\n`);
    // prod pulls from its own mirror repository: the digest moves, the repository stays.
    const mirror = `${registry.host}/fleet/policies`;
    writeFileSync(join(dir, "prod.yaml"), `# prod: reviewed\nenvironment: prod\npolicies:\n  - name: icmp  # keep\n    ref: ${mirror}@${d.v1}\n    selectors: [env=prod]\n`);
    const mixed = await aegis(["apply", "-f", dir, "--dry-run"], env);
    expect(expectOneErrorLine(mixed), "one environment at a time").toContain("several environments (prod, staging): apply one at a time with --environment");
    const unknown = await aegis(["promote", d.other!, "--from", "staging", "--to", "prod", "-f", dir], env);
    expect(expectOneErrorLine(unknown)).toContain(`no policy of environment staging pins ${d.other}`);
    const promoted = await aegis(["promote", `${repo}@${d.v2}`, "--from", "staging", "--to", "prod", "-f", dir, "--json"], env);
    expect(promoted.code, promoted.stderr).toBe(0);
    expect((JSON.parse(promoted.stdout) as { promoted: unknown[] }).promoted).toEqual([{ name: "icmp", file: join(dir, "prod.yaml"), index: 0, from: `${mirror}@${d.v1}`, to: `${mirror}@${d.v2}` }]);
    const prod = readFileSync(join(dir, "prod.yaml"), "utf8");
    expect(prod, "the prod file pins the staging digest, the rest of its text as it was").toBe(`# prod: reviewed\nenvironment: prod\npolicies:\n  - name: icmp  # keep\n    ref: ${mirror}@${d.v2}\n    selectors: [env=prod]\n`);
    expect(readFileSync(join(dir, "staging.yaml"), "utf8"), "staging untouched").toContain(`${repo}@${d.v2}`);
    const again = await aegis(["promote", d.v2!, "--from", "staging", "--to", "prod", "-f", dir, "--apply"], env);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain(`prod already pins ${d.v2}`);
    expect((await state()).assignments, "--apply applied the prod environment").toContain("v2 selector:env=prod");
  });

  it("with --key or --trust, checks the digest where the --to files will name it before editing them: an unsigned one leaves them as they were", async () => {
    const dir = mkdtempSync(join(work, "envs-trust-"));
    writeFileSync(join(dir, "staging.yaml"), `environment: staging\npolicies:\n  - name: unsigned\n    ref: ${repo}@${d.unsigned}\n    hosts: [promote-1]\n`);
    const prodText = `environment: prod\npolicies:\n  - name: unsigned\n    ref: ${repo}@${d.v1}\n    hosts: [promote-2]\n`;
    writeFileSync(join(dir, "prod.yaml"), prodText);
    for (const extra of [[], ["--apply"]]) {
      const refused = await aegis(["promote", d.unsigned!, "--from", "staging", "--to", "prod", "-f", dir, "--trust", join(work, "trust.yaml"), ...extra], env);
      expect(expectOneErrorLine(refused), `promote ${extra.join(" ")}`).toMatch(/no signature|not signed|NO_SIGNATURE/i);
      expect(readFileSync(join(dir, "prod.yaml"), "utf8"), `the prod file after a refused promote ${extra.join(" ")}`).toBe(prodText);
    }
  });
});

describe("aegis promote, then a failure", () => {
  it("bad rollout flags are refused before any file is edited; an apply that fails after the edit says the files stay edited", async () => {
    const dir = mkdtempSync(join(work, "envs-after-"));
    writeFileSync(join(dir, "staging.yaml"), `environment: staging\npolicies:\n  - name: icmp\n    ref: ${repo}@${d.v2}\n    hosts: [after-1]\n`);
    const prodText = `environment: prod\npolicies:\n  - name: icmp\n    ref: ${repo}@${d.v1}\n    hosts: [after-2]\n`;
    writeFileSync(join(dir, "prod.yaml"), prodText);
    const promote = ["promote", d.v2!, "--from", "staging", "--to", "prod", "-f", dir];
    for (const [flags, why] of [
      [["--rollout", ""], /--rollout : 1 to 16 comma-separated rings/],
      // Wrong at any number of hosts (the plan's is known only after the edit): a count after a share, rings that shrink, a last ring short of 100%.
      [["--rollout", "10%,1,100%"], /--rollout 10%,1,100%: rings grow/],
      [["--rollout", "5,2,100%"], /--rollout 5,2,100%: rings grow/],
      [["--rollout", "1,10%"], /--rollout 1,10%: the last ring must reach every host \(100%\)/],
      [["--rollout", "1,100%", "--max-failures", "x"], /--max-failures x/],
      [["--apply", "--ring-timeout", "soon"], /--ring-timeout soon/],
    ] as const) {
      expect(expectOneErrorLine(await aegis([...promote, ...flags], env)), flags.join(" ")).toMatch(why);
      expect(readFileSync(join(dir, "prod.yaml"), "utf8"), `the prod file after ${flags.join(" ")}`).toBe(prodText);
    }
    expect(expectOneErrorLine(await aegis(["apply", "-f", join(dir, "prod.yaml"), "--rollout", ""], env)), "apply --rollout \"\"").toMatch(/--rollout : 1 to 16 comma-separated rings/);

    // The assigner out of reach: found (asking it whether a rollout runs) before the file is edited.
    const unreachable = { ...env, AEGIS_ASSIGNER_URL: "http://127.0.0.1:9" };
    expect(expectOneErrorLine(await aegis([...promote, "--apply"], unreachable)), "promote --apply, the assigner out of reach").toMatch(/127\.0\.0\.1:9/);
    expect(readFileSync(join(dir, "prod.yaml"), "utf8"), "the prod file after promote --apply with the assigner out of reach").toBe(prodText);

    // A failure once the file is edited (prod's mirror does not hold the digest yet): --json says what was promoted beside the failure.
    const mirrored = prodText.replace(`${repo}@`, `${registry.host}/fleet/mirror-behind@`);
    writeFileSync(join(dir, "prod.yaml"), mirrored);
    const failed = await aegis([...promote, "--apply", "--json"], env);
    expect(failed.code, failed.stderr).toBe(1);
    expect(JSON.parse(failed.stdout), "one JSON document").toMatchObject({ promoted: [{ name: "icmp", to: `${registry.host}/fleet/mirror-behind@${d.v2}` }], applied: false, code: "INVALID_REFERENCE" });
    writeFileSync(join(dir, "prod.yaml"), mirrored);
    const human = await aegis([...promote, "--apply"], env);
    expect(human.stdout + human.stderr, "said to a person").toContain(`the --to files stay edited to ${d.v2}: the apply failed`);
  });
});

describe("aegis apply --rollout without receipts", () => {
  it("rolls back a ring whose hosts send no receipt in time, and says so in rollout status", async () => {
    await admin.changeAssignments({ remove: (await admin.desiredState()).assignments });
    // A registered host with the labels, but no agent running: it never reports.
    const started = await beginRegistration(assigner.url, "silent-1", generateKeyPairSync("ed25519"), { labels: { tier: "silent" } });
    await seen("silent-1", await started.complete());
    await apply("-f", fleetFile("silent.yaml", [entry("icmp", d.v1!, { selectors: ["tier=silent"] })]));
    const before = await state();
    const bad = await aegis(["apply", "-f", fleetFile("silent.yaml", [entry("icmp", d.v2!, { selectors: ["tier=silent"] })]), "--rollout", "100%", "--ring-timeout", "1500ms"], env);
    expect(expectOneErrorLine(bad)).toContain("ring 1 (100%): 1 of 1 host failed (allowed 0); first: silent-1 no in-force receipt within 1500 ms");
    expect(await state(), "back to what it was").toEqual({ ...before, version: before.version + 3 });
    const shown = JSON.parse((await aegis(["rollout", "status", "--json"], env)).stdout) as RolloutJson;
    expect({ state: shown.state, failed: shown.rings[0]!.failed, changes: shown.changes }).toEqual({ state: "rolled_back", failed: 1, changes: [{ from: d.v1, to: d.v2, target: "selector tier=silent" }] });
    // For scripts: one JSON document, the rollout's record with the failure's words and code.
    const scripted = await aegis(["apply", "-f", fleetFile("silent.yaml", [entry("icmp", d.v2!, { selectors: ["tier=silent"] })]), "--rollout", "100%", "--ring-timeout", "500ms", "--json"], env);
    expect(scripted.code, scripted.stderr).toBe(1);
    const document = JSON.parse(scripted.stdout) as { applied: boolean; rollout: RolloutJson; error: string; code: string };
    expect({ applied: document.applied, state: document.rollout.state, code: document.code }, "the JSON of a stopped rollout").toEqual({ applied: false, state: "rolled_back", code: "ROLLED_BACK" });
    expect(document.error, "its words").toContain("no in-force receipt within 500 ms");
    const allowed = await aegis(["apply", "-f", fleetFile("silent.yaml", [entry("icmp", d.v2!, { selectors: ["tier=silent"] })]), "--rollout", "100%", "--ring-timeout", "1s", "--max-failures", "100%"], env);
    expect(allowed.code, `--max-failures 100% lets the ring pass\n${allowed.stdout}${allowed.stderr}`).toBe(0);
    expect((await state()).assignments).toEqual(["v2 selector:tier=silent"]);
    // silent-1 polled once, at its registration: --seen-within shorter than that leaves no host to stage.
    const file = fleetFile("silent.yaml", [entry("icmp", d.v1!, { selectors: ["tier=silent"] })]);
    expect(expectOneErrorLine(await aegis(["apply", "-f", file, "--rollout", "100%", "--seen-within", "10ms"], env)), "--seen-within").toMatch(
      /nothing to roll out: the plan adds nothing to a registered host seen lately, only to 1 registered host not seen within 10 ms \(silent-1\)/,
    );
    expect(expectOneErrorLine(await aegis(["apply", "-f", file, "--rollout", "100%", "--seen-within", "soon"], env)), "a bad --seen-within").toMatch(/--seen-within/);
    expect((await state()).assignments, "neither changed anything").toEqual(["v2 selector:tier=silent"]);
  });

  it("rolls back when the operator interrupts it (SIGINT)", async () => {
    const before = await state();
    const child = spawn(process.execPath, [AEGIS, "apply", "-f", fleetFile("silent.yaml", [entry("icmp", d.v1!, { selectors: ["tier=silent"] })]), "--rollout", "100%", "--ring-timeout", "10m"], { env: { ...process.env, ...env } });
    let out = "";
    let err = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr.on("data", (c: Buffer) => (err += c.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
    for (let i = 0; i < 200 && !out.includes("waiting for their in-force receipts"); i++) await new Promise((r) => setTimeout(r, 50));
    expect(out, "the ring is waiting").toContain("waiting for their in-force receipts");
    expect((await state()).assignments, "mid-rollout, the ring's host holds the new digest").toEqual(["v1 host:silent-1"]);
    child.kill("SIGINT");
    expect(await exited, `ends by SIGINT after rolling back (so a script running it stops too)\n${out}${err}`).toEqual({ code: null, signal: "SIGINT" });
    expect(err.trim().split("\n"), "one error line").toHaveLength(1);
    expect(err).toContain("stopped by the operator");
    expect((await state()).assignments, "the desired state is back").toEqual(before.assignments);
    const shown = JSON.parse((await aegis(["rollout", "status", "--json"], env)).stdout) as RolloutJson;
    expect(shown.state).toBe("rolled_back");
  });
});

describe("the kernel check", () => {
  it("refuses to apply or roll out a program to a host whose kernel cannot run it, before changing anything, unless --force; a forced rollout's rollback restores what was forced", async () => {
    await admin.changeAssignments({ remove: (await admin.desiredState()).assignments });
    for (const [host, capabilities] of [["old-kernel-1", { kernel_version: "5.10.0", btf: false }], ["new-kernel-1", { kernel_version: "6.8.0", btf: true, bpf_loop: true, clsact: true }]] as const) {
      const started = await beginRegistration(assigner.url, host, generateKeyPairSync("ed25519"), { labels: { tier: "kernels" }, capabilities });
      await seen(host, await started.complete());
    }
    const file = fleetFile("kernels.yaml", [entry("icmp", d.v1!, { hosts: ["new-kernel-1", "old-kernel-1"] })]);
    const before = await state();
    const refused = await aegis(["apply", "-f", file], env);
    expect(expectOneErrorLine(refused), "the error names the host and why").toMatch(/^aegis: error: host "old-kernel-1" cannot run sha256:[0-9a-f]{64}: aegis_net needs Linux >= 5\.17, the host runs 5\.10\.0.*--force/);
    expect(await state(), "nothing changed, not even the capable host's assignment").toEqual(before);
    const forced = await apply("-f", file, "--force");
    expect(forced.stdout).toMatch(/applied: desired-state version/);
    expect((await state()).assignments, "--force assigns both").toEqual(["v1 host:new-kernel-1", "v1 host:old-kernel-1"]);

    // v2 to the old kernel in a rollout: refused before anything moves, with no record.
    const next = fleetFile("kernels.yaml", [entry("icmp", d.v2!, { hosts: ["old-kernel-1"] }), entry("other", d.other!, { hosts: ["new-kernel-1"] })]);
    const atV1 = await state();
    const rolloutsBefore = (await admin.rollouts()).total;
    expect(expectOneErrorLine(await aegis(["apply", "-f", next, "--rollout", "100%", "--ring-timeout", "1s"], env)), "a rollout").toMatch(/host "old-kernel-1" cannot run sha256:[0-9a-f]{64}: aegis_net needs Linux >= 5\.17.*--force/);
    expect([await state(), (await admin.rollouts()).total], "nothing moved, no rollout recorded").toEqual([atV1, rolloutsBefore]);
    expect(expectOneErrorLine(await aegis(["apply", "-f", next, "--dry-run"], env)), "a dry run says it too").toMatch(/host "old-kernel-1" cannot run/);
    // A digest the assigner does not know yet (a dry run registers nothing): its program is read from its manifest.
    await publish("unregistered", "5.0.0", "kernel-check");
    const unknown = fleetFile("kernels-new.yaml", [entry("fresh", d.unregistered!, { hosts: ["old-kernel-1"] })]);
    expect(expectOneErrorLine(await aegis(["apply", "-f", unknown, "--dry-run"], env)), "a dry run of an unregistered digest").toMatch(new RegExp(`host "old-kernel-1" cannot run ${d.unregistered}`));
    expect((await admin.artifacts()).artifacts.map((a) => a.id), "still unregistered").not.toContain(d.unregistered);
    // Forced, its ring fails (no agent sends receipts here): the rollback puts v1 back on that host, although its kernel cannot run v1 either.
    const stopped = await aegis(["apply", "-f", next, "--rollout", "100%", "--ring-timeout", "500ms", "--force", "--json"], env);
    expect(stopped.code, stopped.stderr).toBe(1);
    const document = JSON.parse(stopped.stdout) as { rollout: RolloutJson; error: string; code: string };
    expect({ state: document.rollout.state, code: document.code }, `a failed ring rolls back: ${document.error}`).toEqual({ state: "rolled_back", code: "ROLLED_BACK" });
    expect((await state()).assignments, "back to v1 on both, restored by force").toEqual(atV1.assignments);
    // With --force the ring's hosts move; none sends a receipt here, so failures are allowed for the test.
    const rolled = await aegis(["apply", "-f", next, "--rollout", "100%", "--ring-timeout", "500ms", "--max-failures", "100%", "--force"], env);
    expect(rolled.code, `${rolled.stdout}${rolled.stderr}`).toBe(0);
    expect((await state()).assignments, "--force reaches a rollout's rings").toEqual(["other host:new-kernel-1", "v1 host:new-kernel-1", "v2 host:old-kernel-1"]);
    await admin.changeAssignments({ remove: (await admin.desiredState()).assignments });
  });
});

describe("one rollout at a time", () => {
  it("while a rollout's record says running, apply, apply --rollout and promote --rollout are refused naming it, editing nothing; rollout abandon lets them run", async () => {
    await admin.changeAssignments({ remove: (await admin.desiredState()).assignments });
    const now = new Date().toISOString();
    // What a rollout whose process was killed leaves: its record running.
    const stuck: RolloutJson = { id: "r-stuck-1", state: "running", changes: [], rings: [{ spec: "100%", hosts: 1, state: "waiting", in_force: 0, failed: 0, failures: [] }], max_failures: "0", ring_timeout_ms: 60_000, started_at: now, updated_at: now };
    await admin.putRollout(stuck);
    const dir = mkdtempSync(join(work, "envs-running-"));
    writeFileSync(join(dir, "staging.yaml"), `environment: staging\npolicies:\n  - name: icmp\n    ref: ${repo}@${d.v2}\n    hosts: [running-1]\n`);
    const prodText = `environment: prod\npolicies:\n  - name: icmp\n    ref: ${repo}@${d.v1}\n    hosts: [running-1]\n`;
    writeFileSync(join(dir, "prod.yaml"), prodText);
    const before = await state();
    for (const args of [
      ["apply", "-f", join(dir, "prod.yaml")],
      ["apply", "-f", join(dir, "prod.yaml"), "--rollout", "100%"],
      ["promote", d.v2!, "--from", "staging", "--to", "prod", "-f", dir, "--rollout", "100%"],
      ["promote", d.v2!, "--from", "staging", "--to", "prod", "-f", dir, "--apply"],
    ]) {
      const line = expectOneErrorLine(await aegis(args, env));
      expect(line, args.join(" ")).toMatch(/rollout r-stuck-1 is running \(started .*\): .* would undo its host assignments.*aegis rollout abandon r-stuck-1/);
      expect(await state(), `the desired state after ${args.join(" ")}`).toEqual(before);
      expect(readFileSync(join(dir, "prod.yaml"), "utf8"), `the prod file after ${args.join(" ")}`).toBe(prodText);
    }
    expect(expectOneErrorLine(await aegis(["rollout", "abandon", "r-stuck-1"], env)), "saved just now: its process may run").toMatch(/rollout r-stuck-1 saved its record \d+ s ago, within twice its ring timeout and a minute: its process may be running .*--force/);
    expect((await admin.rollout("r-stuck-1")).state, "the record after a refused abandon").toBe("running");
    const abandoned = await aegis(["rollout", "abandon", "r-stuck-1", "--force", "--json"], env);
    expect(abandoned.code, abandoned.stderr).toBe(0);
    expect((await admin.rollout("r-stuck-1")).state, "the record after rollout abandon").toBe("failed");
    expect(expectOneErrorLine(await aegis(["rollout", "abandon", "r-stuck-1"], env)), "abandoned twice").toContain("rollout r-stuck-1 is failed");
    // One quiet for longer than twice its ring timeout and a minute: its process is gone, no --force needed.
    const long = new Date(Date.now() - 240_000).toISOString();
    await admin.putRollout({ ...stuck, id: "r-stuck-2", started_at: long, updated_at: long });
    const quiet = await aegis(["rollout", "abandon", "r-stuck-2"], env);
    expect([quiet.code, (await admin.rollout("r-stuck-2")).state], `a record quiet for 4 minutes (ring timeout 1 minute)\n${quiet.stderr}`).toEqual([0, "failed"]);
    await apply("-f", join(dir, "prod.yaml"));
    expect((await state()).assignments, "the apply after rollout abandon").toEqual(["v1 host:running-1"]);
  });
});
