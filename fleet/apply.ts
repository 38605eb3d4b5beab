// `aegis apply`: fleet files → the assigner's desired state. Tags are
// resolved only to be refused with their digest (or pinned into the file),
// every digest is read from its registry (it must be an Aegis policy) and,
// with trust, must carry a trusted signature; the artifacts are registered
// with the assigner; the plan is made on the desired state's version and
// sent with If-Match, so a concurrent apply makes this one plan again
// instead of overwriting it.
import { AssignerError, type AssignerClient } from "../assigner/api/index.js";
import { PolicyAnnotation, readPolicyManifest } from "../bundle/index.js";
import { InputError } from "../errors.js";
import { Annotation, formatReference, RemoteRepository, type RepositoryOptions } from "../registry/index.js";
import { verifyArtifact, type TrustPolicy } from "../signing/index.js";
import { environmentsOf, loadFleetFiles, rewriteRefs, type Fleet, type FleetPolicy, type RefEdit } from "./file.js";
import { refuseUnrunnable } from "./kernels.js";
import { planFleet, planIsEmpty, toWire, type FleetPlan, type PlanEntry } from "./plan.js";
import { changeSteps, refuseDuringRollout } from "./rollout.js";

export interface PrepareOptions {
  environment?: string;
  /** Resolve tags and write the digests into the files (once every check passed). */
  pin?: boolean;
  /** With `pin`: resolve and report, but write nothing. */
  dryRun?: boolean;
  /** Refuse digests no trusted key signed. */
  trust?: TrustPolicy;
  registry?: RepositoryOptions;
}

/** At most this many registry reads at once. */
const REGISTRY_FAN_OUT = 8;

async function eachBounded<T>(items: readonly T[], work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(REGISTRY_FAN_OUT, items.length) }, async () => {
    while (next < items.length) await work(items[next++]!);
  }));
}

const repositoryOf = (p: FleetPolicy, options: RepositoryOptions | undefined) => new RemoteRepository(p.reference.registry, p.reference.repository, options ?? {});
const where = (p: FleetPolicy) => `${p.file}: policies[${p.index}].ref`;

/**
 * Loads the files and checks what they name against the registries: tags
 * refused (or pinned), every digest an Aegis policy, signed when `trust` is
 * given. Every problem is reported at once, and `pin` writes the files only
 * when there is none. Returns the fleet, and the policy name and program of
 * each digest (from the manifest's annotations, when it has them).
 */
export async function prepareFleet(paths: readonly string[], options: PrepareOptions = {}): Promise<{ fleet: Fleet; names: Map<string, string>; programs: Map<string, string>; pinned: RefEdit[] }> {
  const fleet = await loadFleetFiles(paths, options.environment !== undefined ? { environment: options.environment } : {});
  const environments = environmentsOf(fleet);
  if (environments.length > 1) throw new InputError("INVALID_ARGUMENT", `the fleet files describe several environments (${environments.map((e) => e ?? "(none)").join(", ")}): apply one at a time with --environment`);
  const problems: string[] = [];
  const pinned: RefEdit[] = [];
  await eachBounded(
    fleet.policies.filter((p) => !p.digest),
    async (p) => {
      const digest = await repositoryOf(p, options.registry)
        .resolve(p.reference.tag ?? "latest")
        .then((d) => d.digest, (err: unknown) => {
          problems.push(`${where(p)}: ${p.ref} is a tag and cannot be resolved (${(err as Error).message})`);
          return undefined;
        });
      if (!digest) return;
      const byDigest = formatReference({ ...p.reference, tag: undefined }, digest);
      if (!options.pin) return void problems.push(`${where(p)}: ${p.ref} is a tag, not a digest; it resolves to ${byDigest} (write that, or run with --pin)`);
      pinned.push({ file: p.file, index: p.index, name: p.name, from: p.ref, to: byDigest });
      p.digest = digest;
      p.ref = byDigest;
    },
  );
  if (problems.length > 0) throw new InputError("INVALID_REFERENCE", problems.sort().join("; "));

  const names = new Map<string, string>();
  const programs = new Map<string, string>();
  const checked = new Map<string, FleetPolicy>();
  for (const p of fleet.policies) if (!checked.has(`${p.reference.registry}/${p.reference.repository}@${p.digest}`)) checked.set(`${p.reference.registry}/${p.reference.repository}@${p.digest}`, p);
  await eachBounded([...checked.values()], async (p) => {
    const repo = repositoryOf(p, options.registry);
    try {
      const { manifest } = await readPolicyManifest(repo, await repo.resolve(p.digest!));
      const title = manifest.annotations?.[Annotation.Title];
      if (title) names.set(p.digest!, title);
      const program = manifest.annotations?.[PolicyAnnotation.Program];
      if (program) programs.set(p.digest!, program);
    } catch (err) {
      return void problems.push(`${where(p)}: ${p.ref}: ${(err as Error).message}`);
    }
    if (!options.trust) return;
    await verifyArtifact(repo, p.digest!, options.trust).catch((err: unknown) => problems.push(`${where(p)}: ${p.digest} is not signed by a trusted key: ${(err as Error).message}`));
  });
  if (problems.length > 0) throw new InputError("INVALID_REFERENCE", problems.sort().join("; "));
  // Written only now: a refused command leaves the files as they were.
  if (!options.dryRun) await rewriteRefs(fleet.files, pinned);
  return { fleet, names, programs, pinned };
}

/** Registers the files' artifacts the assigner does not know yet; returns the policy name of every registered digest. */
export async function registerArtifacts(client: AssignerClient, fleet: Fleet, names: Map<string, string>, options: { dryRun?: boolean } = {}): Promise<Map<string, string>> {
  const known = new Map((await client.artifacts()).artifacts.map((a) => [a.id, a.name]));
  const all = new Map([...names, ...[...known].filter(([, name]) => name)]);
  if (options.dryRun) return all;
  const missing = new Map<string, FleetPolicy>();
  for (const p of fleet.policies) if (!known.has(p.digest!) && !missing.has(p.digest!)) missing.set(p.digest!, p);
  await eachBounded([...missing.values()], async (p) => {
    const record = await client.call<{ name: string }>("POST", "/artifacts", { reference: formatReference({ ...p.reference, tag: undefined }, p.digest) });
    if (record.name) all.set(p.digest!, record.name);
  });
  return all;
}

export interface ApplyResult {
  plan: FleetPlan;
  applied: boolean;
  /** The desired-state version after applying (the plan's when nothing changed). */
  version: number;
  /** Times the plan was made again because another writer changed the desired state (412). */
  replans: number;
}

/**
 * Plans on the assigner's current state and applies the plan with If-Match;
 * on a 412 (another apply got there first) reads the state again, plans again
 * and retries, up to `attempts` times. `onPlan` sees each plan before it is
 * applied (to print it); a dry run stops after the first. A plan of more
 * changes than one request takes goes in several (changeSteps: each target's
 * changes in one, targets that only gain first),
 * each on the version the last one made: a failure part-way leaves some
 * made, and applying again plans the rest. Refused while a rollout runs.
 * A program added to a host whose agent reported a kernel that cannot run
 * it is refused (CONFLICT) before any request, a dry run's included, unless
 * `force` (the assigner refuses it too).
 */
export async function applyPlan(
  client: AssignerClient,
  desired: PlanEntry[],
  names: ReadonlyMap<string, string>,
  options: { prune?: boolean; dryRun?: boolean; force?: boolean; programs?: ReadonlyMap<string, string>; attempts?: number; onPlan?: (plan: FleetPlan, attempt: number) => void | Promise<void> } = {},
): Promise<ApplyResult> {
  const attempts = options.attempts ?? 5;
  for (let attempt = 1; ; attempt++) {
    const current = await client.desiredState();
    const plan = planFleet(desired, current, names, { prune: options.prune ?? false });
    await options.onPlan?.(plan, attempt);
    // Before any request (a dry run included): a refusal in a later one would leave the plan half made.
    if (!options.force) {
      const adds = plan.add.flatMap((a) => ("host" in a.target ? [{ artifactId: a.artifactId, hostId: a.target.host }] : []));
      await refuseUnrunnable(client, adds, options.programs ? { programs: options.programs } : {});
    }
    if (options.dryRun || planIsEmpty(plan)) return { plan, applied: false, version: current.version, replans: attempt - 1 };
    // An apply while a rollout runs would give every host the new digests at once, past its rings, or undo its rollback.
    await refuseDuringRollout(client, "an apply");
    try {
      let version = plan.version;
      for (const step of changeSteps(plan.add.map(toWire), plan.remove.map(toWire))) version = (await client.changeAssignments(step, { ifMatch: version, force: options.force ?? false })).version;
      return { plan, applied: true, version, replans: attempt - 1 };
    } catch (err) {
      if (!(err instanceof AssignerError && err.code === "PRECONDITION_FAILED") || attempt >= attempts) throw err;
    }
  }
}


