// Staged rollout with automatic rollback (README "Staged rollouts"). The
// plan's new assignments reach the hosts ring by ring (`1,10%,100%`): each
// ring's hosts get the new digests as host assignments, and the rollout
// waits for their agents' signed in-force receipts (`attached`, newer than
// the host's last report about the digest before the ring's change) before
// the next ring. A ring with more failures (agents'
// `failed` reports, or no receipt within the ring timeout) than allowed
// stops the rollout, and the desired state goes back, in one atomic change
// (or, past one request's 1000 changes, in several), to what it was
// before: every host is back on its previous digest, which the rollout then
// confirms by the agents' receipts of it.
//
// Selector assignments the plan removes or replaces are held as host
// assignments of the old digest while the rollout runs (the hosts are served
// the same), so that a ring can move one host at a time; at the end the
// plan's selector assignments are in place and those host assignments gone.
// The rollout's record is kept on the assigner (`aegis rollout status`).
import { randomBytes } from "node:crypto";
import { ASSIGNMENT_CHANGES_MAX, AssignerError, matches, parseSelector, ROLLOUT_ACTIVE_STATES, type AssignerClient, type AssignmentEntry, type RolloutJson } from "../assigner/api/index.js";
import { AegisError, describeError, InputError } from "../errors.js";
import { backoffDelay, sleep } from "../util/index.js";
import { refuseUnrunnable } from "./kernels.js";
import { entryKey, fromWire, targetText, toWire, type FleetPlan, type Target } from "./plan.js";

export interface RolloutOptions {
  /** `1,10%,100%`: cumulative host counts or shares (parseRings); the last must be 100%. */
  rings: string;
  /** Failures allowed per ring: a count (`0`) or a share of the ring (`10%`). */
  maxFailures?: string;
  ringTimeoutMs: number;
  /** How often receipts are read; default 1 s. */
  pollMs?: number;
  id?: string;
  log?: (line: string) => void;
  /** Aborting (an operator's Ctrl-C) stops the rollout and rolls it back, as a failed ring does. */
  signal?: AbortSignal;
  /** Give hosts new digests even where a host's agent reported a kernel that cannot run the program (otherwise refused before anything moves). */
  force?: boolean;
  /** Only hosts the assigner saw (polling) within this are staged in rings; default 10 minutes. */
  seenWithinMs?: number;
}

const DEFAULT_SEEN_WITHIN_MS = 10 * 60_000;

/** A duration as an operator wrote it: "10 min", "90 s", "1500 ms". */
function durationText(ms: number): string {
  return ms % 60_000 === 0 ? `${ms / 60_000} min` : ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}

export interface RolloutResult {
  rollout: RolloutJson;
  /** Registered hosts not seen within `seenWithinMs`: given the new digests in the final step, not staged. */
  unstaged: string[];
}

/**
 * A host's rings: cumulative counts out of `total`. What makes a spec wrong
 * holds whatever the number of hosts (checked over one host, before promote
 * edits a file, it is never refused later): rings grow (a count never comes
 * after a share, which passes any count on a fleet large enough) and the last
 * is 100%. A share that falls short of an earlier count (10, then 10% of 50)
 * adds no hosts: that ring is empty.
 */
export function parseRings(spec: string, total: number): number[] {
  const parts = spec.split(",").map((p) => p.trim());
  if (parts.length === 0 || parts.length > 16 || parts.some((p) => p === "")) throw new InputError("INVALID_ARGUMENT", `--rollout ${spec}: 1 to 16 comma-separated rings (a host count, or a share like 10%)`);
  const rings = parts.map((p) => {
    const m = /^(\d{1,6})(%?)$/.exec(p);
    if (!m || Number(m[1]) === 0 || (m[2] && Number(m[1]) > 100)) throw new InputError("INVALID_ARGUMENT", `--rollout ${spec}: "${p}" is not a host count (1, 5) or a share (10%, 100%)`);
    return { n: Number(m[1]), share: m[2] === "%" };
  });
  for (let i = 1; i < rings.length; i++) {
    const [last, next] = [rings[i - 1]!, rings[i]!];
    if ((last.share && !next.share) || (last.share === next.share && next.n < last.n)) throw new InputError("INVALID_ARGUMENT", `--rollout ${spec}: rings grow (each counts the hosts of the ones before, and a count cannot follow a share)`);
  }
  if (!rings.at(-1)!.share || rings.at(-1)!.n !== 100) throw new InputError("INVALID_ARGUMENT", `--rollout ${spec}: the last ring must reach every host (100%)`);
  let reached = 0;
  return rings.map((r) => (reached = Math.max(reached, r.share ? Math.ceil((r.n * total) / 100) : Math.min(r.n, total))));
}

/** Failures a ring of `size` hosts may have. */
export function allowedFailures(spec: string, size: number): number {
  const m = /^(\d{1,6})(%?)$/.exec(spec.trim());
  if (!m || (m[2] && Number(m[1]) > 100)) throw new InputError("INVALID_ARGUMENT", `--max-failures ${spec}: a count (0, 2) or a share of each ring (10%)`);
  return m[2] ? Math.floor((Number(m[1]) * size) / 100) : Number(m[1]);
}

type Keyed = Map<string, { artifactId: string; target: Target }>;

const rolloutRunning = (r: RolloutJson, what: string) =>
  new AssignerError("CONFLICT", `rollout ${r.id} is ${r.state} (started ${r.started_at}): ${what} would undo its host assignments, and it theirs; wait for it to end, or, if its process died, run aegis rollout abandon ${r.id}`);

/**
 * Refuses `what` (a rollout, an apply) while a rollout runs: its record
 * `running` or `rolling_back` on the assigner. One whose process died stays
 * so until abandonRollout marks it.
 */
export async function refuseDuringRollout(client: AssignerClient, what: string): Promise<void> {
  const running = (await client.rollouts({ active: true })).rollouts.find((r) => ROLLOUT_ACTIVE_STATES.has(r.state));
  if (running) throw rolloutRunning(running, what);
}

/**
 * How long past two ring timeouts a live rollout's record may go unsaved: a
 * ring's move and wait, with one save lost to a blip between them (a save
 * that fails is said, not a reason to stop), and the two machines' clocks.
 */
const ALIVE_SLACK_MS = 60_000;

/**
 * Marks the record of a rollout whose process died (left `running` or
 * `rolling_back`) `failed`, so that applies and rollouts may run again; the
 * desired state is left as it is, for the operator to settle (apply the
 * files again, with --prune). A record saved within twice its ring timeout
 * (and a minute) may be a live rollout's, whose next save would undo this:
 * refused unless `force`.
 */
export async function abandonRollout(client: AssignerClient, id: string, options: { force?: boolean } = {}): Promise<RolloutJson> {
  const record = await client.rollout(id);
  if (!ROLLOUT_ACTIVE_STATES.has(record.state)) throw new InputError("INVALID_ARGUMENT", `rollout ${id} is ${record.state}: only a running (or rolling_back) one is abandoned`);
  const quiet = Date.now() - Date.parse(record.updated_at);
  if (!options.force && !(quiet > 2 * record.ring_timeout_ms + ALIVE_SLACK_MS)) {
    throw new InputError("INVALID_ARGUMENT", `rollout ${id} saved its record ${Math.round(quiet / 1000)} s ago, within twice its ring timeout and a minute: its process may be running (stop it, or wait); --force abandons it all the same`);
  }
  const reason = `${record.reason ? `${record.reason}; ` : ""}abandoned by the operator: the desired state is as its process left it`;
  return client.putRollout({ ...record, state: "failed", reason: reason.slice(0, 2000), updated_at: new Date().toISOString() });
}

/** How many polls' time a save of the rollout's record, or a read of the reports before a change, rides out. */
const SAVE_TRIES_POLLS = 5;

const keyed = (entries: { artifactId: string; target: Target }[]): Keyed => new Map(entries.map((e) => [entryKey(e), e]));

type ChangeStep = { add: AssignmentEntry[]; remove: AssignmentEntry[] };

/**
 * The requests that make a change of `add` and `remove`: one, when it fits
 * ASSIGNMENT_CHANGES_MAX. Else each target's (a host's, a selector's) adds
 * and removes go in the same request, so a digest swapped on one target is
 * swapped in one atomic step: never neither, and never both against the
 * assigner's per-host cap (a ring swaps each host's this way). Targets that
 * only gain go first, then those that gain and lose, then those that only
 * lose: a digest moved from one target to another (a rollout's hold and last
 * step, between a selector and host assignments) is added before it goes,
 * and is served twice for a moment, as before. Two targets that both gain and
 * lose keep the plan's order: a policy moved between them (off a host onto a
 * selector that matches it, each target also swapping another digest) can be
 * off that host between their requests. A target of more changes than a
 * request takes is split, its adds first.
 */
export function changeSteps(add: AssignmentEntry[], remove: AssignmentEntry[], max = ASSIGNMENT_CHANGES_MAX): ChangeStep[] {
  if (add.length + remove.length === 0) return [];
  if (add.length + remove.length <= max) return [{ add, remove }];
  const byTarget = new Map<string, ChangeStep>();
  const of = (entry: AssignmentEntry) => {
    const key = targetText(fromWire(entry).target);
    return byTarget.get(key) ?? byTarget.set(key, { add: [], remove: [] }).get(key)!;
  };
  for (const entry of add) of(entry).add.push(entry);
  for (const entry of remove) of(entry).remove.push(entry);
  const rank = (target: ChangeStep) => (target.remove.length === 0 ? 0 : target.add.length > 0 ? 1 : 2);
  const steps: ChangeStep[] = [];
  let step: ChangeStep = { add: [], remove: [] };
  const size = (s: ChangeStep) => s.add.length + s.remove.length;
  const flush = () => {
    if (size(step) > 0) steps.push(step);
    step = { add: [], remove: [] };
  };
  // A stable sort: within a rank, targets keep the order of the plan.
  for (const target of [...byTarget.values()].sort((a, b) => rank(a) - rank(b))) {
    if (size(step) + size(target) > max) flush();
    if (size(target) <= max) {
      step.add.push(...target.add);
      step.remove.push(...target.remove);
      continue;
    }
    for (let i = 0; i < target.add.length; i += max) steps.push({ add: target.add.slice(i, i + max), remove: [] });
    for (let i = 0; i < target.remove.length; i += max) steps.push({ add: [], remove: target.remove.slice(i, i + max) });
  }
  flush();
  return steps;
}

/**
 * Changes the desired state from `from` to `to`: in one atomic change when
 * it fits one request, else in changeSteps (a ring of thousands of hosts,
 * or its rollback); each If-Match the last version seen, sent again on the
 * new version after a 412. `present` (default `from`) is what is surely
 * there: an entry of `to` missing from it is added (adding one the state
 * has is a no-op). A failure part-way leaves the state between `from` and
 * `to`, which the rollback's union and intersection still cover.
 */
async function move(client: AssignerClient, from: Keyed, to: Keyed, version: { current: number }, retry: Retry, force: boolean, present: Keyed = from): Promise<void> {
  const add: AssignmentEntry[] = [...to].filter(([k]) => !present.has(k)).map(([, e]) => toWire(e));
  const remove: AssignmentEntry[] = [...from].filter(([k]) => !to.has(k)).map(([, e]) => toWire(e));
  for (const step of changeSteps(add, remove)) {
    for (let attempt = 1; ; attempt++) {
      try {
        // A step whose answer was lost may have been made: sent again, it adds and removes nothing more (after a 412, on the new version).
        version.current = (await persisting(() => client.changeAssignments(step, { ifMatch: version.current, force }), retry)).version;
        break;
      } catch (err) {
        if (!(err instanceof AssignerError && err.code === "PRECONDITION_FAILED") || attempt >= 5) throw err;
        version.current = (await persisting(() => client.desiredState(), retry)).version;
      }
    }
  }
}

/**
 * Whether a failure may pass: the assigner could not be reached or did not
 * answer in time, or answered 5xx (it, or a proxy before it) or 429. What the client refused of an
 * answer itself (a redirect, one past its size cap, one without a version)
 * will not change by asking again.
 */
function isTransient(err: unknown): boolean {
  if (!(err instanceof AssignerError)) return false;
  return err.answered === undefined ? err.code === "UNAVAILABLE" : err.answered >= 500 || err.answered === 429;
}

/** Until when (ms since the epoch) a call is tried again after transient failures, and the base of the wait between tries. */
interface Retry {
  until: number;
  baseMs: number;
  signal?: AbortSignal;
}

/**
 * `work`, tried again after each transient failure (a blip of the assigner
 * or a proxy in front of it) with a growing wait, until `retry.until`; then,
 * or at any other failure, its error. A rollout of thousands of hosts must
 * not roll back, nor stop half rolled back, for one lost answer.
 */
async function persisting<T>(work: () => Promise<T>, retry: Retry): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await work();
    } catch (err) {
      if (!isTransient(err) || Date.now() >= retry.until) throw err;
      retry.signal?.throwIfAborted();
      await sleep(Math.min(backoffDelay(attempt, { baseMs: retry.baseMs, maxMs: 10 * retry.baseMs }), Math.max(0, retry.until - Date.now())), retry.signal);
    }
  }
}

interface RingCheck {
  inForce: string[];
  failed: { host_id: string; artifact_id?: string; code?: string; reason: string }[];
  pending: string[];
}

type Report = { event: string; time: string; seq?: number; code?: string; reason?: string };

/** The agents' latest report about each expected digest, by digest and host. */
async function readReports(client: AssignerClient, expected: Map<string, string[]>): Promise<Map<string, Map<string, Report>>> {
  const digests = [...new Set([...expected.values()].flat())];
  const status = new Map<string, Map<string, Report>>();
  // The summary view: the events alone, where every host's counters would pass the answer's cap at some hundreds of hosts.
  for (const digest of digests) status.set(digest, new Map((await client.status(digest, { summary: true })).hosts.map((h) => [h.host_id, h])));
  return status;
}

/**
 * What counts as news: a report with a higher sequence number than the one
 * the host had sent about that digest before the change (`before`, read just
 * before it; an agent's numbers only grow, whatever its clock does, and a
 * store that lost its last writes shows an older report, which is no news),
 * or, from an assigner that does not say the numbers, any other report;
 * when `before` could not be read, a report stamped at or after `since`
 * (this machine's clock, which may differ from the agents').
 */
interface Freshness {
  before: Map<string, Map<string, Report>> | undefined;
  since: number;
}

/**
 * The reports before a change, riding out the assigner's blips for a few
 * polls: undefined when they cannot be read (freshness then falls back to
 * the clock), so the change waits no longer on them.
 */
async function reportsBefore(client: AssignerClient, expected: Map<string, string[]>, retry: Retry): Promise<Freshness["before"]> {
  return persisting(() => readReports(client, expected), retry).catch(() => {
    retry.signal?.throwIfAborted();
    return undefined;
  });
}

/** Reads the agents' latest reports: a host is in force when every expected digest has a fresh receipt, failed when one reported a fresh failure. */
async function check(client: AssignerClient, expected: Map<string, string[]>, freshness: Freshness): Promise<RingCheck> {
  const status = await readReports(client, expected);
  const isFresh = (id: string, host: string, report: Report) => {
    if (!freshness.before) return Date.parse(report.time) >= freshness.since;
    const earlier = freshness.before.get(id)?.get(host);
    if (!earlier) return true;
    return report.seq !== undefined && earlier.seq !== undefined ? report.seq > earlier.seq : report.time !== earlier.time || report.event !== earlier.event;
  };
  const result: RingCheck = { inForce: [], failed: [], pending: [] };
  for (const [host, ids] of expected) {
    const reports = ids.map((id) => ({ id, report: status.get(id)?.get(host) })).map((r) => ({ ...r, fresh: r.report && isFresh(r.id, host, r.report) ? r.report : undefined }));
    const failure = reports.find((r) => r.fresh?.event === "failed");
    if (failure) result.failed.push({ host_id: host, artifact_id: failure.id, ...(failure.fresh!.code ? { code: failure.fresh!.code } : {}), reason: (failure.fresh!.reason ?? "failed").replace(/\s+/g, " ").slice(0, 500) });
    else if (reports.every((r) => r.fresh?.event === "attached")) result.inForce.push(host);
    else result.pending.push(host);
  }
  return result;
}

/**
 * Carries out `plan` as a staged rollout. Resolves with the completed
 * rollout; a stopped one is rolled back and rejects with an error saying why,
 * after recording it.
 */
export async function runRollout(client: AssignerClient, plan: FleetPlan, options: RolloutOptions): Promise<RolloutResult> {
  const log = options.log ?? (() => undefined);
  const pollMs = options.pollMs ?? 1000;
  const maxFailures = options.maxFailures ?? "0";
  allowedFailures(maxFailures, 1);
  await refuseDuringRollout(client, "another rollout");
  const { agents, answeredAt } = await client.hosts();
  const registered = new Set(agents.map((a) => a.host_id));
  // Only registered hosts seen lately are staged in rings (an unregistered one would never send a receipt, nor would one switched
  // off or gone without being deleted, and every ring with one would fail): the others get theirs in the final step. Every
  // registered one is still held on its old digests while the rollout runs (stateWith).
  // On the assigner's clock, which last_seen is on (this machine's may be minutes off).
  const seenWithinMs = options.seenWithinMs ?? DEFAULT_SEEN_WITHIN_MS;
  const seenSince = (answeredAt ?? Date.now()) - seenWithinMs;
  const unseen = new Set(agents.filter((a) => a.last_seen === null || !(Date.parse(a.last_seen) >= seenSince)).map((a) => a.host_id));
  const hostsOf = (target: Target): string[] => {
    if ("host" in target) return registered.has(target.host) ? [target.host] : [];
    const selector = parseSelector(target.selector);
    return agents.filter((a) => matches(selector, a.labels)).map((a) => a.host_id);
  };
  const current = await client.desiredState();
  if (current.version !== plan.version) throw new AssignerError("PRECONDITION_FAILED", `the desired state moved (version ${plan.version} → ${current.version}) since the plan was made: plan again`);
  const before = keyed(current.assignments.map(fromWire));
  const adds = plan.add;
  const removes = plan.remove;
  const selectorRemoves = removes.filter((r) => "selector" in r.target);
  const hostRemoves = removes.filter((r) => "host" in r.target);
  const expected = new Map<string, string[]>();
  const unstaged = new Set<string>();
  for (const a of adds) {
    for (const h of hostsOf(a.target)) {
      if (unseen.has(h)) unstaged.add(h);
      else expected.set(h, [...new Set([...(expected.get(h) ?? []), a.artifactId])]);
    }
  }
  const hosts = [...expected.keys()].sort();
  const notStaged = unstaged.size === 0 ? "" : `${unstaged.size} registered host${unstaged.size === 1 ? "" : "s"} not seen within ${durationText(seenWithinMs)} (${[...unstaged].sort().slice(0, 5).join(", ")}${unstaged.size > 5 ? ", …" : ""})`;
  if (hosts.length === 0) throw new InputError("INVALID_ARGUMENT", `nothing to roll out: the plan adds nothing to a registered host seen lately${notStaged ? `, only to ${notStaged}` : ""} (apply it without --rollout)`);
  const cumulative = parseRings(options.rings, hosts.length);
  // Every host the rollout will give a new digest to by host (its rings', and the final step's for hosts not staged), checked now:
  // refused at a later step, it would roll back what passed.
  if (!options.force) {
    // Less what a host already has by host: the assigner adds nothing there, so it checks nothing.
    const byHost = [...expected].flatMap(([hostId, ids]) => ids.filter((artifactId) => !before.has(entryKey({ artifactId, target: { host: hostId } }))).map((artifactId) => ({ artifactId, hostId })));
    const direct = adds.flatMap((a) => ("host" in a.target && !expected.has(a.target.host) ? [{ artifactId: a.artifactId, hostId: a.target.host }] : []));
    await refuseUnrunnable(client, [...byHost, ...direct], { agents });
  }

  /** The desired state with the hosts in `moved` on the new digests (see the file's comment). */
  const stateWith = (moved: ReadonlySet<string>): Keyed => {
    const next = new Map(before);
    for (const r of selectorRemoves) {
      next.delete(entryKey(r));
      for (const h of hostsOf(r.target)) if (!moved.has(h)) next.set(entryKey({ artifactId: r.artifactId, target: { host: h } }), { artifactId: r.artifactId, target: { host: h } });
    }
    for (const r of hostRemoves) if (moved.has((r.target as { host: string }).host)) next.delete(entryKey(r));
    for (const a of adds) {
      for (const h of hostsOf(a.target)) {
        if (moved.has(h)) next.set(entryKey({ artifactId: a.artifactId, target: { host: h } }), { artifactId: a.artifactId, target: { host: h } });
      }
    }
    return next;
  };
  // The removals' keys made once: matched entry by entry, thousands of each kept the event loop (and a Ctrl-C) waiting for a second.
  const removed = new Set(removes.map(entryKey));
  const final = keyed([...[...before.values()].filter((e) => !removed.has(entryKey(e))), ...adds]);

  const now = () => new Date().toISOString();
  const rollout: RolloutJson = {
    id: options.id ?? `r-${new Date().toISOString().replace(/[-:T]/g, "").slice(0, 14)}-${randomBytes(3).toString("hex")}`,
    state: "running",
    changes: adds.slice(0, 1000).map((a) => {
      const from = plan.replaces.find((r) => entryKey(r.to) === entryKey(a))?.from;
      return { ...(from ? { from: from.artifactId } : {}), to: a.artifactId, target: targetText(a.target).slice(0, 1100) };
    }),
    rings: options.rings.split(",").map((spec, i) => ({ spec: spec.trim(), hosts: cumulative[i]! - (cumulative[i - 1] ?? 0), state: "pending", in_force: 0, failed: 0, failures: [] })),
    max_failures: maxFailures,
    ring_timeout_ms: options.ringTimeoutMs,
    started_at: now(),
    updated_at: now(),
  };
  // The record is what `aegis rollout status` shows: kept through a short blip (a few polls' time, so no ring or rollback waits on it), and, once the rollout has begun, a record that cannot be saved is said, not a reason to stop.
  // The record that ends the rollout (nothing waits after it) rides out as long as a step does.
  /** A few polls' time through the assigner's blips, from now; cut short by the operator's stop unless `stoppable` is false. */
  const brief = (stoppable = true): Retry => ({ until: Date.now() + SAVE_TRIES_POLLS * pollMs, baseMs: pollMs, ...(stoppable && options.signal ? { signal: options.signal } : {}) });
  const save = async (final = false) => {
    rollout.updated_at = now();
    const retry = final ? { until: Date.now() + options.ringTimeoutMs, baseMs: pollMs } : brief(false);
    await persisting(() => client.putRollout(rollout), retry).catch((err: unknown) => log(`rollout ${rollout.id}: its record could not be saved: ${describeError(err)}`));
  };
  /**
   * The rollout ends before anything moved: its record failed, saved as the
   * record that ends a rollout is (a record left running would refuse every
   * apply), and NOT_STARTED.
   */
  const endUnmoved = async (err: unknown): Promise<never> => {
    rollout.state = "failed";
    rollout.reason = `did not start: ${describeError(err)}`.slice(0, 2000);
    log(`rollout ${rollout.id} ${rollout.reason}; nothing moved; saving its record as failed`);
    await save(true);
    throw new RolloutStopped(rollout, "NOT_STARTED", { cause: err });
  };
  log(`rollout ${rollout.id}: ${hosts.length} host${hosts.length === 1 ? "" : "s"} in ${cumulative.length} ring${cumulative.length === 1 ? "" : "s"} (${options.rings})`);
  if (notStaged) log(`not staged: ${notStaged}; they get the new digests in the final step`);
  rollout.updated_at = now();
  // Through a blip too: an answer lost after the assigner stored the record would leave it running, with no process.
  await persisting(() => client.putRollout(rollout), brief()).catch(endUnmoved);
  // Two begun at once may both have seen none running: the one the assigner stored first (the list is newest first)
  // goes on; the other ends, having moved nothing.
  const listed = (await persisting(() => client.rollouts({ active: true }), brief()).catch(endUnmoved)).rollouts;
  const earlier = listed.slice(listed.findIndex((r) => r.id === rollout.id) + 1).find((r) => ROLLOUT_ACTIVE_STATES.has(r.state));
  if (earlier) await endUnmoved(rolloutRunning(earlier, "this rollout"));
  // A stop that came meanwhile (persisting looks at it only between failed tries): nothing has moved yet.
  if (options.signal?.aborted) await endUnmoved(options.signal.reason);

  const version = { current: current.version };
  let state: Keyed = before;
  /** The step under way: if it failed, its change may have been made all the same (the answer lost). */
  let attempted: Keyed | undefined;
  // An operator's stop is looked at before every step, so that once it came no ring is moved (the rollback then undoes what was).
  // `force`: the assigner checks that a host's kernel can run what is added to it unless told not to (a step that only keeps what hosts are served is).
  const go = async (next: Keyed, force = options.force ?? false) => {
    options.signal?.throwIfAborted();
    attempted = next;
    await move(client, state, next, version, { until: Date.now() + options.ringTimeoutMs, baseMs: pollMs, ...(options.signal ? { signal: options.signal } : {}) }, force);
    state = next;
    attempted = undefined;
  };
  const moved = new Set<string>();
  try {
    // Selector assignments on their way out become host assignments: nothing a host is served changes.
    await go(stateWith(moved), true);
    for (let i = 0; i < cumulative.length; i++) {
      // A stop that came while the last ring's record was saved: the next ring is not begun (nor its reports read).
      options.signal?.throwIfAborted();
      const ring = rollout.rings[i]!;
      const ringHosts = hosts.slice(cumulative[i - 1] ?? 0, cumulative[i]);
      if (ringHosts.length === 0) {
        ring.state = "passed";
        continue;
      }
      const since = Date.now();
      const wanted = new Map(ringHosts.map((h) => [h, expected.get(h)!]));
      const freshness: Freshness = { before: await reportsBefore(client, wanted, brief()), since };
      for (const h of ringHosts) moved.add(h);
      await go(stateWith(moved));
      // The ring's time starts once its hosts are moved: a move that rode out a blip does not eat it.
      const deadline = Date.now() + options.ringTimeoutMs;
      ring.state = "waiting";
      await save();
      log(`ring ${i + 1} (${ring.spec}): ${ringHosts.length} host${ringHosts.length === 1 ? "" : "s"} moved; waiting for their in-force receipts`);
      const allowed = allowedFailures(maxFailures, ringHosts.length);
      let seen: RingCheck;
      for (;;) {
        seen = await persisting(() => check(client, wanted, freshness), { until: deadline, baseMs: pollMs, ...(options.signal ? { signal: options.signal } : {}) });
        options.signal?.throwIfAborted();
        if (seen.failed.length > allowed || seen.pending.length === 0 || Date.now() >= deadline) break;
        await sleep(Math.min(pollMs, Math.max(0, deadline - Date.now())), options.signal);
      }
      const late = Date.now() >= deadline ? seen.pending.map((host_id) => ({ host_id, reason: `no in-force receipt within ${options.ringTimeoutMs} ms` })) : [];
      const failures = [...seen.failed, ...late];
      ring.in_force = seen.inForce.length;
      ring.failed = failures.length;
      ring.failures = failures.slice(0, 20);
      if (failures.length > allowed) {
        ring.state = "failed";
        const first = failures[0]!;
        throw new RingFailed(`ring ${i + 1} (${ring.spec}): ${failures.length} of ${ringHosts.length} host${ringHosts.length === 1 ? "" : "s"} failed (allowed ${allowed}); first: ${first.host_id}${"code" in first && first.code ? ` [${first.code}]` : ""} ${first.reason.length > 160 ? `${first.reason.slice(0, 160)}…` : first.reason}`);
      }
      ring.state = "passed";
      await save();
      log(`ring ${i + 1} (${ring.spec}): ${seen.inForce.length} of ${ringHosts.length} in force${failures.length > 0 ? `, ${failures.length} failed (allowed ${allowed})` : ""}`);
    }
    await go(final);
    // A stop that came during the final step rolls back from it too.
    options.signal?.throwIfAborted();
    rollout.state = "completed";
    await save(true);
    log(`rollout ${rollout.id} completed`);
    return { rollout, unstaged: [...unstaged].sort() };
  } catch (err) {
    const why = err instanceof RingFailed ? `stopped at ${err.message}` : options.signal?.aborted ? "stopped by the operator" : `stopped: ${(err as Error).message}`;
    rollout.reason = why.slice(0, 2000);
    rollout.state = "rolling_back";
    await save();
    log(`rollout ${rollout.id}: ${rollout.reason}; rolling back`);
    const since = Date.now();
    // Every moved host should be back on what it had: confirmed by receipts of the previous digests, newer than those it sent before the rollback.
    // Each earlier assignment's hosts found once (a selector's by matching every agent): per moved host, per assignment, it was cubic.
    const previous = new Map<string, string[]>();
    for (const e of before.values()) {
      for (const h of hostsOf(e.target)) if (moved.has(h)) previous.set(h, [...new Set([...(previous.get(h) ?? []), e.artifactId])]);
    }
    const freshness: Freshness = { before: previous.size > 0 ? await reportsBefore(client, previous, brief(false)) : undefined, since };
    // The rollback rides out the assigner's blips for a ring's time, whatever stopped the rollout (a Ctrl-C included), from when it starts.
    const retry: Retry = { until: Date.now() + options.ringTimeoutMs, baseMs: pollMs };
    try {
      // Back to `before` from either outcome of a failed step: remove what either state has, add what both might lack.
      // Forced: what the hosts had before is restored, whatever their kernels reported since.
      const maybe = attempted ?? state;
      await move(client, new Map([...state, ...maybe]), before, version, retry, true, new Map([...state].filter(([k]) => maybe.has(k))));
      state = before;
    } catch (undo) {
      rollout.state = "failed";
      rollout.reason = `${rollout.reason}; rolling back failed: ${(undo as Error).message}`.slice(0, 2000);
      await save(true);
      throw new RolloutStopped(rollout, "NOT_ROLLED_BACK", { cause: undo });
    }
    let back: RingCheck = { inForce: [], failed: [], pending: [...previous.keys()] };
    // Interrupted: one look at the receipts, no waiting for them.
    const deadline = options.signal?.aborted ? Date.now() : Date.now() + options.ringTimeoutMs;
    let unconfirmed = "";
    try {
      while (previous.size > 0) {
        back = await persisting(() => check(client, previous, freshness), { ...retry, until: Math.max(deadline, Date.now()) });
        if (back.pending.length === 0 || Date.now() >= deadline) break;
        await sleep(Math.min(pollMs, Math.max(0, deadline - Date.now())));
      }
    } catch (look) {
      // The state is back; only its confirmation is missing.
      unconfirmed = ` (receipts could not be read: ${(look as Error).message})`;
    }
    rollout.state = "rolled_back";
    rollout.reason = `${rollout.reason}; rolled back: ${back.inForce.length} of ${previous.size} host${previous.size === 1 ? "" : "s"} confirmed on the previous digest by receipts${unconfirmed}`.slice(0, 2000);
    await save(true);
    log(`rollout ${rollout.id} rolled back (${back.inForce.length} of ${previous.size} confirmed by receipts)${unconfirmed}`);
    throw new RolloutStopped(rollout, "ROLLED_BACK", { cause: err });
  }
}

class RingFailed extends Error {}

/**
 * A rollout that stopped: rolled back (ROLLED_BACK), or not even that
 * (NOT_ROLLED_BACK: the state is between the two), or before anything moved
 * (NOT_STARTED: another rollout began first, the assigner stopped answering,
 * a Ctrl-C); `rollout` is its record.
 */
export class RolloutStopped extends AegisError<"ROLLED_BACK" | "NOT_ROLLED_BACK" | "NOT_STARTED"> {
  constructor(
    readonly rollout: RolloutJson,
    code: "ROLLED_BACK" | "NOT_ROLLED_BACK" | "NOT_STARTED",
    options: { cause?: unknown },
  ) {
    super(code, code === "NOT_ROLLED_BACK" ? `rollout ${rollout.id} stopped and could not be rolled back: ${rollout.reason ?? ""}` : `rollout ${rollout.id} ${rollout.reason ?? "stopped"}`, options);
  }
}

