// The planner and the ring arithmetic of fleet/ (pure): every case a table
// row; and a rollout (its rollback, an operator's stop, one rollout at a
// time) against an in-memory assigner that loses answers.
import { describe, expect, it } from "vitest";
import { AssignerError, type AssignerClient } from "../../assigner/api/index.js";
import { allowedFailures, formatPlan, parseRings, planFleet, runRollout, type PlanEntry } from "../../fleet/index.js";
import { changeSteps } from "../../fleet/rollout.js";

const A1 = `sha256:${"a".repeat(64)}`;
const A2 = `sha256:${"b".repeat(64)}`;
const B1 = `sha256:${"c".repeat(64)}`;
const names = new Map([
  [A1, "icmp"],
  [A2, "icmp"],
  [B1, "dns"],
]);
const host = (artifactId: string, h: string): PlanEntry => ({ artifactId, target: { host: h }, ...(names.get(artifactId) ? { name: names.get(artifactId)! } : {}) });
const sel = (artifactId: string, s: string): PlanEntry => ({ artifactId, target: { selector: s }, ...(names.get(artifactId) ? { name: names.get(artifactId)! } : {}) });
const wire = (e: PlanEntry) => ("host" in e.target ? { artifact_id: e.artifactId, host_id: e.target.host } : { artifact_id: e.artifactId, selector: e.target.selector });
const keys = (entries: PlanEntry[]) => entries.map((e) => `${e.artifactId.slice(7, 8)} ${"host" in e.target ? e.target.host : e.target.selector}`).sort();

describe("planFleet", () => {
  it.each([
    ["empty to one host and one selector", [], [host(A1, "h1"), sel(A1, "env=prod")], false, { add: ["a env=prod", "a h1"], remove: [], unchanged: [], kept: [] }],
    ["the same again: nothing", [host(A1, "h1")], [host(A1, "h1")], false, { add: [], remove: [], unchanged: ["a h1"], kept: [] }],
    ["dropped without prune: kept", [host(A1, "h1"), host(B1, "h2")], [host(A1, "h1")], false, { add: [], remove: [], unchanged: ["a h1"], kept: ["c h2"] }],
    ["dropped with prune: removed", [host(A1, "h1"), host(B1, "h2")], [host(A1, "h1")], true, { add: [], remove: ["c h2"], unchanged: ["a h1"], kept: [] }],
    ["a new digest of a policy replaces the old on the same target", [sel(A1, "env=prod"), sel(A1, "env=dev")], [sel(A2, "env=prod"), sel(A1, "env=dev")], false, { add: ["b env=prod"], remove: ["a env=prod"], unchanged: ["a env=dev"], kept: [] }],
    ["another policy on the target is not replaced", [host(B1, "h1")], [host(A1, "h1")], false, { add: ["a h1"], remove: [], unchanged: [], kept: ["c h1"] }],
    ["the new digest already there (an apply cut between its adds and its removes): the old still goes", [host(A1, "h1"), host(A2, "h1")], [host(A2, "h1")], false, { add: [], remove: ["a h1"], unchanged: ["b h1"], kept: [] }],
  ])("%s", (_what, current, desired, prune, expected) => {
    const plan = planFleet(desired, { version: 7, assignments: current.map(wire) }, names, { prune });
    expect({ add: keys(plan.add), remove: keys(plan.remove), unchanged: keys(plan.unchanged), kept: keys(plan.kept) }).toEqual(expected);
    expect(plan.version).toBe(7);
  });

  it("prints the removal of a replaced digest whose successor is assigned already", () => {
    const plan = planFleet([host(A2, "h1")], { version: 7, assignments: [host(A1, "h1"), host(A2, "h1")].map(wire) }, names);
    expect(formatPlan(plan)).toBe(["plan on desired-state version 7: 0 to add, 1 to remove, 1 unchanged", `  - ${A1.slice(0, 19)} icmp → host h1  (replaced by ${A2.slice(0, 19)}, assigned already)`].join("\n"));
  });

  it("prints replacements, prunes and what is kept", () => {
    const plan = planFleet([sel(A2, "env=prod")], { version: 3, assignments: [sel(A1, "env=prod"), host(B1, "h9")].map(wire) }, names, { prune: true });
    expect(formatPlan(plan)).toBe(
      [
        "plan on desired-state version 3: 1 to add, 2 to remove, 0 unchanged",
        `  ~ ${A1.slice(0, 19)} ⇒ ${A2.slice(0, 19)} icmp → selector env=prod  (replace)`,
        `  - ${B1.slice(0, 19)} dns → host h9  (prune)`,
      ].join("\n"),
    );
  });
});

describe("parseRings / allowedFailures", () => {
  it.each([
    ["1,10%,100%", 50, [1, 5, 50]],
    ["1,10%,100%", 3, [1, 1, 3]],
    ["2,100%", 1, [1, 1]],
    ["100%", 7, [7]],
    // A share short of an earlier count adds no hosts: whatever the fleet's size, such a spec is never refused once the rollout has begun.
    ["10,10%,100%", 50, [10, 10, 50]],
    ["10,10%,100%", 500, [10, 50, 500]],
  ])("%s over %d hosts is %j", (spec, total, expected) => {
    expect(parseRings(spec, total), `${spec} over ${total}`).toEqual(expected);
  });

  // Over one host, as apply and promote check a spec before anything is read or edited: what is wrong is wrong at any fleet size.
  it.each([
    ["1,10%", 50, "the last ring must reach every host"],
    ["1,10%", 1, "the last ring must reach every host"],
    ["5", 1, "the last ring must reach every host"],
    ["10%,1,100%", 50, "rings grow"],
    ["10%,1,100%", 1, "rings grow"],
    ["5,2,100%", 1, "rings grow"],
    ["50%,10%,100%", 1, "rings grow"],
    ["0,100%", 5, "is not a host count"],
    ["150%", 5, "is not a host count"],
    ["1,,100%", 5, "1 to 16 comma-separated rings"],
  ])("refuses %s over %d hosts", (spec, total, why) => {
    expect(() => parseRings(spec, total), `${spec} over ${total}`).toThrow(why);
  });

  it("allows failures by count or share of a ring", () => {
    expect([allowedFailures("0", 10), allowedFailures("2", 10), allowedFailures("10%", 25), allowedFailures("100%", 3)]).toEqual([0, 2, 2, 3]);
    expect(() => allowedFailures("x", 3)).toThrow("--max-failures x");
  });
});

describe("changeSteps", () => {
  const at = (artifact_id: string, host_id: string) => ({ artifact_id, host_id });
  const to = (artifact_id: string, selector: string) => ({ artifact_id, selector });

  it("one request when the change fits; nothing, none", () => {
    expect(changeSteps([at(A2, "h1")], [at(A1, "h1")], 2), "fits").toEqual([{ add: [at(A2, "h1")], remove: [at(A1, "h1")] }]);
    expect(changeSteps([], [], 2), "nothing").toEqual([]);
  });

  it("past the limit, each target's adds and removes in one request, packed up to the limit", () => {
    const add = ["h1", "h2", "h3"].map((h) => at(A2, h));
    const remove = ["h1", "h2", "h3"].map((h) => at(A1, h));
    expect(changeSteps(add, remove, 4), "each host swapped in one step").toEqual([
      { add: [at(A2, "h1"), at(A2, "h2")], remove: [at(A1, "h1"), at(A1, "h2")] },
      { add: [at(A2, "h3")], remove: [at(A1, "h3")] },
    ]);
  });

  it("targets that only gain first, then those that gain and lose, then those that only lose", () => {
    const add = [at(A2, "h1"), to(A2, "tier=web"), at(A2, "h2")];
    const remove = [at(A1, "h3"), to(A1, "tier=web"), at(A1, "h1")];
    expect(changeSteps(add, remove, 2)).toEqual([
      { add: [at(A2, "h2")], remove: [] },
      { add: [at(A2, "h1")], remove: [at(A1, "h1")] },
      { add: [to(A2, "tier=web")], remove: [to(A1, "tier=web")] },
      { add: [], remove: [at(A1, "h3")] },
    ]);
  });

  it("a target of more changes than one request takes is split, its adds first", () => {
    const [A3, A4] = ["c", "d"].map((c) => `sha256:${c.repeat(64)}`) as [string, string];
    const add = [A1, A2, A3].map((a) => at(a, "h1"));
    expect(changeSteps(add, [at(A4, "h1")], 2)).toEqual([
      { add: [at(A1, "h1"), at(A2, "h1")], remove: [] },
      { add: [at(A3, "h1")], remove: [] },
      { add: [], remove: [at(A4, "h1")] },
    ]);
  });
});

describe("runRollout against an assigner that loses its answers", () => {
  interface Faults {
    /** Which change (1-based) is committed and then answered with `code` (a reset connection, a proxy's 504). */
    failOn?: number;
    code?: "UNAVAILABLE" | "CONFLICT";
    /** After that change, every call fails UNAVAILABLE for this long: an outage. */
    downMs?: number;
    /** Receipts can no longer be read once the rollout rolls back (a proxy answering 403). */
    statusRefusedAfterRollback?: boolean;
    /** How far the agents' clocks are from this machine's (ms); default a minute ahead. */
    agentClockMs?: number;
    /** After each change, the agents take this long to report (ms); default 0. */
    reportDelayMs?: number;
    /** From the second change on (ring 1's move), the agents' clocks are this much further behind (ms): an NTP step, a VM resumed. */
    clockStepBackMs?: number;
    /** The first this many status reads fail UNAVAILABLE (a proxy's blip). */
    statusFailures?: number;
    /** From the second change on, the reports shown are older ones, their seq this much lower (a store that lost its last writes). */
    seqBack?: number;
    /** Reports without their seq, as an assigner older than the field gives them. */
    noSeq?: boolean;
    /** The agents send nothing new: every read shows the same report, the one made at the first read. */
    frozen?: boolean;
    /** Hosts' last_seen (null: never polled); every other host was seen just now. */
    lastSeen?: Record<string, string | null>;
    /** The assigner's clock, this much behind this machine's (ms): last_seen times are on it, and GET /agents says it (answeredAt). */
    assignerBehindMs?: number;
    /** Hosts' reported kernel capabilities (wire form); A2's program is aegis_net. */
    kernels?: Record<string, { kernel_version: string; btf: boolean }>;
    /** Sees each call once it is made, before it is answered: the nth change, each status read, each record saved, the nth listing of the records. */
    onCall?: (call: { change: number } | { status: string } | { saved: { id: string; state: string; rings: { state: string }[] } } | { listing: number }) => void;
  }
  /**
   * An in-memory assigner for `hosts` (labelled tier=web). Like the real one,
   * it refuses a request of more than 1000 changes.
   */
  function lossyAssigner(faults: Faults, hosts = ["h1", "h2"]) {
    let version = 1;
    let calls = 0;
    let downUntil = 0;
    let rolledBack = false;
    let changedAt = 0;
    const sizes: number[] = [];
    /** After each change, how many digests the hosts served fewest and most (every host is labelled tier=web, so only that selector matches). */
    const served: { fewest: number; most: number }[] = [];
    /** Every assignment ever added, in order. */
    const added: string[] = [];
    /** The rollout records, in the order first stored (as the assigner's stores keep them). */
    const records = new Map<string, { id: string; state: string }>();
    let listings = 0;
    let statusReads = 0;
    /** The agents' sequence numbers: each report a newer one. */
    let seq = 1_000_000;
    let firstRead: number | undefined;
    const key = (a: { artifact_id: string; host_id?: string; selector?: string }) => `${a.artifact_id} ${a.host_id ?? `s:${a.selector}`}`;
    const state = new Map([[key(wire(sel(A1, "tier=web"))), wire(sel(A1, "tier=web"))]]);
    const up = () => {
      if (Date.now() < downUntil) throw new AssignerError("UNAVAILABLE", "cannot reach the assigner (test outage)");
    };
    const client = {
      hosts: async () => {
        const assignerNow = Date.now() - (faults.assignerBehindMs ?? 0);
        return {
          agents: hosts.map((h) => ({ host_id: h, labels: { tier: "web" }, last_seen: faults.lastSeen && h in faults.lastSeen ? faults.lastSeen[h] : new Date(assignerNow).toISOString(), ...(faults.kernels?.[h] ? { capabilities: faults.kernels[h] } : {}) })),
          ...(faults.assignerBehindMs !== undefined ? { answeredAt: assignerNow } : {}),
        };
      },
      artifacts: async () => ({ artifacts: [{ id: A2, metadata: { program: "aegis_net" } }], total: 1 }),
      desiredState: async () => (up(), { version, assignments: [...state.values()], total: state.size }),
      changeAssignments: async (change: { add?: ReturnType<typeof wire>[]; remove?: ReturnType<typeof wire>[] }, options: { ifMatch?: number }) => {
        up();
        if (options.ifMatch !== version) throw new AssignerError("PRECONDITION_FAILED", "the state moved");
        const size = (change.add?.length ?? 0) + (change.remove?.length ?? 0);
        if (size > 1000) throw new AssignerError("BAD_REQUEST", `${size} changes in one request: at most 1000`);
        sizes.push(size);
        for (const r of change.remove ?? []) state.delete(key(r));
        for (const a of change.add ?? []) {
          state.set(key(a), a);
          added.push(key(a));
        }
        const counts = hosts.map((h) => new Set([...state.values()].filter((a) => ("host_id" in a ? a.host_id === h : a.selector === "tier=web")).map((a) => a.artifact_id)).size);
        served.push({ fewest: Math.min(...counts), most: Math.max(...counts) });
        version++;
        changedAt = Date.now();
        faults.onCall?.({ change: calls + 1 });
        if (++calls === faults.failOn) {
          downUntil = Date.now() + (faults.downMs ?? 0);
          throw new AssignerError(faults.code ?? "UNAVAILABLE", "the answer was lost (after the assigner committed)");
        }
        return { version, applied: true };
      },
      // Every host reports the digest it is sent in force, so the rollout waits on nothing.
      status: async (id: string) => {
        up();
        if (rolledBack && faults.statusRefusedAfterRollback) throw new AssignerError("FORBIDDEN", "assigner answered 403: not here");
        faults.onCall?.({ status: id });
        if (statusReads++ < (faults.statusFailures ?? 0)) throw new AssignerError("UNAVAILABLE", "cannot reach the assigner (a test blip)");
        if (Date.now() < changedAt + (faults.reportDelayMs ?? 0)) return { artifact_id: id, hosts: [], total: 0 };
        // A report is sent now, by the agent's clock: each read sees a newer one.
        const clock = (faults.agentClockMs ?? 60_000) - (calls >= 2 ? (faults.clockStepBackMs ?? 0) : 0);
        if (faults.frozen) firstRead ??= Date.now();
        const number = ++seq - (calls >= 2 ? (faults.seqBack ?? 0) : 0);
        return { artifact_id: id, hosts: hosts.map((h) => ({ host_id: h, artifact_id: id, event: "attached", time: new Date((firstRead ?? Date.now()) + clock).toISOString(), ...(faults.noSeq ? {} : { seq: faults.frozen ? 1 : number }) })), total: hosts.length };
      },
      putRollout: async (r: { id: string; state: string; rings: { state: string }[] }) => {
        up();
        rolledBack ||= r.state === "rolling_back";
        faults.onCall?.({ saved: r });
        records.set(r.id, structuredClone(r));
        return r;
      },
      rollouts: async (options: { active?: boolean } = {}) => {
        up();
        faults.onCall?.({ listing: ++listings });
        const rollouts = [...records.values()].reverse().filter((r) => !options.active || ["running", "rolling_back"].includes(r.state));
        return { rollouts, total: rollouts.length };
      },
    };
    return { client: client as unknown as AssignerClient, state, sizes, served, added, records };
  }

  it("stages registered hosts only: a host no agent registered gets its assignment in the final step, and the rollout completes", async () => {
    const { client, state } = lossyAssigner({});
    const plan = planFleet([sel(A2, "tier=web"), host(A2, "ghost")], await client.desiredState(), names);
    const { rollout } = await runRollout(client, plan, { rings: "1,100%", ringTimeoutMs: 2_000, pollMs: 10 });
    expect(rollout.state, "an unregistered host does not fail a ring").toBe("completed");
    expect([...state.keys()].sort(), "the final state").toEqual([`${A2} ghost`, `${A2} s:tier=web`]);
  });

  it("stages only hosts seen lately: one never seen and one seen an hour ago are held on the old digest, get the new one in the final step, and are named", async () => {
    const { client, state, added } = lossyAssigner({ lastSeen: { h2: null, h3: new Date(Date.now() - 3_600_000).toISOString() } }, ["h1", "h2", "h3"]);
    const plan = planFleet([sel(A2, "tier=web")], await client.desiredState(), names);
    const lines: string[] = [];
    const { rollout, unstaged } = await runRollout(client, plan, { rings: "1,100%", ringTimeoutMs: 2_000, pollMs: 10, log: (line) => lines.push(line) });
    expect({ state: rollout.state, staged: rollout.rings.map((r) => r.hosts), unstaged }, "only h1 staged").toEqual({ state: "completed", staged: [1, 0], unstaged: ["h2", "h3"] });
    expect(lines, "said").toContain("not staged: 2 registered hosts not seen within 10 min (h2, h3); they get the new digests in the final step");
    expect(added.filter((a) => a.startsWith(A2)), "the new digest went to h1 alone by host, then to all by the selector").toEqual([`${A2} h1`, `${A2} s:tier=web`]);
    expect(added, "the unseen hosts were held on the old digest meanwhile").toEqual(expect.arrayContaining([`${A1} h2`, `${A1} h3`]));
    expect([...state.keys()], "the final state").toEqual([`${A2} s:tier=web`]);
    const none = lossyAssigner({ lastSeen: { h1: null, h2: null } });
    const nothing = planFleet([sel(A2, "tier=web")], await none.client.desiredState(), names);
    await expect(runRollout(none.client, nothing, { rings: "100%", ringTimeoutMs: 2_000, pollMs: 10, seenWithinMs: 60_000 }), "every host unseen").rejects.toThrow(
      "nothing to roll out: the plan adds nothing to a registered host seen lately, only to 2 registered hosts not seen within 1 min (h1, h2) (apply it without --rollout)",
    );
    expect(none.added, "nothing moved").toEqual([]);
    // The assigner's clock an hour behind this machine's: last_seen is measured on it, so the hosts that just polled are staged.
    const behind = lossyAssigner({ assignerBehindMs: 3_600_000 });
    const skewed = await runRollout(behind.client, planFleet([sel(A2, "tier=web")], await behind.client.desiredState(), names), { rings: "1,100%", ringTimeoutMs: 2_000, pollMs: 10 });
    expect({ staged: skewed.rollout.rings.map((r) => r.hosts), unstaged: skewed.unstaged }, "clocks an hour apart").toEqual({ staged: [1, 1], unstaged: [] });
  });

  it("refuses before anything moves when a host it would give a new digest cannot run it: a staged one (by selector) or one given it only at the final step", async () => {
    const old = { kernel_version: "5.10.0", btf: false };
    for (const [label, faults, entries] of [
      ["a ring's host", { kernels: { h2: old } }, [sel(A2, "tier=web")]],
      ["a host not staged, named by host", { kernels: { h3: old }, lastSeen: { h3: null } }, [sel(A2, "tier=web"), host(A2, "h3")]],
    ] as const) {
      const { client, added, records } = lossyAssigner(faults, ["h1", "h2", "h3"]);
      const plan = planFleet([...entries], await client.desiredState(), names);
      await expect(runRollout(client, plan, { rings: "1,100%", ringTimeoutMs: 2_000, pollMs: 10 }), label).rejects.toMatchObject({ code: "CONFLICT", message: expect.stringMatching(/^host "h[23]" cannot run sha256:.*Linux >= 5\.17.*\(--force overrides\)$/) });
      expect([added, records.size], `${label}: nothing moved, no record`).toEqual([[], 0]);
      const forced = await runRollout(client, plan, { rings: "1,100%", ringTimeoutMs: 2_000, pollMs: 10, force: true });
      expect(forced.rollout.state, `${label}: forced`).toBe("completed");
    }
    // A host that has the new digest by host already (forced there before) gets nothing new: not refused.
    const { client, state } = lossyAssigner({ kernels: { h2: old } });
    state.set(`${A2} h2`, wire(host(A2, "h2")));
    const plan = planFleet([sel(A2, "tier=web")], await client.desiredState(), names);
    expect((await runRollout(client, plan, { rings: "1,100%", ringTimeoutMs: 2_000, pollMs: 10 })).rollout.state, "the digest h2 has by host").toBe("completed");
  });

  const many = Array.from({ length: 1500 }, (_, i) => `h${String(i).padStart(4, "0")}`);

  it("rolls out to 1,500 hosts: steps over 1000 changes go in several requests, each host swapped in one, and the rollout completes", async () => {
    const { client, state, sizes, served } = lossyAssigner({}, many);
    const plan = planFleet([sel(A2, "tier=web")], await client.desiredState(), names);
    const { rollout } = await runRollout(client, plan, { rings: "1,10%,100%", ringTimeoutMs: 2_000, pollMs: 10 });
    expect(rollout.state, "completed").toBe("completed");
    expect([...state.keys()], "the final state: the new selector assignment alone").toEqual([`${A2} s:tier=web`]);
    expect(Math.max(...sizes), "the largest request").toBeLessThanOrEqual(1000);
    expect(sizes.length, "requests: the hold (2 of 1,501), ring 1, 10% and 100% (2 of 1,500), the final step (2 of 3,001 and 1 more)").toBeGreaterThan(5);
    expect(served, "after each request, every host served exactly one digest: never neither, never the old and the new together").toEqual(served.map(() => ({ fewest: 1, most: 1 })));
  });

  it.each([2, 3, 4])("a lost answer to change %i is sent again (a 412, then the same change on the new version): the rollout completes", async (failOn) => {
    const { client, state } = lossyAssigner({ failOn });
    const plan = planFleet([sel(A2, "tier=web")], await client.desiredState(), names);
    const { rollout } = await runRollout(client, plan, { rings: "1,100%", ringTimeoutMs: 2_000, pollMs: 10 });
    expect(rollout.state, `change ${failOn} lost`).toBe("completed");
    expect([...state.keys()], "the final state").toEqual([`${A2} s:tier=web`]);
  });

  it("an outage of a moment (every call failing for 200 ms) is ridden out: the rollout completes", async () => {
    const { client, state } = lossyAssigner({ failOn: 2, downMs: 200 });
    const plan = planFleet([sel(A2, "tier=web")], await client.desiredState(), names);
    const { rollout } = await runRollout(client, plan, { rings: "1,100%", ringTimeoutMs: 2_000, pollMs: 10 });
    expect(rollout.state).toBe("completed");
    expect([...state.keys()], "the final state").toEqual([`${A2} s:tier=web`]);
  });

  it.each([3, 6])("1,500 hosts, request %i refused after it was committed: the rollback, in several requests too, puts back exactly the state before", async (failOn) => {
    const { client, state, sizes } = lossyAssigner({ failOn, code: "CONFLICT" }, many);
    const before = [...state.keys()].sort();
    const plan = planFleet([sel(A2, "tier=web")], await client.desiredState(), names);
    await expect(runRollout(client, plan, { rings: "1,10%,100%", ringTimeoutMs: 2_000, pollMs: 10 }), `request ${failOn}`).rejects.toMatchObject({ code: "ROLLED_BACK", rollout: { state: "rolled_back" } });
    expect([...state.keys()].sort(), `the desired state after a rollback from request ${failOn}`).toEqual(before);
    expect(Math.max(...sizes), "the largest request").toBeLessThanOrEqual(1000);
  });

  it("an outage longer than the ring timeout during a step: the rollout stops, and the rollback rides out the rest of it and puts back exactly the state before", async () => {
    const { client, state } = lossyAssigner({ failOn: 3, downMs: 450 });
    const before = [...state.keys()].sort();
    const plan = planFleet([sel(A2, "tier=web")], await client.desiredState(), names);
    await expect(runRollout(client, plan, { rings: "1,100%", ringTimeoutMs: 300, pollMs: 10 })).rejects.toMatchObject({ code: "ROLLED_BACK", rollout: { state: "rolled_back" } });
    expect([...state.keys()].sort(), "the desired state after the rollback").toEqual(before);
  });

  it("an outage that outlasts the rollback too: NOT_ROLLED_BACK, with the rollout's record saying so", async () => {
    const { client } = lossyAssigner({ failOn: 3, downMs: 60_000 });
    const plan = planFleet([sel(A2, "tier=web")], await client.desiredState(), names);
    const err = (await runRollout(client, plan, { rings: "1,100%", ringTimeoutMs: 200, pollMs: 10 }).catch((e: unknown) => e)) as { code: string; rollout: { state: string; reason: string } };
    expect({ code: err.code, state: err.rollout.state }).toEqual({ code: "NOT_ROLLED_BACK", state: "failed" });
    expect(err.rollout.reason).toMatch(/rolling back failed: cannot reach the assigner \(test outage\)/);
  });

  it("receipts that cannot be read after the rollback: still ROLLED_BACK (the state is back), saying the confirmation is missing", async () => {
    const { client, state } = lossyAssigner({ failOn: 3, code: "CONFLICT", statusRefusedAfterRollback: true });
    const before = [...state.keys()].sort();
    const plan = planFleet([sel(A2, "tier=web")], await client.desiredState(), names);
    const err = (await runRollout(client, plan, { rings: "1,100%", ringTimeoutMs: 2_000, pollMs: 10 }).catch((e: unknown) => e)) as { code: string; rollout: { state: string; reason: string } };
    expect({ code: err.code, state: err.rollout.state }).toEqual({ code: "ROLLED_BACK", state: "rolled_back" });
    expect(err.rollout.reason).toMatch(/receipts could not be read: assigner answered 403/);
    expect([...state.keys()].sort(), "the desired state after the rollback").toEqual(before);
  });

  it("a ring's time starts once its hosts are moved: a move that rode out an outage does not eat it", async () => {
    // Change 2 (ring 1's move) is committed, then the assigner is away for 800 ms; agents report 300 ms after a change.
    const { client, state } = lossyAssigner({ failOn: 2, downMs: 800, reportDelayMs: 300 });
    const plan = planFleet([sel(A2, "tier=web")], await client.desiredState(), names);
    const { rollout } = await runRollout(client, plan, { rings: "1,100%", ringTimeoutMs: 1_000, pollMs: 10 });
    expect(rollout.state, "completed, ring 1's receipts coming after the outage").toBe("completed");
    expect([...state.keys()], "the final state").toEqual([`${A2} s:tier=web`]);
  });

  it("agents whose clocks are 10 minutes behind this machine's: their receipts still count (news is judged against their own earlier reports)", async () => {
    const { client, state } = lossyAssigner({ agentClockMs: -600_000 });
    const plan = planFleet([sel(A2, "tier=web")], await client.desiredState(), names);
    const { rollout } = await runRollout(client, plan, { rings: "1,100%", ringTimeoutMs: 500, pollMs: 10 });
    expect(rollout.state).toBe("completed");
    expect([...state.keys()], "the final state").toEqual([`${A2} s:tier=web`]);
  });

  it.each<[string, Faults]>([
    // Two minutes: within the assigner's telemetry skew (5 minutes), which refuses messages further off.
    ["an agent whose clock steps back 2 minutes during the rollout (an NTP step): its receipts after the move still count", { clockStepBackMs: 120_000 }],
    ["agents 10 minutes behind, and the reports before ring 1's move read only after a blip: their receipts count", { agentClockMs: -600_000, statusFailures: 1 }],
    ["an assigner that gives no seq (older than the field), an agent's clock stepping back 2 minutes: any other report counts", { clockStepBackMs: 120_000, noSeq: true }],
  ])("%s", async (_case, faults) => {
    const { client, state } = lossyAssigner(faults);
    const plan = planFleet([sel(A2, "tier=web")], await client.desiredState(), names);
    const { rollout } = await runRollout(client, plan, { rings: "1,100%", ringTimeoutMs: 500, pollMs: 10 });
    expect(rollout.state, JSON.stringify(rollout.rings)).toBe("completed");
    expect([...state.keys()], "the final state").toEqual([`${A2} s:tier=web`]);
  });

  it.each<[string, Faults]>([
    ["reports older than those before the move (a store that lost its last writes shows them again)", { seqBack: 1000 }],
    ["the same report as before the move, from an assigner that gives no seq", { frozen: true, noSeq: true }],
    ["the same report as before the move, with its seq", { frozen: true }],
  ])("%s: no news; the ring times out and the rollout rolls back", async (_case, faults) => {
    const { client, state } = lossyAssigner(faults);
    const before = [...state.keys()].sort();
    const plan = planFleet([sel(A2, "tier=web")], await client.desiredState(), names);
    await expect(runRollout(client, plan, { rings: "1,100%", ringTimeoutMs: 300, pollMs: 10 }), "ring 1 with no news").rejects.toMatchObject({ code: "ROLLED_BACK", rollout: { state: "rolled_back", rings: [{ state: "failed" }, {}] } });
    expect([...state.keys()].sort(), "the desired state after the rollback").toEqual(before);
  });

  it("an operator's stop while the record is first saved: the rollout does not start (NOT_STARTED, its record failed), nothing moved", async () => {
    const controller = new AbortController();
    const { client, state, added, records } = lossyAssigner({ onCall: (call) => void ("saved" in call && call.saved.state === "running" && controller.abort(new Error("stopped by the operator"))) });
    const before = [...state.keys()].sort();
    const plan = planFleet([sel(A2, "tier=web")], await client.desiredState(), names);
    await expect(runRollout(client, plan, { rings: "1,100%", ringTimeoutMs: 2_000, pollMs: 10, signal: controller.signal }), "stopped as its record was saved").rejects.toMatchObject({ code: "NOT_STARTED", rollout: { state: "failed" } });
    expect([added, [...state.keys()].sort(), [...records.values()].map((r) => r.state)], "nothing moved; the record").toEqual([[], before, ["failed"]]);
  });

  it("an operator's stop that comes after the last ring passed still stops it: nothing of the final step is made, and it rolls back", async () => {
    const { client, state } = lossyAssigner({});
    const before = [...state.keys()].sort();
    const plan = planFleet([sel(A2, "tier=web")], await client.desiredState(), names);
    const controller = new AbortController();
    const log = (line: string) => void (line.includes("ring 2 (100%)") && line.includes("in force") && controller.abort(new Error("stopped by the operator")));
    await expect(runRollout(client, plan, { rings: "1,100%", ringTimeoutMs: 2_000, pollMs: 10, signal: controller.signal, log })).rejects.toMatchObject({ code: "ROLLED_BACK", rollout: { state: "rolled_back" } });
    expect([...state.keys()].sort(), "the desired state after the rollback").toEqual(before);
  });

  // Rings 1,100% over h1, h2: ring 1 is h1, ring 2 is h2. A stop that comes between two of the rollout's calls is seen before the next move.
  it.each<[string, string[], (stop: () => void) => Faults["onCall"]]>([
    ["during the hold step (selector assignments becoming host ones)", ["h1", "h2"], (stop) => (call) => void ("change" in call && call.change === 1 && stop())],
    ["while ring 1's passed record is saved", ["h2"], (stop) => (call) => void ("saved" in call && call.saved.rings[0]?.state === "passed" && stop())],
    [
      "while the reports before ring 2's move are read",
      ["h2"],
      (stop) => {
        let ring1Passed = false;
        return (call) => {
          if ("saved" in call) ring1Passed ||= call.saved.rings[0]?.state === "passed";
          if ("status" in call && ring1Passed) stop();
        };
      },
    ],
  ])("an operator's stop %s moves no further ring: %j never get the new digest, and it rolls back", async (when, untouched, onCall) => {
    const controller = new AbortController();
    const { client, state, added } = lossyAssigner({ onCall: onCall(() => controller.abort(new Error("stopped by the operator"))) });
    const before = [...state.keys()].sort();
    const plan = planFleet([sel(A2, "tier=web")], await client.desiredState(), names);
    await expect(runRollout(client, plan, { rings: "1,100%", ringTimeoutMs: 2_000, pollMs: 10, signal: controller.signal }), `stopped ${when}`).rejects.toMatchObject({ code: "ROLLED_BACK", rollout: { state: "rolled_back" } });
    expect(added.filter((k) => k.startsWith(A2)), `the new digest's assignments ever made, stopped ${when}`).toEqual(["h1", "h2"].filter((h) => !untouched.includes(h)).map((h) => `${A2} ${h}`));
    expect([...state.keys()].sort(), `the desired state after a stop ${when}`).toEqual(before);
  });

  // Another rollout's record: there when this one begins, or (both begun at once, neither seeing the other at first) stored by the assigner just before or just after this one's.
  it("a blip as the record is first stored (the answer lost after the assigner stored it) is ridden out; an assigner that stops answering before anything moved leaves the record failed, not running", async () => {
    const { client, state, records, added } = lossyAssigner({});
    const putRollout = client.putRollout.bind(client);
    let puts = 0;
    (client as { putRollout: typeof client.putRollout }).putRollout = async (r) => {
      const stored = await putRollout(r);
      if (++puts === 1) throw new AssignerError("UNAVAILABLE", "the answer was lost (after the assigner stored the record)");
      return stored;
    };
    const plan = planFleet([sel(A2, "tier=web")], await client.desiredState(), names);
    const { rollout } = await runRollout(client, plan, { rings: "1,100%", ringTimeoutMs: 2_000, pollMs: 10 });
    expect(rollout.state, "the first put's answer lost: the rollout goes on").toBe("completed");
    expect([...state.keys()], "the final state").toEqual([`${A2} s:tier=web`]);

    // An assigner that keeps failing the listing after the record was stored: the record ends failed, nothing moved.
    const down = lossyAssigner({ onCall: (call) => void ("listing" in call && call.listing >= 2 && (() => { throw new AssignerError("UNAVAILABLE", "the assigner is away (test)"); })()) });
    const before = [...down.state.keys()].sort();
    await expect(runRollout(down.client, planFleet([sel(A2, "tier=web")], await down.client.desiredState(), names), { rings: "1,100%", ringTimeoutMs: 2_000, pollMs: 10 }), "the listing never answers").rejects.toMatchObject({ code: "NOT_STARTED", cause: { code: "UNAVAILABLE" }, rollout: { state: "failed" } });
    expect([...down.records.values()].map((r) => r.state), "the record").toEqual(["failed"]);
    expect([down.added, [...down.state.keys()].sort()], "nothing moved").toEqual([[], before]);
    expect(added.length, "the first rollout's moves").toBeGreaterThan(0);
    expect(records.size, "the first rollout's record").toBe(1);

    // The first put stored, its answer lost, then the assigner away for every try of the first save, and for the
    // first ten of the record that ends it: more than a few polls' time (50 ms) holds; a ring's time (5 s) outlasts.
    const lossy = lossyAssigner({});
    const put = lossy.client.putRollout.bind(lossy.client);
    let lossyPuts = 0;
    let failedPuts = 0;
    (lossy.client as { putRollout: typeof client.putRollout }).putRollout = async (r) => {
      if (++lossyPuts === 1) await put(r);
      if (lossyPuts === 1 || r.state === "running" || ++failedPuts <= 10) throw new AssignerError("UNAVAILABLE", "cannot reach the assigner (test)");
      return put(r);
    };
    const unchanged = [...lossy.state.keys()].sort();
    await expect(runRollout(lossy.client, planFleet([sel(A2, "tier=web")], await lossy.client.desiredState(), names), { rings: "1,100%", ringTimeoutMs: 5_000, pollMs: 10 }), "the puts' answers lost").rejects.toMatchObject({ code: "NOT_STARTED" });
    expect([...lossy.records.values()].map((r) => r.state), "the record, once an answer came").toEqual(["failed"]);
    expect([lossy.added, [...lossy.state.keys()].sort()], "nothing moved").toEqual([[], unchanged]);
  });

  const other = { id: "r-other", state: "running", rings: [] };
  it.each([
    ["running when this one begins", "before", "refused"],
    ["stored just before this one's, both begun at once", "first", "refused"],
    ["stored just after this one's, both begun at once", "after", "goes on"],
  ])("another rollout %s (%s): this one %s, moving nothing when refused", async (when, where, outcome) => {
    const { client, state, added, records } = lossyAssigner({
      // The second listing is this one's look once its record is stored.
      onCall: (call) => {
        if (!("listing" in call) || call.listing !== 2 || where === "before") return;
        const mine = [...records];
        if (where === "first") records.clear();
        records.set(other.id, other);
        for (const [id, r] of mine) records.set(id, r);
      },
    });
    if (where === "before") records.set(other.id, other);
    const before = [...state.keys()].sort();
    const plan = planFleet([sel(A2, "tier=web")], await client.desiredState(), names);
    const running = runRollout(client, plan, { rings: "1,100%", ringTimeoutMs: 2_000, pollMs: 10 });
    if (outcome === "goes on") {
      expect((await running).rollout.state, `another rollout ${when}: this one goes on`).toBe("completed");
      return;
    }
    await expect(running, `another rollout ${when}`).rejects.toThrow(/rollout r-other is running \(started .*\): .* would undo its host assignments.*aegis rollout abandon r-other/);
    if (where !== "before") await expect(running, `another rollout ${when}: the code`).rejects.toMatchObject({ code: "NOT_STARTED" });
    expect(added, `assignments made, another rollout ${when}`).toEqual([]);
    expect([...state.keys()].sort(), `the desired state, another rollout ${when}`).toEqual(before);
    // Failed, not rolled back: nothing of it was moved (and a record left running would refuse every apply).
    expect([...records.values()].filter((r) => r.id !== other.id).map((r) => r.state), `this one's record, another rollout ${when}`).toEqual(where === "before" ? [] : ["failed"]);
  });
});
