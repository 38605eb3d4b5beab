// The Datapath on the real kernel, whatever loads the programs: a
// ProgramLoader (bpftool, or libbpf in-process) loads, fills and pins, tc
// attaches, and both are read back (pins under the pin root, `tc -j filter
// show`, program ids) so the state survives the process and can be adopted
// after a restart, by either loader: both pin the same layout.
import { readdir, readFile, rename } from "node:fs/promises";
import { join } from "node:path";
import { checkPinRoot, findPinned, unpin, type Pinned } from "./bpftool.js";
import {
  checkHook,
  compareHooks,
  hookName,
  idOfPinName,
  pinName,
  type Attachment,
  type Datapath,
  type Hook,
  type LoadedProgram,
  type NetInterface,
} from "./datapath.js";
import { EbpfError } from "./errors.js";
import type { ToolOptions } from "./exec.js";
import type { CompiledRules } from "./rules.js";
import { attachTc, detachTc, listClsact, listLinks, listTc } from "./tc.js";
import { byCodeUnit } from "../util/index.js";

export const DEFAULT_PIN_ROOT = "/sys/fs/bpf/aegis";
// A program is loaded and filled here, then renamed to its id, so a pin
// directory named after an id is complete unless a crash cut its removal
// short (a directory without its program pin): load and unpin remove such a
// remainder, and load removes whatever staging a crash left. One process
// drives a pin root at a time (the agent serializes its changes).
const STAGING = "loading-";

/** What differs between the kernel Datapaths: how programs are loaded and their state read. */
export interface ProgramLoader {
  /** Loads the object, fills its maps and pins it at pinDir (which must not exist); nothing stays pinned on failure. */
  loadProgram(object: Buffer, rules: CompiledRules, pinDir: string): Promise<Pinned>;
  /** The kernel's id of a pinned program. */
  programId(progPin: string): Promise<number>;
  /** Packets matched per rule, summed over CPUs: all, or the given rule indexes in order. */
  readCounters(mapsDir: string, indexes?: number[]): Promise<number[]>;
}

export interface KernelDatapathOptions {
  /** Where programs are pinned, one directory per id; default /sys/fs/bpf/aegis. */
  pinRoot?: string;
  /**
   * A network namespace from `ip netns add` to work in (tests); default: the
   * current one. Devices and filters are those of this namespace only.
   */
  netns?: string;
  /** How long one tool run (tc, ip, bpftool) may take before it is killed and fails TIMEOUT (ms); default 30 s. */
  commandTimeoutMs?: number;
  /** Aborting kills the tool runs under way (the agent stopping), which reject with its reason. */
  signal?: AbortSignal;
}

/** The bounds of this Datapath's tool runs (exec.ts). */
export function toolOptions(options: KernelDatapathOptions): ToolOptions {
  return { ...(options.commandTimeoutMs !== undefined ? { timeoutMs: options.commandTimeoutMs } : {}), ...(options.signal ? { signal: options.signal } : {}) };
}

export class KernelDatapath implements Datapath {
  readonly pinRoot: string;
  readonly netns: string | undefined;
  private readonly tool: ToolOptions;
  private bootId: Promise<string> | undefined;

  constructor(
    private readonly loader: ProgramLoader,
    options: KernelDatapathOptions = {},
  ) {
    this.pinRoot = options.pinRoot ?? DEFAULT_PIN_ROOT;
    this.netns = options.netns;
    this.tool = toolOptions(options);
  }

  /** The pins of a loaded program (for test runs and operators); NOT_LOADED if not loaded. */
  async pinned(id: string): Promise<Pinned> {
    await checkPinRoot(this.pinRoot);
    const pinned = await findPinned(join(this.pinRoot, pinName(id)));
    if (!pinned) throw new EbpfError("NOT_LOADED", `program ${id} is not loaded under ${this.pinRoot}`);
    return pinned;
  }

  async load(id: string, object: Buffer, rules: CompiledRules): Promise<LoadedProgram> {
    await checkPinRoot(this.pinRoot);
    const pinDir = join(this.pinRoot, pinName(id));
    const existing = await findPinned(pinDir);
    if (existing) return { id, programId: await this.loader.programId(existing.progPin) };
    await unpin(pinDir); // what a crash mid-unpin left, if anything: the rename below needs the name free
    await this.removeStaging(); // what crashes mid-load left, this id's or another's
    const staging = join(this.pinRoot, `${STAGING}${pinName(id)}`);
    await this.loader.loadProgram(object, rules, staging);
    try {
      await rename(staging, pinDir);
    } catch (err) {
      await unpin(staging);
      throw new EbpfError("LOAD_FAILED", `cannot pin ${id} at ${pinDir}: ${(err as Error).message}`, { cause: err });
    }
    return { id, programId: await this.loader.programId((await this.pinned(id)).progPin) };
  }

  /** Removes every staging directory under the pin root: with one process per pin root, any there is a crash's. */
  private async removeStaging(): Promise<void> {
    const names = await readdir(this.pinRoot).catch(() => []);
    for (const name of names) if (name.startsWith(STAGING)) await unpin(join(this.pinRoot, name));
  }

  async loaded(): Promise<LoadedProgram[]> {
    await checkPinRoot(this.pinRoot);
    const names = await readdir(this.pinRoot).catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return [];
      throw new EbpfError("BPFFS_FAILED", `cannot read ${this.pinRoot}: ${err.message}`, { cause: err });
    });
    const programs: LoadedProgram[] = [];
    for (const name of names.sort()) {
      const id = idOfPinName(name);
      const pinned = id && (await findPinned(join(this.pinRoot, name)));
      if (id && pinned) programs.push({ id, programId: await this.loader.programId(pinned.progPin) });
    }
    return programs;
  }

  /** The kernel's random boot id (proc(5)); a network namespace shares its host's. Read once: it cannot change while this process runs. */
  boot(): Promise<string> {
    this.bootId ??= readFile("/proc/sys/kernel/random/boot_id", "utf8").then((text) => text.trim());
    return this.bootId;
  }

  async attach(id: string, hook: Hook): Promise<void> {
    checkHook(hook);
    const { progPin } = await this.pinned(id);
    await attachTc({ ...hook, netns: this.netns }, progPin, this.tool);
  }

  async detach(hook: Hook): Promise<void> {
    checkHook(hook);
    // A missing device has nothing attached either.
    const filters = await listTc(this.netns, hook.iface, this.tool).catch(() => []);
    if (!filters.some((f) => compareHooks(f, hook) === 0)) throw new EbpfError("NOT_ATTACHED", `nothing is attached at ${hookName(hook)}`);
    await detachTc({ ...hook, netns: this.netns }, this.tool);
  }

  async interfaces(): Promise<NetInterface[]> {
    return (await listLinks(this.netns, this.tool)).sort((a, b) => byCodeUnit(a.name, b.name));
  }

  async attached(): Promise<Attachment[]> {
    const [filters, programs] = await Promise.all([listTc(this.netns, undefined, this.tool), this.loaded()]);
    const ids = new Map(programs.map((p) => [p.programId, p.id]));
    return filters
      .map(({ iface, direction, pref, programId }) => ({ iface, direction, pref, programId, id: ids.get(programId) }))
      .sort(compareHooks);
  }

  async prefsInUse(): Promise<number[]> {
    return (await listClsact(this.netns, undefined, this.tool)).map((f) => f.pref);
  }

  async counters(id: string, indexes?: number[]): Promise<number[]> {
    return this.loader.readCounters((await this.pinned(id)).mapsDir, indexes);
  }

  async unpin(id: string): Promise<boolean> {
    const pinDir = join(this.pinRoot, pinName(id));
    const pinned = await findPinned(pinDir);
    if (!pinned) {
      await unpin(pinDir); // a removal a crash cut short: finished now
      return false;
    }
    const running = await this.loader.programId(pinned.progPin);
    const hooks = (await listTc(this.netns, undefined, this.tool)).filter((f) => f.programId === running);
    if (hooks.length > 0) {
      throw new EbpfError("STILL_ATTACHED", `program ${id} is still attached at ${hooks.map(hookName).join(", ")}: detach it first`);
    }
    await unpin(pinDir);
    return true;
  }
}
