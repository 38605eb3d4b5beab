// Carries out the planner's steps through a Datapath. Every step either
// completes or is undone, so a failure (kernel verifier, tc, a device gone)
// leaves the previous state in force; the caller reports it with its code.
import { compileRules, compareHooks, hookName, type Attachment, type Datapath, type Hook, type TcDirection } from "../ebpf/index.js";
import type { Direction } from "../policy/index.js";
import type { VerifiedArtifact } from "./fetch.js";
import type { Step } from "./plan.js";
import type { Reporter } from "./report.js";
import { recordOf, type InstalledRecord } from "./state.js";

function directionsOf(direction: Direction): TcDirection[] {
  return direction === "both" ? ["ingress", "egress"] : [direction];
}

/** The hooks a program with this direction runs at: each interface, each direction, one pref. */
function hooksFor(direction: Direction, ifaces: readonly string[], pref: number): Hook[] {
  return ifaces.flatMap((iface) => directionsOf(direction).map((d) => ({ iface, direction: d, pref }))).sort(compareHooks);
}

const same = (a: Hook, b: Hook) => a.iface === b.iface && a.direction === b.direction && a.pref === b.pref;

export class Executor {
  constructor(
    private readonly datapath: Datapath,
    private readonly reporter: Reporter,
  ) {}

  /**
   * Carries out one step. `records` (digest → record) is updated in place
   * on success; `verified` holds the bundle of every added or replacing digest.
   */
  async apply(step: Step, ifaces: readonly string[], records: Map<string, InstalledRecord>, verified: ReadonlyMap<string, VerifiedArtifact>): Promise<void> {
    switch (step.kind) {
      case "keep":
        return this.keep(step.program.id, ifaces, records);
      case "add":
        return this.install(step.program.id, step.pref, ifaces, records, verified, undefined);
      case "replace":
        return this.install(step.program.id, step.pref, ifaces, records, verified, step.old.id);
      case "remove":
        return this.remove(step.program.id, records);
    }
  }

  /** Loads the digest and attaches it at `pref`; with `old`, over old's hooks (tc filter replace), then retires old. */
  private async install(
    id: string,
    pref: number,
    ifaces: readonly string[],
    records: Map<string, InstalledRecord>,
    verified: ReadonlyMap<string, VerifiedArtifact>,
    old: string | undefined,
  ): Promise<void> {
    const artifact = verified.get(id);
    if (!artifact) throw new Error(`internal: ${id} was planned without a verified bundle`);
    const { policy, program } = artifact.bundle;
    const rules = compileRules(policy.rules);
    const loaded = await this.datapath.load(id, Buffer.from(program), rules);
    this.reporter.report({ event: "program_loaded", id, name: policy.name, version: policy.version, reason: `program id ${loaded.programId}` });
    const oldHooks = old ? await this.hooksOf(old) : [];
    const hooks = hooksFor(policy.attach.direction, ifaces, pref);
    const done: Hook[] = [];
    try {
      for (const hook of hooks) if (await this.attachUnlessGone(id, hook)) done.push(hook);
    } catch (err) {
      // Undo: the old program back where it was, nothing new left attached or pinned.
      for (const hook of done) {
        if (old && oldHooks.some((h) => same(h, hook))) await this.datapath.attach(old, hook).catch(() => undefined);
        else await this.datapath.detach(hook).catch(() => undefined);
      }
      await this.datapath.unpin(id).catch(() => undefined);
      throw err;
    }
    records.set(id, recordOf(policy, pref, { programId: loaded.programId, boot: await this.datapath.boot() }, ifaces.filter((i) => done.some((h) => h.iface === i))));
    this.reporter.report({ event: "attached", id, name: policy.name, version: policy.version, reason: `${done.map(hookName).join(", ")}` });
    if (old) {
      // Hooks the new version does not cover (an interface or direction it dropped).
      for (const hook of oldHooks) if (!hooks.some((h) => same(h, hook))) await this.datapath.detach(hook);
      await this.retire(old, records);
    }
  }

  private async remove(id: string, records: Map<string, InstalledRecord>): Promise<void> {
    for (const hook of await this.hooksOf(id)) await this.datapath.detach(hook);
    await this.retire(id, records);
  }

  private async retire(id: string, records: Map<string, InstalledRecord>): Promise<void> {
    await this.datapath.unpin(id);
    const record = records.get(id);
    records.delete(id);
    this.reporter.report({ event: "detached", id, ...(record ? { name: record.name, version: record.version } : {}), reason: "detached and unpinned" });
  }

  /**
   * A kept program is attached at every hook it should be: new interfaces,
   * and filters someone removed or replaced. A hook missing on an interface
   * it was attached on is drift: reported (`drift`, what was there instead)
   * before it is restored, and `since` starts again, since enforcement lapsed.
   */
  private async keep(id: string, ifaces: readonly string[], records: Map<string, InstalledRecord>): Promise<void> {
    const record = records.get(id);
    if (!record) return; // adopted without a record: left exactly as found
    const all = await this.datapath.attached();
    const missing = hooksFor(record.direction, ifaces, record.pref).filter((h) => !all.some((c) => c.id === id && same(c, h)));
    const known = new Set(record.ifaces ?? []);
    const drifted = missing.filter((h) => known.has(h.iface));
    if (drifted.length > 0) {
      const what = drifted.map((h) => {
        const other = all.find((c) => same(c, h));
        return `${hookName(h)} ${other ? `replaced by program id ${other.programId}` : "deleted"}`;
      });
      this.reporter.report({ event: "drift", id, name: record.name, version: record.version, reason: `${what.join(", ")}: restoring` });
    }
    // Every hook is tried: one that fails does not leave the others unrepaired (it fails the step after them).
    const attached: Hook[] = [];
    const failed: Hook[] = [];
    let failure: unknown;
    for (const hook of missing) {
      try {
        if (await this.attachUnlessGone(id, hook)) attached.push(hook);
      } catch (err) {
        failed.push(hook);
        failure ??= err;
      }
    }
    if (drifted.length > 0) record.since = new Date().toISOString();
    record.ifaces = ifaces.filter((i) => !failed.some((h) => h.iface === i));
    if (attached.length > 0) {
      this.reporter.report({ event: "attached", id, name: record.name, version: record.version, reason: `${attached.map(hookName).join(", ")}` });
    }
    if (failure !== undefined) throw failure;
  }

  /**
   * Attaches `id` at `hook`; false when its device went away since the
   * interfaces were listed (a container's veth, on a busy host): skipped,
   * not a failure that would undo the step on every other interface.
   */
  private async attachUnlessGone(id: string, hook: Hook): Promise<boolean> {
    try {
      await this.datapath.attach(id, hook);
      return true;
    } catch (err) {
      // Gone only when the kernel's listing says so: a listing that fails leaves the attach's own error.
      const present = await this.datapath.interfaces().then((all) => all.some((i) => i.name === hook.iface), () => true);
      if (present) throw err;
      return false;
    }
  }

  /** The hooks where the kernel runs the digest's program now. */
  private async hooksOf(id: string): Promise<Attachment[]> {
    return (await this.datapath.attached()).filter((a) => a.id === id);
  }
}
