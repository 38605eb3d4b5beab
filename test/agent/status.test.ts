// `aegis agent status`: the rows from the records and the Datapath's
// read-only calls (MemoryDatapath, no root), the table, and the CLI as root
// on a real program pinned under a test pin root.
import { mkdtempSync, rmSync } from "node:fs";
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { allowIndexes, collectStatus, StateDir, STATUS_HEADER, statusCells, type InstalledRecord, type StatusRow } from "../../agent/index.js";
import { table } from "../../cli/output.js";
import { BpftoolDatapath, compileProgram, compileRules, MemoryDatapath, testRun } from "../../ebpf/index.js";
import type { Policy } from "../../policy/index.js";
import { aegis } from "../cli/run.js";
import { idOf, RULES } from "../ebpf/datapath-conformance.js";
import { packet } from "../ebpf/packet.js";

const work = mkdtempSync(join(tmpdir(), "aegis-status-"));
const pinRoot = `/sys/fs/bpf/aegis-test-status-${process.pid}`;
afterAll(async () => {
  rmSync(work, { recursive: true, force: true });
  await rm(pinRoot, { recursive: true, force: true });
});

/** Enough of an ELF object for the MemoryDatapath. */
const ELF = Buffer.from("\x7fELF object", "latin1");
const record = (name: string, extra: Partial<InstalledRecord> = {}): InstalledRecord => ({ name, version: "1.2.0", direction: "egress", pref: 4000, rules: RULES.length, since: "2026-11-25T10:00:00.000Z", ...extra });

describe("agent status rows and table", () => {
  it("joins the records with the pins, filters and counters; a program missing on either side is shown as such", async () => {
    const datapath = new MemoryDatapath();
    const [a, b, c] = [idOf("a"), idOf("b"), idOf("c")];
    await datapath.load(a, ELF, compileRules(RULES));
    await datapath.load(b, ELF, compileRules(RULES));
    for (const iface of ["eth1", "eth0"]) await datapath.attach(a, { iface, direction: "egress", pref: 4000 });
    // Rule 2 is an allow rule: the 5 packets it matched were let through, not dropped.
    datapath.setCounters(a, [3, 4, 5]);
    // b: pinned, no record (a crash between load and record); c: recorded, no longer pinned.
    const { since: _, ...noSince } = record("no-since");
    const rows = await collectStatus(datapath, new Map<string, Partial<InstalledRecord>>([[a, record("block-icmp", { allows: allowIndexes(RULES) })], [c, noSince]]));
    expect(rows, "one row per program, by name").toEqual<StatusRow[]>([
      { id: b, name: "", version: "", interfaces: [], direction: "", drops: 0, pinned: true, programId: expect.any(Number) as number },
      { id: a, name: "block-icmp", version: "1.2.0", interfaces: ["eth0", "eth1"], direction: "egress", since: "2026-11-25T10:00:00.000Z", drops: 7, pinned: true, programId: expect.any(Number) as number },
      { id: c, name: "no-since", version: "1.2.0", interfaces: [], direction: "egress", pinned: false },
    ]);

    const lines = table(STATUS_HEADER, statusCells(rows)).split("\n");
    expect(lines[0], "the header").toMatch(/^DIGEST\s+POLICY\s+VERSION\s+INTERFACES\s+DIRECTION\s+ATTACHED SINCE\s+DROPS$/);
    expect(lines[2]?.split(/\s{2,}/), "the enforcing row").toEqual([a.slice(0, 19), "block-icmp", "1.2.0", "eth0,eth1", "egress", "2026-11-25T10:00:00.000Z", "7"]);
    expect(lines[1]?.split(/\s{2,}/), "the unrecorded program").toEqual([b.slice(0, 19), "(unknown)", "-", "-", "-", "-", "0"]);
    expect(lines[3]?.split(/\s{2,}/), "the recorded program no longer pinned, without a since").toEqual([`${c.slice(0, 19)} (not pinned)`, "no-since", "1.2.0", "-", "egress", "-", "-"]);
    expect(lines[2]!.indexOf("egress"), "columns aligned").toBe(lines[0]!.indexOf("DIRECTION"));
  });
});

describe("aegis agent status (root, real pins)", () => {
  it("prints the table and --json for a program pinned under the pin root, with its drops", async () => {
    if (process.getuid?.() !== 0) throw new Error("test/agent/status.test.ts loads an eBPF program: run it as root");
    const id = idOf("status");
    const policy: Policy = { name: "status-policy", version: "2.0.0", description: "", program: "aegis_net", attach: { hook: "tc", direction: "egress" }, rules: RULES };
    const datapath = new BpftoolDatapath({ pinRoot });
    await datapath.load(id, await compileProgram(policy), compileRules(RULES));
    await testRun((await datapath.pinned(id)).progPin, packet({ src: "10.98.0.1", dst: "10.99.0.1", protocol: "icmp" }));
    const stateDir = join(work, "state");
    const state = new StateDir(stateDir);
    await state.init();
    await state.saveInstalled(new Map([[id, record("status-policy", { version: "2.0.0" })]]));

    const table = await aegis(["agent", "status", "--state-dir", stateDir, "--pin-root", pinRoot]);
    expect(table.code, table.stderr).toBe(0);
    const lines = table.stdout.trimEnd().split("\n");
    expect(lines[0], "header").toMatch(/^DIGEST\s+POLICY/);
    expect(lines[1]?.split(/\s{2,}/), "the pinned program, one drop").toEqual([id.slice(0, 19), "status-policy", "2.0.0", "-", "egress", "2026-11-25T10:00:00.000Z", "1"]);

    const json = await aegis(["agent", "status", "--state-dir", stateDir, "--pin-root", pinRoot, "--json"]);
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout), "--json").toEqual({ programs: [expect.objectContaining({ id, name: "status-policy", version: "2.0.0", drops: 1, pinned: true })] });

    const empty = await aegis(["agent", "status", "--state-dir", join(work, "none"), "--pin-root", `${pinRoot}-none`]);
    expect(empty.stdout, "nothing enforced").toMatch(/^nothing enforced/);
  });
});
