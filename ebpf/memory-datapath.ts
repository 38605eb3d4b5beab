// The Datapath in memory, for tests of what drives it (the agent's
// executor) without root: the same semantics and error codes as
// BpftoolDatapath (the conformance suite runs on both), plus failures to
// inject, counters to set, and filters to tamper with as someone else would.
import { randomUUID } from "node:crypto";
import {
  checkHook,
  compareHooks,
  hookName,
  pinName,
  type Attachment,
  type Datapath,
  type Hook,
  type LoadedProgram,
  type NetInterface,
} from "./datapath.js";
import { EbpfError, type EbpfErrorCode } from "./errors.js";
import type { CompiledRules } from "./rules.js";
import { byCodeUnit } from "../util/index.js";

export type DatapathOperation = "load" | "attach" | "detach" | "counters" | "unpin";

// The code each operation fails with on the real kernel.
const FAILURE: Record<DatapathOperation, EbpfErrorCode> = {
  load: "LOAD_FAILED",
  attach: "TC_FAILED",
  detach: "TC_FAILED",
  counters: "BPFTOOL_FAILED",
  unpin: "BPFFS_FAILED",
};

// What the object must start with: an ELF header (the kernel's loader would refuse anything else).
const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);

/**
 * One "kernel": share it between MemoryDatapaths to model an agent restart.
 * Devices come and go with addInterface and removeInterface ("lo" is the
 * loopback; the rest are Ethernet devices unless added as tunnels).
 */
export class MemoryKernel {
  /** This kernel's boot: a new MemoryKernel is a reboot (program ids start again at 1). */
  readonly boot = randomUUID();
  readonly programs = new Map<string, { programId: number; counters: number[] }>();
  /** Filters by hookName. */
  readonly filters = new Map<string, Attachment>();
  readonly interfaces: Set<string>;
  /** Devices that carry bare IP packets, not Ethernet frames (NetInterface.ethernet). */
  readonly tunnels = new Set<string>();
  nextProgramId = 1;

  constructor(interfaces: readonly string[] = ["lo", "eth0", "eth1"]) {
    this.interfaces = new Set(interfaces);
  }

  addInterface(name: string, options: { tunnel?: boolean } = {}): void {
    this.interfaces.add(name);
    if (options.tunnel) this.tunnels.add(name);
  }

  /** Drops every pin, as a remount of bpffs would: the attached programs keep running, but nothing names them by digest. */
  losePins(): void {
    this.programs.clear();
  }

  /** Removes a device and, as the kernel does, every filter on it. */
  removeInterface(name: string): void {
    this.interfaces.delete(name);
    this.tunnels.delete(name);
    for (const [key, filter] of this.filters) if (filter.iface === name) this.filters.delete(key);
  }
}

export interface MemoryDatapathOptions {
  /** A fresh kernel's devices (attach elsewhere fails with TC_FAILED); default lo, eth0, eth1. */
  interfaces?: readonly string[];
  /** State to share with another instance (a restarted agent adopts it). */
  kernel?: MemoryKernel;
}

export class MemoryDatapath implements Datapath {
  readonly kernel: MemoryKernel;
  private readonly failures = new Map<DatapathOperation, { error: EbpfError; skip: number }>();

  constructor(options: MemoryDatapathOptions = {}) {
    this.kernel = options.kernel ?? new MemoryKernel(options.interfaces);
  }

  /**
   * Makes a call of `operation` fail with this code (as the kernel or a tool
   * would), once: the next one, or the one after `skip` calls that succeed
   * (the second attach of a step, with hooks already attached to undo).
   */
  failNext(operation: DatapathOperation, code: EbpfErrorCode = FAILURE[operation], skip = 0): void {
    this.failures.set(operation, { error: new EbpfError(code, `injected failure of ${operation}`), skip });
  }

  /** Sets a loaded program's per-rule counters, as traffic would. */
  setCounters(id: string, counters: number[]): void {
    const program = this.program(id);
    if (counters.length > program.counters.length) throw new Error(`program ${id} has ${program.counters.length} counters, not ${counters.length}`);
    counters.forEach((n, i) => (program.counters[i] = n));
  }

  /** Puts a program this Datapath did not load at a hook, as another tool would; like the kernel's, its id is not given to another program. */
  attachForeign(hook: Hook, programId = 1_000_000 + this.kernel.nextProgramId++): void {
    this.kernel.filters.set(hookName(hook), { ...hook, programId, id: undefined });
    this.kernel.nextProgramId = Math.max(this.kernel.nextProgramId, programId + 1);
  }

  async load(id: string, object: Buffer, rules: CompiledRules): Promise<LoadedProgram> {
    pinName(id); // the same INVALID_PROGRAM_ID as the real one
    this.injected("load");
    const existing = this.kernel.programs.get(id);
    if (existing) return { id, programId: existing.programId };
    if (!object.subarray(0, 4).equals(ELF_MAGIC)) throw new EbpfError("LOAD_FAILED", `cannot load ${id}: not an ELF object`);
    const programId = this.kernel.nextProgramId++;
    this.kernel.programs.set(id, { programId, counters: new Array<number>(rules.sizes.rules).fill(0) });
    return { id, programId };
  }

  async loaded(): Promise<LoadedProgram[]> {
    return [...this.kernel.programs].map(([id, { programId }]) => ({ id, programId })).sort((a, b) => byCodeUnit(a.id, b.id));
  }

  async attach(id: string, hook: Hook): Promise<void> {
    checkHook(hook);
    const { programId } = this.program(id);
    this.injected("attach");
    if (!this.kernel.interfaces.has(hook.iface)) {
      throw new EbpfError("TC_FAILED", `cannot add clsact to ${hook.iface}: Cannot find device "${hook.iface}"`);
    }
    const { iface, direction, pref } = hook;
    this.kernel.filters.set(hookName(hook), { iface, direction, pref, programId, id });
  }

  async detach(hook: Hook): Promise<void> {
    checkHook(hook);
    if (!this.kernel.filters.has(hookName(hook))) throw new EbpfError("NOT_ATTACHED", `nothing is attached at ${hookName(hook)}`);
    this.injected("detach");
    this.kernel.filters.delete(hookName(hook));
  }

  async interfaces(): Promise<NetInterface[]> {
    return [...this.kernel.interfaces].sort().map((name) => ({ name, loopback: name === "lo", ethernet: !this.kernel.tunnels.has(name) }));
  }

  async attached(): Promise<Attachment[]> {
    // Like the kernel, a filter names a program id; which digest it is comes from what is loaded.
    const ids = new Map([...this.kernel.programs].map(([id, { programId }]) => [programId, id]));
    return [...this.kernel.filters.values()].map((f) => ({ ...f, id: ids.get(f.programId) })).sort(compareHooks);
  }

  /** Its filters' prefs: the memory kernel has BPF filters alone (attachForeign's included). */
  async prefsInUse(): Promise<number[]> {
    return [...this.kernel.filters.values()].map((f) => f.pref);
  }

  async boot(): Promise<string> {
    return this.kernel.boot;
  }

  async counters(id: string, indexes?: number[]): Promise<number[]> {
    const { counters } = this.program(id);
    this.injected("counters");
    if (!indexes) return [...counters];
    return indexes.map((i) => {
      const n = counters[i];
      if (n === undefined) throw new EbpfError("BPFTOOL_FAILED", `cannot read the counters of ${id}: no rule ${i}`);
      return n;
    });
  }

  async unpin(id: string): Promise<boolean> {
    pinName(id);
    const program = this.kernel.programs.get(id);
    if (!program) return false;
    const hooks = [...this.kernel.filters.values()].filter((f) => f.programId === program.programId);
    if (hooks.length > 0) {
      throw new EbpfError("STILL_ATTACHED", `program ${id} is still attached at ${hooks.map(hookName).join(", ")}: detach it first`);
    }
    this.injected("unpin");
    this.kernel.programs.delete(id);
    return true;
  }

  private program(id: string): { programId: number; counters: number[] } {
    pinName(id);
    const program = this.kernel.programs.get(id);
    if (!program) throw new EbpfError("NOT_LOADED", `program ${id} is not loaded`);
    return program;
  }

  private injected(operation: DatapathOperation): void {
    const failure = this.failures.get(operation);
    if (!failure) return;
    if (failure.skip-- > 0) return;
    this.failures.delete(operation);
    throw failure.error;
  }
}
