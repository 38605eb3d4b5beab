// The Datapath: what the agent does to a host's kernel, behind one interface
// with kernel implementations, libbpf in-process + tc (LibbpfDatapath) and
// bpftool + tc (BpftoolDatapath), and one in memory (MemoryDatapath, for
// tests without root). Programs are keyed by the
// artifact digest they came from, and everything a reconciler needs can be
// read back (loaded(), attached()), so the agent compares desired with
// actual instead of trusting what it remembers.
import { EbpfError } from "./errors.js";
import type { CompiledRules } from "./rules.js";
import { TC_DIRECTIONS, type TcDirection } from "./tc.js";
import { byCodeUnit } from "../util/index.js";

/** A TC clsact hook: one filter per (iface, direction, pref). */
export interface Hook {
  iface: string;
  direction: TcDirection;
  /** tc filter priority; replacing the program at the same pref leaves no gap. */
  pref: number;
}

export interface LoadedProgram {
  /** The artifact digest the program came from (`sha256:<hex>`). */
  id: string;
  /** The kernel's program id: what attached() reports at a hook running it. */
  programId: number;
}

export interface Attachment extends Hook {
  programId: number;
  /** The loaded program at this hook; undefined when it is not one this Datapath loaded. */
  id: string | undefined;
}

/** A network device hooks can be on. */
export interface NetInterface {
  name: string;
  loopback: boolean;
  /**
   * Whether the device carries Ethernet frames (link type ether, and the
   * loopback, whose packets carry an Ethernet header too). aegis_net
   * reads the IP header after a 14-byte Ethernet header; a tunnel (WireGuard,
   * tun, ipip, gre) hands it bare IP packets, which it would misread.
   */
  ethernet: boolean;
}

export interface Datapath {
  /**
   * Loads the object, fills its maps with the rules and pins it under the
   * id. Nothing stays pinned on failure, and a program is only listed once
   * filled. Idempotent: an id already loaded is returned as it is (the id is
   * a content digest, so the same id is the same program).
   */
  load(id: string, object: Buffer, rules: CompiledRules): Promise<LoadedProgram>;
  /** The programs loaded under this Datapath's pin root, sorted by id. */
  loaded(): Promise<LoadedProgram[]>;
  /**
   * Attaches the loaded program at the hook, atomically replacing whatever
   * filter is at that pref (`tc filter replace`). Idempotent. NOT_LOADED if
   * the id is not loaded; TC_FAILED if the device does not exist.
   */
  attach(id: string, hook: Hook): Promise<void>;
  /** Removes the filter at the hook; NOT_ATTACHED if there is none. */
  detach(hook: Hook): Promise<void>;
  /** The devices that exist now, sorted by name (the agent attaches to new ones as they appear). */
  interfaces(): Promise<NetInterface[]>;
  /**
   * Every BPF filter at the clsact hooks, read back from the kernel, sorted.
   * detach() removes whatever runs at a hook, so compare ids before.
   */
  attached(): Promise<Attachment[]>;
  /**
   * The prefs of every filter at the clsact hooks, whatever its kind: those
   * of attached() and of filters that run no BPF program (a u32, flower or
   * matchall filter: OVS offload's, an operator's). tc takes no BPF filter
   * at a pref such a filter holds, so a new policy's pref must be none of
   * these; this Datapath never detaches or replaces them.
   */
  prefsInUse(): Promise<number[]>;
  /**
   * Names this boot of the kernel. A program id is unique among running
   * programs within one boot only (ids start again after a reboot), so a
   * program id kept past the process is only meaningful with this.
   */
  boot(): Promise<string>;
  /** Packets matched per rule (all, or the given rule indexes in order); NOT_LOADED if not loaded. */
  counters(id: string, indexes?: number[]): Promise<number[]>;
  /**
   * Removes the program's pins; false if it was not loaded. STILL_ATTACHED
   * while a hook runs it: detach first, so no filter is left that cannot be
   * traced back to a digest.
   */
  unpin(id: string): Promise<boolean>;
}

const ID = /^sha256:[0-9a-f]{64}$/;

/** The pin directory name for an id: `sha256-<hex>`, as the agent pins under /sys/fs/bpf/aegis/sha256-<hex>. */
export function pinName(id: string): string {
  if (!ID.test(id)) throw new EbpfError("INVALID_PROGRAM_ID", `program id "${id}" is not a sha256 digest (sha256:<64 hex>)`);
  return id.replace(":", "-");
}

/** The id a pin directory name stands for, or undefined if it is not one. */
export function idOfPinName(name: string): string | undefined {
  const id = name.replace("-", ":");
  return ID.test(id) ? id : undefined;
}

/** Refuses what tc would misread: pref 0 makes tc pick one, above 0xffff wraps. */
export function checkHook(hook: Hook): void {
  if (!TC_DIRECTIONS.includes(hook.direction) || !Number.isInteger(hook.pref) || hook.pref < 1 || hook.pref > 0xffff || !/^[^\s/:#\\"']{1,15}$/.test(hook.iface)) {
    throw new EbpfError("INVALID_HOOK", `invalid hook ${hookName(hook)}: direction ingress or egress, pref 1-65535, a device name (with no quote, # or \\, which tc -batch reads)`);
  }
}

export function hookName(hook: Hook): string {
  return `${hook.iface} ${hook.direction} pref ${hook.pref}`;
}

export function compareHooks(a: Hook, b: Hook): number {
  return byCodeUnit(a.iface, b.iface) || byCodeUnit(a.direction, b.direction) || a.pref - b.pref;
}
