// From the fleet files and the assigner's desired state to the changes that
// make one the other (README "GitOps"): adds, removes and what is unchanged.
// Pure, so every case is a table test. An assignment the files no longer
// name is removed only with `prune`, except the previous version of a policy
// on the same target (same policy name, another digest): a new digest
// replaces it, as the agent would (one version per policy name).
import type { AssignmentEntry } from "../assigner/api/index.js";
import type { Fleet } from "./file.js";

export type Target = { host: string } | { selector: string };

export interface PlanEntry {
  artifactId: string;
  target: Target;
  /** The fleet entry that names it (none for an assignment the files do not name). */
  policy?: string;
  /** The artifact's policy name, when known. */
  name?: string;
}

export interface FleetPlan {
  /** The desired-state version the plan was made on (If-Match). */
  version: number;
  add: PlanEntry[];
  /** Removals: replaced versions and, with prune, what the files no longer name. */
  remove: PlanEntry[];
  /** The old version each replaced entry gave way to, by the new entry's key. */
  replaces: { from: PlanEntry; to: PlanEntry }[];
  unchanged: PlanEntry[];
  /** Assigned, not named by the files, left alone (no --prune). */
  kept: PlanEntry[];
}

export interface CurrentState {
  version: number;
  assignments: AssignmentEntry[];
}

export function targetText(target: Target): string {
  return "host" in target ? `host ${target.host}` : `selector ${target.selector}`;
}

export function entryKey(e: { artifactId: string; target: Target }): string {
  return `${e.artifactId} ${"host" in e.target ? `h:${e.target.host}` : `s:${e.target.selector}`}`;
}

export function toWire(e: { artifactId: string; target: Target }): AssignmentEntry {
  return "host" in e.target ? { artifact_id: e.artifactId, host_id: e.target.host } : { artifact_id: e.artifactId, selector: e.target.selector };
}

export function fromWire(a: AssignmentEntry): { artifactId: string; target: Target } {
  return { artifactId: a.artifact_id, target: "host_id" in a ? { host: a.host_id } : { selector: a.selector } };
}

const sameTarget = (a: Target, b: Target) => ("host" in a && "host" in b && a.host === b.host) || ("selector" in a && "selector" in b && a.selector === b.selector);

/** The assignments the files describe (each policy's digest to each of its hosts and selectors). */
export function desiredEntries(fleet: Fleet, names: ReadonlyMap<string, string>): PlanEntry[] {
  const entries = new Map<string, PlanEntry>();
  for (const p of fleet.policies) {
    if (!p.digest) throw new Error(`${p.file}: policies[${p.index}].ref has no digest`);
    const name = names.get(p.digest);
    for (const target of [...p.hosts.map((host): Target => ({ host })), ...p.selectors.map((selector): Target => ({ selector }))]) {
      const entry = { artifactId: p.digest, target, policy: p.name, ...(name ? { name } : {}) };
      entries.set(entryKey(entry), entry);
    }
  }
  return [...entries.values()];
}

/** `names`: policy name by digest (the files' digests and the assigned ones), for replacements. */
export function planFleet(desired: PlanEntry[], current: CurrentState, names: ReadonlyMap<string, string>, options: { prune?: boolean } = {}): FleetPlan {
  const currentEntries = current.assignments.map(fromWire).map((e) => ({ ...e, ...(names.get(e.artifactId) ? { name: names.get(e.artifactId)! } : {}) }));
  const have = new Set(currentEntries.map(entryKey));
  const want = new Set(desired.map(entryKey));
  const add = desired.filter((e) => !have.has(entryKey(e)));
  const unchanged = desired.filter((e) => have.has(entryKey(e)));
  const extra = currentEntries.filter((e) => !want.has(entryKey(e)));
  const replaces: FleetPlan["replaces"] = [];
  const replaced = new Set<string>();
  // Against every desired entry, not only those to add: after an apply cut between its adds and its removes
  // (in several requests), the new digest is already there, and the old one must still go.
  for (const to of desired) {
    if (!to.name) continue;
    for (const from of extra) {
      if (from.name === to.name && sameTarget(from.target, to.target) && !replaced.has(entryKey(from))) {
        replaces.push({ from, to });
        replaced.add(entryKey(from));
      }
    }
  }
  const remove = extra.filter((e) => replaced.has(entryKey(e)) || options.prune);
  const kept = extra.filter((e) => !replaced.has(entryKey(e)) && !options.prune);
  return { version: current.version, add, remove, replaces, unchanged, kept };
}

export function planIsEmpty(plan: FleetPlan): boolean {
  return plan.add.length === 0 && plan.remove.length === 0;
}

const short = (digest: string) => digest.slice(0, 19);

/** The plan for people: one line per change. */
export function formatPlan(plan: FleetPlan): string {
  const lines: string[] = [];
  const label = (e: PlanEntry) => `${short(e.artifactId)}${e.name ? ` ${e.name}` : ""} → ${targetText(e.target)}`;
  const replacedTo = new Map(plan.replaces.map((r) => [entryKey(r.to), r.from]));
  const replacedFrom = new Set(plan.replaces.map((r) => entryKey(r.from)));
  for (const e of plan.add) {
    const from = replacedTo.get(entryKey(e));
    lines.push(from ? `  ~ ${short(from.artifactId)} ⇒ ${label(e)}  (replace)` : `  + ${label(e)}`);
  }
  // A replacement whose new digest is assigned already (an apply cut between its adds and its removes) shows as its removal.
  const addedTo = new Set(plan.add.map(entryKey));
  const standing = new Map(plan.replaces.filter((r) => !addedTo.has(entryKey(r.to))).map((r) => [entryKey(r.from), r.to]));
  for (const e of plan.remove) {
    const by = standing.get(entryKey(e));
    if (by) lines.push(`  - ${label(e)}  (replaced by ${short(by.artifactId)}, assigned already)`);
    else if (!replacedFrom.has(entryKey(e))) lines.push(`  - ${label(e)}  (prune)`);
  }
  const summary = `plan on desired-state version ${plan.version}: ${plan.add.length} to add, ${plan.remove.length} to remove, ${plan.unchanged.length} unchanged`;
  const kept = plan.kept.length > 0 ? [`  (${plan.kept.length} assignment${plan.kept.length === 1 ? "" : "s"} the files do not name kept; --prune removes them)`] : [];
  return [summary, ...lines, ...kept].join("\n");
}

export function planJson(plan: FleetPlan) {
  const json = (e: PlanEntry) => ({ ...toWire(e), ...(e.name ? { name: e.name } : {}), ...(e.policy ? { policy: e.policy } : {}) });
  return {
    version: plan.version,
    add: plan.add.map(json),
    remove: plan.remove.map(json),
    replace: plan.replaces.map((r) => ({ from: r.from.artifactId, to: r.to.artifactId, target: targetText(r.to.target) })),
    unchanged: plan.unchanged.map(json),
    kept: plan.kept.map(json),
  };
}
