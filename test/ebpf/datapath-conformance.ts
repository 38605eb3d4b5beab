// One conformance suite for every Datapath implementation, as the registry
// Targets and the assigner stores have theirs: the agent relies on exactly
// these semantics (ids, idempotence, errors, what is read back).
import { createHash } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { compareHooks, compileProgram, compileRules, type Datapath, type Hook } from "../../ebpf/index.js";
import type { Rule } from "../../policy/index.js";
import { byCodeUnit } from "../../util/index.js";
import type { PacketSpec } from "./packet.js";

export interface DatapathFixture {
  datapath: Datapath;
  /** Two devices that exist where the datapath attaches; the second is the loopback. */
  ifaces: [string, string];
  /** Makes program `id` match rule `rule` once (`packet` is a packet that matches it). */
  hit(id: string, rule: number, packet: PacketSpec): Promise<void>;
  /** Another instance over the same kernel state and pin root: an agent restart. */
  reopen(): Datapath;
  /** Attaches a program this datapath did not load at the hook, as another tool would. */
  attachForeign(hook: Hook): Promise<void>;
}

export const RULES: Rule[] = [
  { action: "drop", dst: "10.99.0.1/32", protocol: "icmp" },
  { action: "drop", dst: "10.99.0.2/32", protocol: "tcp", ports: { from: 80, to: 80 } },
  { action: "allow", dst: "10.99.0.3/32", protocol: "any" },
];
const ICMP: PacketSpec = { src: "10.98.0.1", dst: "10.99.0.1", protocol: "icmp" };
const TCP_80: PacketSpec = { src: "10.98.0.1", dst: "10.99.0.2", protocol: "tcp", dport: 80 };

/** A digest-shaped id per label. */
export const idOf = (label: string) => `sha256:${createHash("sha256").update(label).digest("hex")}`;

export function datapathConformance(name: string, open: () => Promise<DatapathFixture>): void {
  describe(`Datapath conformance: ${name}`, () => {
    let object: Buffer;
    const rules = compileRules(RULES);
    const [a, b, c] = [idOf("a"), idOf("b"), idOf("c")];

    beforeAll(async () => {
      object = await compileProgram({ name: "conformance", version: "1.0.0", description: "", program: "aegis_net", attach: { hook: "tc", direction: "egress" }, rules: RULES });
    }, 30_000);

    it("loads and fills a program under its id, idempotently, and lists it", async () => {
      const { datapath } = await open();
      expect(await datapath.loaded()).toEqual([]);
      const first = await datapath.load(a, object, rules);
      expect(first, "load returns the id and the kernel's program id").toEqual({ id: a, programId: expect.any(Number) as number });
      expect(await datapath.load(a, object, rules), "loading an id again keeps the same program").toEqual(first);
      const second = await datapath.load(b, object, rules);
      expect(second.programId, "another id is another program").not.toBe(first.programId);
      expect(await datapath.loaded()).toEqual([first, second].sort((x, y) => byCodeUnit(x.id, y.id)));
      expect(await datapath.counters(a), "a fresh program has one zero counter per rule").toEqual([0, 0, 0]);
    });

    it("lists the devices, telling the loopback and Ethernet devices apart", async () => {
      const { datapath, ifaces: [if0, lo] } = await open();
      const devices = await datapath.interfaces();
      expect(devices, "sorted by name").toEqual([...devices].sort((x, y) => byCodeUnit(x.name, y.name)));
      expect(devices).toEqual(expect.arrayContaining([{ name: if0, loopback: false, ethernet: true }, { name: lo, loopback: true, ethernet: true }]));
    });

    it("refuses an id that is not a digest and an object the kernel will not load, loading nothing", async () => {
      const { datapath } = await open();
      await expect(datapath.load("sha256:xyz", object, rules), "malformed id").rejects.toMatchObject({ code: "INVALID_PROGRAM_ID" });
      await expect(datapath.load(c, Buffer.from("not an ELF object"), rules), "garbage object").rejects.toMatchObject({ code: "LOAD_FAILED" });
      expect(await datapath.loaded()).toEqual([]);
    });

    it("attaches, replaces at the same pref, lists each hook with its digest, and detaches", async () => {
      const { datapath, ifaces: [if0, if1] } = await open();
      const pa = await datapath.load(a, object, rules);
      const pb = await datapath.load(b, object, rules);
      const egress: Hook = { iface: if0, direction: "egress", pref: 10 };
      await datapath.attach(a, egress);
      expect(await datapath.attached(), "after attach").toEqual([{ ...egress, programId: pa.programId, id: a }]);
      await datapath.attach(a, egress);
      expect(await datapath.attached(), "attaching again changes nothing").toEqual([{ ...egress, programId: pa.programId, id: a }]);
      await datapath.attach(b, egress);
      expect(await datapath.attached(), "another id at the same pref replaces").toEqual([{ ...egress, programId: pb.programId, id: b }]);

      const others: Hook[] = [
        { iface: if0, direction: "ingress", pref: 10 },
        { iface: if0, direction: "egress", pref: 11 },
        { iface: if1, direction: "egress", pref: 10 },
      ];
      for (const hook of others) await datapath.attach(a, hook);
      const expected = [{ ...egress, programId: pb.programId, id: b }, ...others.map((hook) => ({ ...hook, programId: pa.programId, id: a }))];
      expect(await datapath.attached(), "hooks differ by iface, direction and pref").toEqual(expected.sort(compareHooks));

      for (const hook of [egress, ...others]) await datapath.detach(hook);
      expect(await datapath.attached(), "after detaching all").toEqual([]);
      await expect(datapath.detach(egress), "detaching again").rejects.toMatchObject({ code: "NOT_ATTACHED" });
    });

    it("refuses to attach an id not loaded, on a missing device, or at an invalid hook", async () => {
      const { datapath, ifaces: [if0] } = await open();
      await datapath.load(a, object, rules);
      await expect(datapath.attach(c, { iface: if0, direction: "egress", pref: 1 }), "unloaded id").rejects.toMatchObject({ code: "NOT_LOADED" });
      await expect(datapath.attach(a, { iface: "aegis-nodev0", direction: "egress", pref: 1 }), "missing device").rejects.toMatchObject({ code: "TC_FAILED" });
      // A device name tc -batch would read as a comment (#) or a joined line (\) is refused too.
      for (const hook of [{ iface: if0, direction: "egress", pref: 0 }, { iface: if0, direction: "egress", pref: 65536 }, { iface: if0, direction: "sideways", pref: 1 }, { iface: "eth#1", direction: "egress", pref: 1 }, { iface: "eth\\", direction: "egress", pref: 1 }]) {
        await expect(datapath.attach(a, hook as Hook), `invalid hook ${JSON.stringify(hook)}`).rejects.toMatchObject({ code: "INVALID_HOOK" });
      }
      await expect(datapath.detach({ iface: "aegis-nodev0", direction: "egress", pref: 1 }), "detach on a missing device").rejects.toMatchObject({ code: "NOT_ATTACHED" });
      expect(await datapath.attached()).toEqual([]);
    });

    it("unpins only what no hook runs, and forgets it", async () => {
      const { datapath, ifaces: [if0] } = await open();
      await datapath.load(a, object, rules);
      const hook: Hook = { iface: if0, direction: "ingress", pref: 20 };
      await datapath.attach(a, hook);
      await expect(datapath.unpin(a), "unpin while attached").rejects.toMatchObject({ code: "STILL_ATTACHED" });
      expect((await datapath.attached()).map((x) => x.id), "still attached after the refusal").toEqual([a]);
      await datapath.detach(hook);
      expect(await datapath.unpin(a)).toBe(true);
      expect(await datapath.unpin(a), "unpinning again").toBe(false);
      expect(await datapath.loaded()).toEqual([]);
      await expect(datapath.counters(a), "counters of an unpinned id").rejects.toMatchObject({ code: "NOT_LOADED" });
      await expect(datapath.attach(a, hook), "attach an unpinned id").rejects.toMatchObject({ code: "NOT_LOADED" });
    });

    it("counts matches per rule, all or the rules asked for", async () => {
      const fixture = await open();
      const { datapath } = fixture;
      await datapath.load(a, object, rules);
      await fixture.hit(a, 0, ICMP);
      await fixture.hit(a, 0, ICMP);
      await fixture.hit(a, 1, TCP_80);
      expect(await datapath.counters(a)).toEqual([2, 1, 0]);
      expect(await datapath.counters(a, [1, 0])).toEqual([1, 2]);
      expect(await datapath.counters(a, [])).toEqual([]);
    });

    it("a new instance adopts what is loaded and attached, and tells foreign filters apart", async () => {
      const fixture = await open();
      const { datapath, ifaces: [if0] } = fixture;
      const loaded = await datapath.load(a, object, rules);
      const ours: Hook = { iface: if0, direction: "egress", pref: 30 };
      const theirs: Hook = { iface: if0, direction: "egress", pref: 31 };
      await datapath.attach(a, ours);
      await fixture.attachForeign(theirs);
      const restarted = fixture.reopen();
      expect(await restarted.loaded()).toEqual([loaded]);
      const attached = await restarted.attached();
      expect(attached[0], "our filter, with its digest").toEqual({ ...ours, programId: loaded.programId, id: a });
      expect(attached[1], "a foreign filter, without one").toEqual({ ...theirs, programId: expect.any(Number) as number, id: undefined });
      expect(attached).toHaveLength(2);
      // Program ids are kept (the agent's records) with the boot they belong to.
      const boot = await datapath.boot();
      expect(boot, "the kernel's boot").toMatch(/^[\w-]{8,}$/);
      expect(await restarted.boot(), "the same boot for a new instance").toBe(boot);
    });
  });
}
