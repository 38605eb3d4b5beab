// GitOps commands (README "GitOps"): `aegis apply` (fleet files → the
// assigner's desired state, optionally as a staged rollout), `aegis promote`
// (the same digest, one environment forward), `aegis rollout status` (and
// `abandon`, for one whose process died) and `aegis assignments`. The work
// is in fleet/; it loads when a command runs.
import type { Command } from "commander";
import type { FleetPlan } from "../../fleet/index.js";
import { errorCode } from "../../errors.js";
import { addTrustOptions, parseDuration, repositoryOptions, type TrustOptions } from "../options.js";
import { plainError, report, say } from "../output.js";
import { interruptibly } from "../interrupt.js";
import { client, withClientOptions, type ClientOptions } from "./assigner.js";
import { loadTrustOptions, pinsTrust } from "./sign.js";

interface ApplyOptions extends ClientOptions, TrustOptions {
  file: string[];
  environment?: string;
  prune?: boolean;
  dryRun?: boolean;
  pin?: boolean;
  rollout?: string;
  maxFailures: string;
  ringTimeout: string;
  seenWithin: string;
  force?: boolean;
  plainHttp?: boolean;
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

function withApplyOptions(command: Command, rolloutOnly = false): Command {
  if (!rolloutOnly) {
    command
      .option("--prune", "remove assignments the files no longer name")
      .option("--dry-run", "print the plan and stop")
      .option("--pin", "resolve tags and write their digests into the files (atomically)");
  }
  return addTrustOptions(
    withClientOptions(command)
      .option("--environment <name>", "apply only the files of this environment")
      .option("--rollout <rings>", "stage the new digests ring by ring, e.g. 1,10%,100%, rolling back on failures")
      .option("--max-failures <n>", "failures a ring may have: a count or a share of the ring (10%)", "0")
      .option("--ring-timeout <duration>", "how long a ring's hosts have to send their in-force receipts", "5m")
      .option("--seen-within <duration>", "stage only hosts the assigner saw within this; the others get the new digests in the final step", "10m")
      .option("--force", "assign a program even to hosts whose agent reported a kernel that cannot run it")
      .option("--plain-http", "use http:// for a non-loopback registry (loopback always does)"),
    ": every digest must be signed by one",
  );
}

/** Refuses bad --rollout, --max-failures, --ring-timeout and --seen-within before anything is read or edited; returns the two durations (ms). */
async function checkApplyOptions(options: ApplyOptions): Promise<{ ringTimeoutMs: number; seenWithinMs: number }> {
  const fleet = await import("../../fleet/index.js");
  const ringTimeoutMs = parseDuration(options.ringTimeout, "ring-timeout");
  const seenWithinMs = parseDuration(options.seenWithin, "seen-within");
  // `!== undefined` throughout: an empty --rollout "" (an unset variable) is refused, never a plain apply.
  // Over one host: parseRings refuses at any size what it refuses at all, so a spec passed here (before promote edits a file) is not refused once the plan is made.
  if (options.rollout !== undefined) {
    fleet.parseRings(options.rollout, 1);
    fleet.allowedFailures(options.maxFailures, 1);
  }
  return { ringTimeoutMs, seenWithinMs };
}

/** Prepares the files, plans on the assigner's state and applies (or rolls out); prints the plan first. */
async function applyFiles(paths: string[], options: ApplyOptions, extra: Record<string, unknown> = {}): Promise<void> {
  const fleet = await import("../../fleet/index.js");
  const { ringTimeoutMs, seenWithinMs } = await checkApplyOptions(options);
  // The operator token is checked before any registry is read.
  const assigner = await client(options);
  const prepared = await fleet.prepareFleet(paths, {
    ...(options.environment !== undefined ? { environment: options.environment } : {}),
    pin: options.pin ?? false,
    dryRun: options.dryRun ?? false,
    registry: repositoryOptions(options),
    ...(pinsTrust(options) ? { trust: await loadTrustOptions(options) } : {}),
  });
  const human = !options.json;
  for (const p of prepared.pinned) if (human) say(`${options.dryRun ? "would pin" : "pinned"} ${p.file} policies[${p.index}] (${p.name}) to ${p.to}`);
  const names = await fleet.registerArtifacts(assigner, prepared.fleet, prepared.names, { dryRun: options.dryRun ?? false });
  const desired = fleet.desiredEntries(prepared.fleet, names);
  let shown: FleetPlan | undefined;
  const result = await fleet.applyPlan(assigner, desired, names, {
    prune: options.prune ?? false,
    // A rollout checks every host it will move itself (runRollout), a superset of the plan's: not listed twice.
    force: (options.force ?? false) || (options.rollout !== undefined && !options.dryRun),
    programs: prepared.programs,
    // A rollout applies the plan itself, ring by ring.
    dryRun: (options.dryRun ?? false) || options.rollout !== undefined,
    onPlan: (plan, attempt) => {
      if (human) say(attempt > 1 ? `the desired state changed while applying (412): planned again\n${fleet.formatPlan(plan)}` : fleet.formatPlan(plan));
      shown = plan;
    },
  });
  const pinned = prepared.pinned.map((p) => ({ file: p.file, index: p.index, name: p.name, ref: p.to }));
  const base = { ...extra, plan: fleet.planJson(shown!), pinned, dry_run: options.dryRun ?? false };
  if (options.dryRun || fleet.planIsEmpty(result.plan)) {
    const what = options.dryRun ? "dry run: nothing changed" : "nothing to change";
    report(options, what, { ...base, applied: false, version: result.version });
    return;
  }
  if (options.rollout === undefined) {
    report(options, `applied: desired-state version ${result.version}${result.replans > 0 ? ` (planned again ${result.replans}× after 412)` : ""}`, { ...base, applied: true, version: result.version, replans: result.replans });
    return;
  }
  const log = (line: string) => human && say(line);
  // Ctrl-C (or SIGTERM) stops the rollout and rolls it back; a second one ends the process as it is.
  const stopping = () => log("stopping: rolling back (interrupt again to leave the desired state as it is)");
  const rings = options.rollout;
  try {
    const { rollout, unstaged } = await interruptibly(
      (signal) => fleet.runRollout(assigner, result.plan, { rings, maxFailures: options.maxFailures, ringTimeoutMs, seenWithinMs, log, signal, force: options.force ?? false }),
      stopping,
    );
    report(options, `rollout ${rollout.id} completed`, { ...base, applied: true, rollout, unstaged });
  } catch (err) {
    // The rollout's record, with the failure's words and code (fail() adds no second document).
    if (options.json && err instanceof fleet.RolloutStopped) report(options, "", { ...base, applied: false, rollout: err.rollout, error: plainError(err), code: errorCode(err) });
    throw err;
  }
}

function rolloutLines(r: { id: string; state: string; rings: { spec: string; hosts: number; state: string; in_force: number; failed: number; failures: { host_id: string; code?: string; reason: string }[] }[]; changes: { from?: string; to: string; target: string }[]; reason?: string; started_at: string; updated_at: string }): string {
  const rows = [
    `rollout ${r.id}: ${r.state} (started ${r.started_at}, updated ${r.updated_at})`,
    ...r.changes.slice(0, 10).map((c) => `  ${c.from ? `${c.from.slice(0, 19)} ⇒ ` : ""}${c.to.slice(0, 19)} → ${c.target}`),
    ...(r.changes.length > 10 ? [`  … and ${r.changes.length - 10} more changes`] : []),
    "  RING  SPEC  HOSTS  STATE    IN FORCE  FAILED",
    ...r.rings.map((ring, i) => `  ${String(i + 1).padEnd(4)}  ${ring.spec.padEnd(4)}  ${String(ring.hosts).padEnd(5)}  ${ring.state.padEnd(7)}  ${String(ring.in_force).padEnd(8)}  ${ring.failed}`),
    ...r.rings.flatMap((ring) => ring.failures.map((f) => `  failed: ${f.host_id}${f.code ? ` [${f.code}]` : ""} ${f.reason}`)),
    ...(r.reason ? [`  ${r.reason}`] : []),
  ];
  return rows.join("\n");
}

export function registerFleet(program: Command): void {
  withApplyOptions(
    program
      .command("apply")
      .description("make the assigner's desired state what fleet files say (policies by digest, targets by host or label selector); prints the plan first")
      .requiredOption("-f, --file <path>", "a fleet file, or a directory of them (repeatable)", collect),
  ).action(async (options: ApplyOptions) => applyFiles(options.file, options));

  withApplyOptions(
    program
      .command("promote")
      .description("move a digest from one environment's fleet files to the next (the same digest, never a rebuild); with --apply or --rollout, apply the target environment")
      .argument("<digest>", "sha256:… or host/repo@sha256:…")
      .requiredOption("--from <environment>", "the environment that runs the digest now")
      .requiredOption("--to <environment>", "the environment to move it to")
      .requiredOption("-f, --file <path>", "fleet files or directories holding both environments (repeatable)", collect)
      .option("--apply", "apply the --to environment's files after editing them"),
    true,
  ).action(async (digest: string, options: ApplyOptions & { from: string; to: string; apply?: boolean }) => {
    const [{ promote, refuseDuringRollout, RolloutStopped }, { openReference }, { readPolicyManifest }, { verifyArtifact }] = await Promise.all([
      import("../../fleet/index.js"),
      import("../../registry/index.js"),
      import("../../bundle/index.js"),
      import("../../signing/index.js"),
    ]);
    const applying = options.apply === true || options.rollout !== undefined;
    // What would make the apply fail at once (its flags, no operator token, a rollout running) is found before the files are edited.
    if (applying) {
      await checkApplyOptions(options);
      await refuseDuringRollout(await client(options), options.rollout !== undefined ? "another rollout" : "an apply");
    }
    const trust = pinsTrust(options) ? await loadTrustOptions(options) : undefined;
    // With --key/--trust, the digest is checked where the --to files will name it before they are edited (as apply checks them).
    const check = trust
      ? async (ref: string) => {
          const { target, selector } = openReference(ref, repositoryOptions(options));
          await readPolicyManifest(target, await target.resolve(selector!));
          await verifyArtifact(target, selector!, trust);
        }
      : undefined;
    const changes = await promote(options.file, digest, options.from, options.to, check);
    const lines = changes.map((c) => `${c.file}: ${c.name}: ${c.from} ⇒ ${c.to}`);
    const summary = changes.length > 0 ? lines.join("\n") : `${options.to} already pins ${digest}`;
    if (!applying) return report(options, summary, { promoted: changes });
    if (!options.json) say(summary);
    try {
      await applyFiles(options.file, { ...options, environment: options.to }, { promoted: changes });
    } catch (err) {
      // The files stay edited: said, so that a later plain apply (GitOps) does not roll the digest out unawares.
      // (A stopped rollout's JSON, printed already, holds `promoted`.)
      if (changes.length > 0) {
        const rolledBack = err instanceof RolloutStopped && err.code !== "NOT_STARTED";
        if (!options.json) say(`the --to files stay edited to ${digest}: ${rolledBack ? "the rollout stopped; revert them" : "the apply failed; mend it and apply them, or revert them"}`);
        else if (!(err instanceof RolloutStopped)) report(options, "", { promoted: changes, applied: false, error: plainError(err), code: errorCode(err) });
      }
      throw err;
    }
  });

  const rollout = program.command("rollout").description("staged rollouts (apply or promote with --rollout)");
  withClientOptions(rollout.command("status").description("a rollout's rings, receipts and failures (default: the newest)").argument("[id]", "rollout id")).action(
    async (id: string | undefined, options: ClientOptions) => {
      const assigner = await client(options);
      const record = id ? await assigner.rollout(id) : (await assigner.rollouts()).rollouts[0];
      if (!record) return report(options, "no rollouts", { rollouts: [] });
      report(options, rolloutLines(record), record);
    },
  );

  withClientOptions(
    rollout
      .command("abandon")
      .description("mark a rollout whose process died (left running) failed, so that apply and rollouts run again; then apply the files (with --prune) to settle the state")
      .argument("<id>", "rollout id")
      .option("--force", "even if its record was saved within twice its ring timeout and a minute (its process may still run)"),
  ).action(
    async (id: string, options: ClientOptions & { force?: boolean }) => {
      const { abandonRollout } = await import("../../fleet/index.js");
      const record = await abandonRollout(await client(options), id, { force: options.force === true });
      report(options, `rollout ${record.id} abandoned (failed): the desired state is as its process left it; apply the files (with --prune) to settle it`, record);
    },
  );

  withClientOptions(program.command("assignments").description("the assigner's desired state (every assignment), or what one host is served and why").option("--host <host>", "one host: its own assignments and the selectors its labels match")).action(
    async (options: ClientOptions & { host?: string }) => {
      const assigner = await client(options);
      if (options.host) {
        const host = await assigner.hostAssignments(options.host);
        const labels = Object.entries(host.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(",") || "-";
        const rows = host.assignments.map((a) => `${a.artifact_id}  ${a.via === "host" ? "host" : `selector ${a.selector}`}`);
        return report(options, [`host ${host.host_id} (labels ${labels}, version ${host.version})`, "ARTIFACT" + " ".repeat(65) + "VIA", ...rows].join("\n"), host);
      }
      const state = await assigner.desiredState();
      const rows = state.assignments.map((a) => `${a.artifact_id}  ${"host_id" in a ? `host ${a.host_id}` : `selector ${a.selector}`}`);
      report(options, [`desired state version ${state.version}: ${state.total} assignment${state.total === 1 ? "" : "s"}`, "ARTIFACT" + " ".repeat(65) + "TARGET", ...rows].join("\n"), state);
    },
  );
}
