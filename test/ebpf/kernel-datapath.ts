// What every kernel Datapath (bpftool, libbpf) must pass as root, in network
// namespaces it creates: the Datapath conformance suite, recovery from a
// crash mid-load, and real traffic (ping through a veth pair) dropped, held
// through replaces under a flood, passed. Each implementation's test file
// calls kernelDatapathSuite once.
import { chmod, chown, mkdir, readdir, rm, stat } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  attachTc,
  compileProgram,
  compileRules,
  loadObject,
  loadProgram,
  pinName,
  testRun,
  type Hook,
  type KernelDatapath,
  type KernelDatapathOptions,
} from "../../ebpf/index.js";
import type { Policy, Rule } from "../../policy/index.js";
import { NetnsLab, type VethPair } from "../harness/netns.js";
import { datapathConformance, idOf, RULES } from "./datapath-conformance.js";
import { packet } from "./packet.js";

export function policyOf(rules: Rule[]): Policy {
  return { name: "conformance", version: "1.0.0", description: "", program: "aegis_net", attach: { hook: "tc", direction: "egress" }, rules };
}

/** A kernel Datapath over a pin root and a namespace, as each implementation constructs one. */
export type OpenKernelDatapath = (options: KernelDatapathOptions & Required<Pick<KernelDatapathOptions, "pinRoot" | "netns">>) => KernelDatapath;

/** The shared lab: a veth pair in two namespaces, and fresh pin roots removed at the end. */
export interface KernelLab {
  pair(): VethPair;
  freshPinRoot(): string;
}

/** Creates the lab for one test file (beforeAll/afterAll in the calling file's scope). */
export function kernelLab(label: string): KernelLab {
  const lab = new NetnsLab();
  let pair: VethPair | undefined;
  const pinRoots: string[] = [];
  let opened = 0;
  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error(`the ${label} Datapath tests load eBPF programs and create network namespaces: run them as root`);
    pair = await lab.vethPair(label);
  }, 60_000);
  afterAll(async () => {
    // Deleting the namespaces removes their filters; then nothing holds the pins.
    await lab.destroy();
    await Promise.all(pinRoots.map((root) => rm(root, { recursive: true, force: true })));
  });
  return {
    pair: () => {
      if (!pair) throw new Error("the veth pair is made in beforeAll");
      return pair;
    },
    freshPinRoot: () => {
      const root = `/sys/fs/bpf/aegis-test-${label}-${process.pid}-${opened++}`;
      pinRoots.push(root);
      return root;
    },
  };
}

/** The conformance suite, crash recovery and real traffic, for one kernel Datapath. */
export function kernelDatapathSuite(name: string, lab: KernelLab, open: OpenKernelDatapath): void {
  const freshPinRoot = () => lab.freshPinRoot();

  datapathConformance(`${name} + tc`, async () => {
    const pair = lab.pair();
    const pinRoot = freshPinRoot();
    const netns = pair.a.ns.name;
    const ifaces: [string, string] = [pair.a.iface, "lo"];
    // Each case starts with no filters: removing clsact removes them all.
    for (const iface of ifaces) await pair.a.ns.exec("tc", "qdisc", "del", "dev", iface, "clsact").catch(() => undefined);
    const datapath = open({ pinRoot, netns });
    return {
      datapath,
      ifaces,
      hit: async (id, _rule, spec) => {
        await testRun((await datapath.pinned(id)).progPin, packet(spec));
      },
      reopen: () => open({ pinRoot, netns }),
      attachForeign: async (hook) => {
        const foreign = await loadProgram(await compileProgram(policyOf(RULES)), compileRules(RULES), `${freshPinRoot()}/foreign`);
        await attachTc({ ...hook, netns }, foreign.progPin);
      },
    };
  });

  it(`${name}: a tunnel (a tun device) is listed as carrying no Ethernet frames`, async () => {
    const { ns } = lab.pair().a;
    const tun = `aegis${name.slice(0, 3)}tun0`;
    await ns.exec("ip", "tuntap", "add", "dev", tun, "mode", "tun");
    try {
      const devices = await open({ pinRoot: freshPinRoot(), netns: ns.name }).interfaces();
      expect(devices.find((d) => d.name === tun)).toEqual({ name: tun, loopback: false, ethernet: false });
    } finally {
      await ns.exec("ip", "link", "del", tun);
    }
  });

  it(`${name}: refuses a pin root another user owns or may write, pinning nothing there`, async () => {
    const object = await compileProgram(policyOf(RULES));
    const cases: [string, (root: string) => Promise<void>][] = [
      // bpffs is often mounted 1777: a user may make the folder first, or find one the agent made writable.
      ["owned by nobody", (root) => chown(root, 65534, 65534)],
      ["writable by all (1777)", (root) => chmod(root, 0o1777)],
    ];
    for (const [what, spoil] of cases) {
      const pinRoot = freshPinRoot();
      await mkdir(pinRoot, { mode: 0o700 });
      await spoil(pinRoot);
      const datapath = open({ pinRoot, netns: lab.pair().a.ns.name });
      await expect(datapath.load(idOf(what), object, compileRules(RULES)), `a pin root ${what}`).rejects.toMatchObject({ code: "INVALID_PIN_PATH", message: expect.stringContaining(pinRoot) });
      expect(await readdir(pinRoot), `a pin root ${what}: pinned there`).toEqual([]);
    }
    const made = freshPinRoot();
    const datapath = open({ pinRoot: made, netns: lab.pair().a.ns.name });
    const id = idOf("made");
    await datapath.load(id, object, compileRules(RULES));
    expect((await stat(made)).mode & 0o777, "a pin root the datapath makes: root's alone").toBe(0o700);
    // Pins already there are not taken on trust once the folder is another's to write (an earlier version's, say).
    await chmod(made, 0o1777);
    const hook = { iface: lab.pair().a.iface, direction: "egress" as const, pref: 7 };
    for (const [what, step] of [["loaded()", () => datapath.loaded()], ["load() of a pinned id", () => datapath.load(id, object, compileRules(RULES))], ["attach()", () => datapath.attach(id, hook)]] as const) {
      await expect(step(), `${what} under a pin root others may write`).rejects.toMatchObject({ code: "INVALID_PIN_PATH" });
    }
    await chmod(made, 0o700);
    // The veth pair is the file's: other cases' filters may be on it.
    expect((await datapath.attached()).filter((a) => a.id === id), "this program attached meanwhile").toEqual([]);
  }, 30_000);

  describe(`${name}: after a crash`, () => {
    it("does not list a program a crash left half-loaded, and loads that id over it", async () => {
      const pinRoot = freshPinRoot();
      const id = idOf("crashed");
      const object = await compileProgram(policyOf(RULES));
      // What a crash between loading and renaming to the id leaves.
      await loadObject(object, `${pinRoot}/loading-${pinName(id)}`);
      const datapath = open({ pinRoot, netns: lab.pair().a.ns.name });
      expect(await datapath.loaded(), "a staging directory is not a loaded program").toEqual([]);
      await datapath.load(id, object, compileRules(RULES));
      expect((await datapath.loaded()).map((p) => p.id)).toEqual([id]);
      expect(await readdir(pinRoot), "the staging directory is gone").toEqual([pinName(id)]);
    }, 30_000);

    it("finishes a removal a crash cut short, and loads that id again; another id's staging is removed too", async () => {
      const pinRoot = freshPinRoot();
      const [cut, other, stale] = [idOf("cut-short"), idOf("unpinned"), idOf("never-again")];
      const object = await compileProgram(policyOf(RULES));
      // What a crash in the middle of unpin's removal leaves: the maps, no program pin.
      await loadObject(object, `${pinRoot}/${pinName(cut)}`);
      await rm(`${pinRoot}/${pinName(cut)}/prog`, { recursive: true, force: true });
      await loadObject(object, `${pinRoot}/${pinName(other)}`);
      await rm(`${pinRoot}/${pinName(other)}/prog`, { recursive: true, force: true });
      // A crash mid-load of a digest that is never loaded again.
      await loadObject(object, `${pinRoot}/loading-${pinName(stale)}`);
      const datapath = open({ pinRoot, netns: lab.pair().a.ns.name });
      expect(await datapath.loaded(), "a half-removed directory is not a loaded program").toEqual([]);
      await datapath.load(cut, object, compileRules(RULES));
      expect((await datapath.loaded()).map((p) => p.id), "loaded again over the remainder").toEqual([cut]);
      expect(await datapath.unpin(other), "unpin of a half-removed id: nothing was loaded").toBe(false);
      expect((await readdir(pinRoot)).sort(), "the remainder and the other staging directory removed").toEqual([pinName(cut)]);
    }, 30_000);
  });

  describe(`${name} on real traffic`, () => {
    it("drops after attach, holds through replaces under a flood, and passes after detach", async () => {
      const pair = lab.pair();
      const datapath = open({ pinRoot: freshPinRoot(), netns: pair.a.ns.name });
      const hook: Hook = { iface: pair.a.iface, direction: "egress", pref: 1 };
      const peer = pair.b.v4;
      const ping = () => pair.a.ns.exec("ping", "-c1", "-W1", peer).then(() => true, () => false);
      const v1: Rule[] = [{ action: "drop", dst: `${peer}/32`, protocol: "icmp" }];
      const v2: Rule[] = [...v1, { action: "drop", dst: `${peer}/32`, protocol: "tcp", ports: { from: 9999, to: 9999 } }];
      const [id1, id2] = [idOf("traffic-v1"), idOf("traffic-v2")];
      await datapath.load(id1, await compileProgram(policyOf(v1)), compileRules(v1));
      await datapath.load(id2, await compileProgram(policyOf(v2)), compileRules(v2));

      expect(await ping(), "ping before attach").toBe(true);
      await datapath.attach(id1, hook);
      expect(await ping(), "ping with v1 attached").toBe(false);
      const [dropped = 0] = await datapath.counters(id1);
      expect(dropped, "v1's drop counter").toBeGreaterThanOrEqual(1);

      // A flood of pings while v1 and v2 replace each other at the same pref:
      // both drop ICMP to the peer, so not one echo may come back. ping
      // retries a send the drop refused (ENOBUFS), so any gap, however short,
      // lets an echo through.
      let flooding = true;
      const flood = pair.a.ns
        .exec("ping", "-q", "-n", "-i", "0.005", "-c", "200", "-W", "1", peer)
        .then((r) => r.stdout, (err: { stdout?: string }) => err.stdout ?? "")
        .finally(() => (flooding = false));
      let replaces = 0;
      while (flooding) await datapath.attach(replaces++ % 2 ? id1 : id2, hook);
      const summary = await flood;
      const [, sent = "0", received = "-1"] = /(\d+) packets transmitted, (\d+) received/.exec(summary) ?? [];
      expect(Number(sent), `ping's summary: ${summary}`).toBeGreaterThan(0);
      expect(Number(received), `echoes during ${replaces} replaces: ${summary}`).toBe(0);
      expect(replaces, "replaces during the flood").toBeGreaterThan(2);

      await datapath.detach(hook);
      expect(await ping(), "ping after detach").toBe(true);
      expect(await datapath.unpin(id1)).toBe(true);
      expect(await datapath.unpin(id2)).toBe(true);
    }, 60_000);
  });
}
