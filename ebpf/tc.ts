// Attaches pinned classifiers at a device's clsact hook with tc.
import { run } from "./exec.js";

export type TcDirection = "ingress" | "egress";

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

/**
 * Attaches (or atomically replaces) the filter at hook.pref with a pinned
 * program, creating the clsact qdisc if the device has none.
 */
export async function attachTc(hook: TcHook, progPin: string): Promise<void> {
  await tc(hook, `cannot add clsact to ${hook.iface}`, ["qdisc", "replace", "dev", hook.iface, "clsact"]);
  await tc(hook, `cannot attach ${progPin} at ${hook.iface} ${hook.direction}`, [
    "filter", "replace", "dev", hook.iface, hook.direction, "pref", String(hook.pref), "handle", "1",
    "bpf", "direct-action", "object-pinned", progPin,
  ]);
}

/** Removes the filter at hook.pref; fails if there is none. */
export async function detachTc(hook: TcHook): Promise<void> {
  await tc(hook, `cannot detach pref ${hook.pref} from ${hook.iface} ${hook.direction}`, [
    "filter", "del", "dev", hook.iface, hook.direction, "pref", String(hook.pref),
  ]);
}

async function tc(hook: TcHook, what: string, args: string[]): Promise<void> {
  // nsenter switches only the network namespace; `ip netns exec` would also
  // remount /sys and hide the bpffs pins tc must open.
  if (hook.netns) await run("TC_FAILED", what, "nsenter", [`--net=/run/netns/${hook.netns}`, "tc", ...args]);
  else await run("TC_FAILED", what, "tc", args);
}
