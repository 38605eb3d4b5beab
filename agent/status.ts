// `aegis agent status`: what this host enforces, from the agent's records
// (installed.json) and the kernel's pins, filters and counters, read through
// the Datapath's read-only calls. Nothing here loads, attaches or changes
// anything, so it can run beside a running agent.
import type { Datapath } from "../ebpf/index.js";
import { dropCounters, type InstalledRecord } from "./state.js";
import { byCodeUnit } from "../util/index.js";

/** One program pinned on this host, or recorded as installed. */
export interface StatusRow {
  id: string;
  /** Empty when the program is pinned but not in the agent's records. */
  name: string;
  version: string;
  interfaces: string[];
  direction: string;
  /** When the agent installed it; absent in records that do not say. */
  since?: string;
  /** Packets its drop rules dropped (its allow rules' matches left out); absent when the counters cannot be read. */
  drops?: number;
  pinned: boolean;
  programId?: number;
}

/** Every program pinned or recorded, ordered by policy name then digest. */
export async function collectStatus(datapath: Datapath, records: ReadonlyMap<string, Partial<InstalledRecord>>): Promise<StatusRow[]> {
  const [loaded, attached] = await Promise.all([datapath.loaded(), datapath.attached()]);
  const ids = new Set([...loaded.map((p) => p.id), ...records.keys()]);
  const rows: StatusRow[] = [];
  for (const id of ids) {
    const record = records.get(id);
    const program = loaded.find((p) => p.id === id);
    const hooks = attached.filter((a) => a.id === id);
    const counters = program ? await datapath.counters(id).catch(() => undefined) : undefined;
    const directions = [...new Set(hooks.map((h) => h.direction))].sort();
    rows.push({
      id,
      name: record?.name ?? "",
      version: record?.version ?? "",
      interfaces: [...new Set(hooks.map((h) => h.iface))].sort(),
      direction: record?.direction ?? (directions.length === 2 ? "both" : (directions[0] ?? "")),
      ...(record?.since ? { since: record.since } : {}),
      ...(counters ? { drops: dropCounters(counters, record?.allows).reduce((sum, [, n]) => sum + n, 0) } : {}),
      pinned: program !== undefined,
      ...(program ? { programId: program.programId } : {}),
    });
  }
  return rows.sort((a, b) => byCodeUnit(a.name, b.name) || byCodeUnit(a.id, b.id));
}

/** The header of `aegis agent status`'s table (cli/output.ts prints it). */
export const STATUS_HEADER = ["DIGEST", "POLICY", "VERSION", "INTERFACES", "DIRECTION", "ATTACHED SINCE", "DROPS"] as const;

/** The rows as table cells under STATUS_HEADER; "-" for what is unknown or absent. */
export function statusCells(rows: readonly StatusRow[]): string[][] {
  return rows.map((r) => [
    `${r.id.slice(0, "sha256:".length + 12)}${r.pinned ? "" : " (not pinned)"}`,
    r.name || "(unknown)",
    r.version || "-",
    r.interfaces.join(",") || "-",
    r.direction || "-",
    r.since ?? "-",
    r.drops === undefined ? "-" : String(r.drops),
  ]);
}
