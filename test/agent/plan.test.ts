// The planner's table tests (no root): from desired and actual to steps.
import { describe, expect, it } from "vitest";
import { basePref, compareVersions, newestByName, plan, PREF_MAX, PREF_MIN, prefFor, type InstalledProgram, type Program, type Step } from "../../agent/index.js";

const digest = (c: string) => `sha256:${c.repeat(64)}`;
const A1: Program = { id: digest("a"), name: "block-icmp", version: "1.0.0" };
const A2: Program = { id: digest("b"), name: "block-icmp", version: "2.0.0" };
const B1: Program = { id: digest("c"), name: "deny-egress", version: "1.0.0" };
const at = (p: Program, pref: number): InstalledProgram => ({ ...p, pref });
const A = basePref(A1.name);
const B = basePref(B1.name);

/** Steps as short strings, so a table row reads like the plan. */
function show(steps: Step[]): string[] {
  return steps.map((s) => {
    switch (s.kind) {
      case "keep":
        return `keep ${s.program.version}@${s.program.name} pref ${s.program.pref}`;
      case "add":
        return `add ${s.program.version}@${s.program.name} pref ${s.pref}`;
      case "replace":
        return `replace ${s.old.version}@${s.old.name} by ${s.program.version} pref ${s.pref}`;
      case "remove":
        return `remove ${s.program.version}@${s.program.name} pref ${s.program.pref}`;
    }
  });
}

const cases: { name: string; desired: Program[]; actual: InstalledProgram[]; hold?: string[]; distrusted?: string[]; steps: string[] }[] = [
  { name: "nothing to do", desired: [], actual: [], steps: [] },
  { name: "first assignment adds at the name's pref", desired: [A1], actual: [], steps: [`add 1.0.0@block-icmp pref ${A}`] },
  { name: "unchanged is kept", desired: [A1], actual: [at(A1, A)], steps: [`keep 1.0.0@block-icmp pref ${A}`] },
  { name: "a new version replaces the old at its pref", desired: [A2], actual: [at(A1, 777 + PREF_MIN)], steps: [`replace 1.0.0@block-icmp by 2.0.0 pref ${777 + PREF_MIN}`] },
  { name: "unassigned is removed", desired: [], actual: [at(A1, A)], steps: [`remove 1.0.0@block-icmp pref ${A}`] },
  {
    name: "two policies: add one, keep the other",
    desired: [A1, B1],
    actual: [at(A1, A)],
    steps: [`keep 1.0.0@block-icmp pref ${A}`, `add 1.0.0@deny-egress pref ${B}`],
  },
  {
    name: "replace, add and remove together: set up before taking down",
    desired: [A2],
    actual: [at(A1, A), at(B1, B)],
    steps: [`replace 1.0.0@block-icmp by 2.0.0 pref ${A}`, `remove 1.0.0@deny-egress pref ${B}`],
  },
  {
    name: "a refused new version holds the old one in force",
    desired: [],
    actual: [at(A1, A)],
    hold: ["block-icmp"],
    steps: [`keep 1.0.0@block-icmp pref ${A}`],
  },
  {
    name: "holding one name does not hold another",
    desired: [],
    actual: [at(A1, A), at(B1, B)],
    hold: ["block-icmp"],
    steps: [`keep 1.0.0@block-icmp pref ${A}`, `remove 1.0.0@deny-egress pref ${B}`],
  },
  {
    name: "a held name does not keep a version the trust no longer verifies",
    desired: [],
    actual: [at(A1, A), at(B1, B)],
    hold: ["block-icmp", "deny-egress"],
    distrusted: [A1.id],
    steps: [`keep 1.0.0@deny-egress pref ${B}`, `remove 1.0.0@block-icmp pref ${A}`],
  },
  {
    name: "both versions assigned (v2 before unassigning v1): the newest replaces the installed one at its pref",
    desired: [A1, A2],
    actual: [at(A1, A)],
    steps: [`replace 1.0.0@block-icmp by 2.0.0 pref ${A}`],
  },
  { name: "both versions new: only the newest is added", desired: [A2, A1], actual: [], steps: [`add 2.0.0@block-icmp pref ${A}`] },
  {
    name: "an older version assigned later does not displace the newer",
    desired: [A2, A1],
    actual: [at(A2, A)],
    steps: [`keep 2.0.0@block-icmp pref ${A}`],
  },
  {
    name: "a pref in use by another policy is skipped",
    desired: [B1],
    actual: [at(A1, B)],
    steps: [`add 1.0.0@deny-egress pref ${B === PREF_MAX ? PREF_MIN : B + 1}`, `remove 1.0.0@block-icmp pref ${B}`],
  },
  { name: "a digest listed twice is added once", desired: [A1, A1], actual: [], steps: [`add 1.0.0@block-icmp pref ${A}`] },
];

describe("plan", () => {
  for (const c of cases) {
    it(c.name, () => {
      expect(show(plan(c.desired, c.actual, { ...(c.hold ? { hold: c.hold } : {}), ...(c.distrusted ? { distrusted: c.distrusted } : {}) })), c.name).toEqual(c.steps);
    });
  }

  it("is deterministic whatever the input order", () => {
    const actual = [at(A1, A), at(B1, B)];
    expect(show(plan([B1, A2], [...actual].reverse())), "reversed input").toEqual(show(plan([A2, B1], actual)));
  });
});

describe("prefs", () => {
  it("derives a pref from the name, in range, the same every time", () => {
    for (const name of ["block-icmp", "deny-egress", "", "ü-policy"]) {
      const pref = basePref(name);
      expect(pref >= PREF_MIN && pref <= PREF_MAX, `${name}: ${pref}`).toBe(true);
      expect(basePref(name), name).toBe(pref);
    }
    expect(basePref("block-icmp"), "two names").not.toBe(basePref("deny-egress"));
  });

  it("probes past taken prefs and wraps at the top", () => {
    expect(prefFor("block-icmp", new Set([A]))).toBe(A === PREF_MAX ? PREF_MIN : A + 1);
    const top = new Set<number>();
    for (let p = A; p <= PREF_MAX; p++) top.add(p);
    expect(prefFor("block-icmp", top), "wrapped").toBe(PREF_MIN);
  });

  it("never adds at a pref a filter in force holds (another tool's, or one of ours whose pins were lost)", () => {
    const next = A === PREF_MAX ? PREF_MIN : A + 1;
    expect(show(plan([A1], [], { inUse: [A] })), "a foreign filter at the name's pref").toEqual([`add 1.0.0@block-icmp pref ${next}`]);
    expect(show(plan([A1], [])), "without one").toEqual([`add 1.0.0@block-icmp pref ${A}`]);
  });
});

describe("versions", () => {
  const ordered = ["0.9.0", "1.2.0-rc.1", "1.2.0-rc.2", "1.2.0", "1.9.0", "1.10.0", "2.0.0"];
  it("orders numerically, releases above their pre-releases", () => {
    expect([...ordered].reverse().sort(compareVersions), "sorted").toEqual(ordered);
  });

  it("chooses the newest per name, ties by digest", () => {
    const same = { ...A1, id: digest("f") };
    const { chosen, superseded } = newestByName([A1, same, A2, B1]);
    expect(chosen.map((p) => p.id).sort(), "chosen").toEqual([A2.id, B1.id].sort());
    expect(superseded.map((p) => p.id).sort(), "superseded").toEqual([A1.id, same.id].sort());
    expect(newestByName([A1, same]).chosen.map((p) => p.id), "tie").toEqual([same.id]);
  });
});
