// The agent's planner: from what is assigned (and verified) and what the
// kernel runs, the steps that take one to the other. Pure, so every case is a
// table test without root (test/agent/plan.test.ts); the executor acts on it.
//
// TC prefs: a new version of a policy (same policy name) takes its
// predecessor's pref, so `tc filter replace` swaps it with no instant
// without enforcement. A policy seen for the first time gets a pref derived
// from its name (FNV-1a), probed upwards past prefs in use: the same
// name gets the same pref on every host and after the agent's state is lost,
// yet two names that hash alike still never share a filter. The pref in use
// is read back from the kernel and the state file, so probing never moves
// an installed policy.
import { byCodeUnit } from "../util/index.js";

/** A program as the planner sees it: its digest and the verified policy's name and version. */
export interface Program {
  id: string;
  name: string;
  version: string;
}

/** A program the host runs, at its TC pref. */
export interface InstalledProgram extends Program {
  pref: number;
}

export type Step =
  | { kind: "keep"; program: InstalledProgram }
  | { kind: "add"; program: Program; pref: number }
  | { kind: "replace"; program: Program; old: InstalledProgram; pref: number }
  | { kind: "remove"; program: InstalledProgram };

export interface PlanOptions {
  /**
   * Names whose assigned version could not be fetched or verified: their
   * installed versions stay in force (keep) instead of being removed, so a
   * refused update never leaves the host unprotected.
   */
  hold?: readonly string[];
  /**
   * Installed digests whose signatures the trust in force no longer accepts
   * (agent/trust-check.ts): never kept, even for a held name. Leave them out
   * of the assigned programs too.
   */
  distrusted?: readonly string[];
  /**
   * Prefs of every filter attached now, whatever runs there (another tool's
   * program, or one of ours whose pins were lost): a new policy never takes
   * one, so attaching it never replaces a filter that is in force.
   */
  inUse?: readonly number[];
}

/** The range prefs are taken from: clear of tc's low defaults and of 0xffff. */
export const PREF_MIN = 0x1000;
export const PREF_MAX = 0xefff;

/** The pref a policy name starts from (FNV-1a 32-bit, folded into the range). */
export function basePref(name: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(name, "utf8")) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return PREF_MIN + (hash % (PREF_MAX - PREF_MIN + 1));
}

/** The first pref from the name's base that is not in `taken`. */
export function prefFor(name: string, taken: ReadonlySet<number>): number {
  const span = PREF_MAX - PREF_MIN + 1;
  const base = basePref(name);
  for (let i = 0; i < span; i++) {
    const pref = PREF_MIN + ((base - PREF_MIN + i) % span);
    if (!taken.has(pref)) return pref;
  }
  throw new Error("no free TC pref left");
}

/**
 * Orders versions: numeric parts compared as numbers (1.10.0 > 1.9.0), a
 * release above its pre-releases (2.0.0 > 2.0.0-rc.1), then the whole text.
 */
export function compareVersions(a: string, b: string): number {
  const [coreA = "", preA] = a.split(/-(.*)/s);
  const [coreB = "", preB] = b.split(/-(.*)/s);
  return compareParts(coreA, coreB) || (preA === undefined ? 1 : 0) - (preB === undefined ? 1 : 0) || compareParts(preA ?? "", preB ?? "") || (a < b ? -1 : a > b ? 1 : 0);
}

/** Dot-separated parts, numbers as numbers, a number below a word (as semver orders pre-release fields). */
function compareParts(a: string, b: string): number {
  const x = a.split(".");
  const y = b.split(".");
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const p = x[i];
    const q = y[i];
    if (p === undefined || q === undefined) return p === undefined ? -1 : 1;
    const np = /^\d+$/.test(p) ? Number(p) : undefined;
    const nq = /^\d+$/.test(q) ? Number(q) : undefined;
    const order = np !== undefined && nq !== undefined ? np - nq : np !== undefined ? -1 : nq !== undefined ? 1 : p < q ? -1 : p > q ? 1 : 0;
    if (order !== 0) return Math.sign(order);
  }
  return 0;
}

/**
 * One program per policy name: the newest version (then the greatest
 * digest, so the choice is the same everywhere). Assigning v2 before
 * unassigning v1 is then a replace at v1's pref, not two filters.
 */
export function newestByName(desired: readonly Program[]): { chosen: Program[]; superseded: Program[] } {
  const best = new Map<string, Program>();
  for (const p of desired) {
    const current = best.get(p.name);
    if (!current || compareVersions(p.version, current.version) > 0 || (compareVersions(p.version, current.version) === 0 && p.id > current.id)) best.set(p.name, p);
  }
  const chosen = new Set([...best.values()].map((p) => p.id));
  return { chosen: [...best.values()], superseded: desired.filter((p) => !chosen.has(p.id)) };
}

/**
 * The steps from `actual` to `desired`: per policy name only the newest
 * assigned version runs (newestByName); keep what is installed and still
 * chosen; a new digest of an installed policy name replaces it at its
 * pref; any other new digest is added at a fresh pref; what is no longer
 * chosen is removed (unless held, and not distrusted). Order: keeps, replaces, adds, removes
 * (enforcement is set up before anything is taken down); within a kind, by
 * policy name then digest.
 */
export function plan(assigned: readonly Program[], actual: readonly InstalledProgram[], options: PlanOptions = {}): Step[] {
  const desired = newestByName(assigned).chosen;
  const wanted = new Set(desired.map((p) => p.id));
  const installed = new Set(actual.map((p) => p.id));
  const hold = new Set(options.hold ?? []);
  const distrusted = new Set(options.distrusted ?? []);
  const taken = new Set([...actual.map((p) => p.pref), ...(options.inUse ?? [])]);
  const byName = (a: Program, b: Program) => byCodeUnit(a.name, b.name) || byCodeUnit(a.id, b.id);

  const keeps: Step[] = actual.filter((p) => wanted.has(p.id)).map((program) => ({ kind: "keep", program }));
  // Installed programs a new version may take over: no longer assigned, by name.
  const replaceable = new Map<string, InstalledProgram>();
  for (const p of [...actual].sort(byName)) if (!wanted.has(p.id) && !replaceable.has(p.name)) replaceable.set(p.name, p);

  const replaces: Step[] = [];
  const adds: Step[] = [];
  const seen = new Set<string>();
  for (const program of [...desired].sort(byName)) {
    if (installed.has(program.id) || seen.has(program.id)) continue;
    seen.add(program.id);
    const old = replaceable.get(program.name);
    if (old) {
      replaceable.delete(program.name);
      replaces.push({ kind: "replace", program, old, pref: old.pref });
    } else {
      const pref = prefFor(program.name, taken);
      taken.add(pref);
      adds.push({ kind: "add", program, pref });
    }
  }
  const replaced = new Set(replaces.map((s) => (s.kind === "replace" ? s.old.id : "")));
  const rest = actual.filter((p) => !wanted.has(p.id) && !replaced.has(p.id)).sort(byName);
  const isHeld = (p: InstalledProgram) => hold.has(p.name) && !distrusted.has(p.id);
  const held: Step[] = rest.filter(isHeld).map((program) => ({ kind: "keep", program }));
  const removes: Step[] = rest.filter((p) => !isHeld(p)).map((program) => ({ kind: "remove", program }));
  const sortKeeps = (steps: Step[]) => steps.sort((a, b) => byName(a.program, b.program));
  return [...sortKeeps([...keeps, ...held]), ...replaces, ...adds, ...removes];
}
