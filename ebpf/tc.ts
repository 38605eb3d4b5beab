// Attaches pinned classifiers at a device's clsact hook with tc, and reads
// back what the kernel has attached there and which devices exist.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EbpfError } from "./errors.js";
import { run, type ToolOptions } from "./exec.js";

export type TcDirection = "ingress" | "egress";
export const TC_DIRECTIONS: readonly TcDirection[] = ["ingress", "egress"];

export interface TcHook {
  iface: string;
  direction: TcDirection;
  /**
   * tc filter priority; one per policy on a device. Filters run in pref
   * order and a program returning TC_ACT_UNSPEC hands over to the next.
   */
  pref: number;
  /** A network namespace from `ip netns add` (tests); default: the current one. */
  netns?: string;
}

/** A BPF classifier the kernel has at a hook, as `tc -j filter show` reports it. */
export interface TcFilter {
  iface: string;
  direction: TcDirection;
  pref: number;
  /** The kernel's program id, the same bpftool shows for a pin. */
  programId: number;
  name: string;
  tag: string;
}

/**
 * Attaches (or atomically replaces) the filter at hook.pref with a pinned
 * program, creating the clsact qdisc if the device has none (`qdisc replace`
 * keeps an existing clsact and its filters).
 */
export async function attachTc(hook: TcHook, progPin: string, tool: ToolOptions = {}): Promise<void> {
  // The pin goes into a `tc -batch` line: no whitespace or control character may end the line or start another
  // command, and iproute2 reads # as a comment, a trailing \ as a joined line and quotes as quoting.
  // eslint-disable-next-line no-control-regex -- finding control characters is the point
  if (/[\s\u0000-\u001f\u007f#\\"']/.test(progPin)) throw new EbpfError("INVALID_PIN_PATH", `cannot attach ${JSON.stringify(progPin)}: a pin path with whitespace, a control character, a quote, # or \\`);
  // One tc process for both commands (`tc -batch` stops at the first that
  // fails): a process start is most of an attach's time.
  const work = await mkdtemp(join(tmpdir(), "aegis-tc-"));
  try {
    const commands = join(work, "commands");
    await writeFile(commands, [
      `qdisc replace dev ${hook.iface} clsact`,
      `filter replace dev ${hook.iface} ${hook.direction} pref ${hook.pref} handle 1 bpf direct-action object-pinned ${progPin}`,
      "",
    ].join("\n"));
    await tc(hook.netns, `cannot attach ${progPin} at ${hook.iface} ${hook.direction}`, ["-batch", commands], tool);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Removes the filter at hook.pref; fails if there is none. */
export async function detachTc(hook: TcHook, tool: ToolOptions = {}): Promise<void> {
  await tc(hook.netns, `cannot detach pref ${hook.pref} from ${hook.iface} ${hook.direction}`, [
    "filter", "del", "dev", hook.iface, hook.direction, "pref", String(hook.pref),
  ], tool);
}

/** Every BPF classifier at the clsact hooks of the namespace's devices (or one device's). */
export async function listTc(netns?: string, iface?: string, tool: ToolOptions = {}): Promise<TcFilter[]> {
  return bpfFilters(await listClsact(netns, iface, tool));
}

/**
 * Every filter at the clsact hooks of the namespace's devices (or one
 * device's), whatever its kind: a u32, flower or matchall filter (another
 * tool's, OVS offload's) holds its pref as a BPF one does, and tc refuses a
 * BPF filter at it ("Protocol mismatch for filter with specified priority").
 */
export async function listClsact(netns?: string, iface?: string, tool: ToolOptions = {}): Promise<TcEntry[]> {
  // `qdisc show dev X` leaves out the dev field, so list them all and filter.
  const qdiscs = JSON.parse((await tc(netns, "cannot list qdiscs", ["-j", "qdisc", "show"], tool)) || "[]") as { kind: string; dev: string }[];
  const devices = qdiscs.filter((q) => q.kind === "clsact" && (!iface || q.dev === iface)).map((q) => q.dev);
  const entries: TcEntry[] = [];
  for (const dev of new Set(devices)) entries.push(...(await entriesAt(netns, dev, tool)));
  return entries;
}

/** A filter of any kind at a clsact hook, as `tc -j filter show` reports it. */
export interface TcEntry {
  iface: string;
  direction: TcDirection;
  pref: number;
  /** bpf, u32, flower, matchall… */
  kind: string;
  prog?: { id: number; name: string; tag: string } | undefined;
}

/** The BPF classifiers at one device's clsact hooks; none once the device is gone (entriesAt). */
export async function filtersAt(netns: string | undefined, dev: string, tool: ToolOptions = {}): Promise<TcFilter[]> {
  return bpfFilters(await entriesAt(netns, dev, tool));
}

function bpfFilters(entries: TcEntry[]): TcFilter[] {
  const filters: TcFilter[] = [];
  for (const { iface, direction, pref, kind, prog } of entries) {
    if (kind === "bpf" && prog) filters.push({ iface, direction, pref, programId: prog.id, name: prog.name, tag: prog.tag });
  }
  return filters;
}

/**
 * The filters at one device's clsact hooks; none once the device is gone:
 * one removed after the qdiscs were listed (a container's veth, a test's
 * pair) has nothing attached, and must not fail the listing of every other.
 */
async function entriesAt(netns: string | undefined, dev: string, tool: ToolOptions): Promise<TcEntry[]> {
  const entries: TcEntry[] = [];
  for (const direction of TC_DIRECTIONS) {
    let out: string;
    try {
      out = await tc(netns, `cannot list filters at ${dev} ${direction}`, ["-j", "filter", "show", "dev", dev, direction], tool);
    } catch (err) {
      if (err instanceof EbpfError && err.message.includes(`Cannot find device "${dev}"`)) return [];
      throw err;
    }
    // Each pref shows a chain entry without options, then its filters (a u32 one its hash tables too): each holds the pref.
    for (const entry of JSON.parse(out || "[]") as ShownFilter[]) entries.push({ iface: dev, direction, pref: entry.pref, kind: entry.kind, prog: entry.options?.prog });
  }
  return entries;
}

/** The namespace's network devices (`ip -j link show`). */
export async function listLinks(netns?: string, tool: ToolOptions = {}): Promise<{ name: string; loopback: boolean; ethernet: boolean }[]> {
  const args = ["-j", "link", "show"];
  const out = netns
    ? await run("TC_FAILED", "cannot list devices", "ip", ["-n", netns, ...args], tool)
    : await run("TC_FAILED", "cannot list devices", "ip", args, tool);
  return (JSON.parse(out || "[]") as { ifname: string; flags?: string[]; link_type?: string }[]).map((link) => ({
    name: link.ifname,
    loopback: link.flags?.includes("LOOPBACK") ?? false,
    // The loopback has an Ethernet header too (Linux gives lo eth_header_ops).
    ethernet: link.link_type === "ether" || link.link_type === "loopback",
  }));
}

interface ShownFilter {
  pref: number;
  kind: string;
  options?: { prog?: { id: number; name: string; tag: string } };
}

async function tc(netns: string | undefined, what: string, args: string[], tool: ToolOptions): Promise<string> {
  // nsenter switches only the network namespace; `ip netns exec` would also
  // remount /sys and hide the bpffs pins tc must open.
  if (netns) return run("TC_FAILED", what, "nsenter", [`--net=/run/netns/${netns}`, "tc", ...args], tool);
  return run("TC_FAILED", what, "tc", args, tool);
}
