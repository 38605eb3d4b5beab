// MemoryDatapath, which needs no root: the Datapath conformance suite (the
// same one bpftool-datapath.test.ts runs on the kernel), and what only it
// has for the agent's tests (injected failures, set counters, devices that
// come and go).
import { describe, expect, it } from "vitest";
import { compileRules, MemoryDatapath, MemoryKernel, type Hook } from "../../ebpf/index.js";
import { datapathConformance, idOf, RULES } from "./datapath-conformance.js";

datapathConformance("memory", async () => {
  const kernel = new MemoryKernel(["eth0", "lo"]);
  const datapath = new MemoryDatapath({ kernel });
  return {
    datapath,
    ifaces: ["eth0", "lo"],
    hit: async (id, rule) => {
      const counters = await datapath.counters(id);
      counters[rule] = (counters[rule] ?? 0) + 1;
      datapath.setCounters(id, counters);
    },
    reopen: () => new MemoryDatapath({ kernel }),
    attachForeign: async (hook) => datapath.attachForeign(hook),
  };
});

describe("MemoryDatapath for the agent's tests", () => {
  const object = Buffer.from("\x7fELF");
  const rules = compileRules(RULES);
  const hook: Hook = { iface: "eth0", direction: "egress", pref: 1 };

  it("fails the next call of an operation once, with the code asked for", async () => {
    const datapath = new MemoryDatapath();
    datapath.failNext("load");
    await expect(datapath.load(idOf("a"), object, rules)).rejects.toMatchObject({ code: "LOAD_FAILED" });
    expect(await datapath.loaded(), "a failed load loads nothing").toEqual([]);
    await datapath.load(idOf("a"), object, rules);
    datapath.failNext("attach", "TC_FAILED");
    await expect(datapath.attach(idOf("a"), hook)).rejects.toMatchObject({ code: "TC_FAILED" });
    expect(await datapath.attached(), "a failed attach attaches nothing").toEqual([]);
    await datapath.attach(idOf("a"), hook);
    expect((await datapath.attached()).map((x) => x.id), "only the next call fails").toEqual([idOf("a")]);
  });

  it("drops a device's filters when the device goes, and lists a device that appears", async () => {
    const kernel = new MemoryKernel(["lo", "eth0"]);
    const datapath = new MemoryDatapath({ kernel });
    await datapath.load(idOf("a"), object, rules);
    await datapath.attach(idOf("a"), hook);
    kernel.removeInterface("eth0");
    expect(await datapath.attached(), "filters of a removed device").toEqual([]);
    await expect(datapath.attach(idOf("a"), hook), "attach on a removed device").rejects.toMatchObject({ code: "TC_FAILED" });
    kernel.addInterface("eth9");
    expect((await datapath.interfaces()).map((i) => i.name)).toEqual(["eth9", "lo"]);
  });

  it("reports the counters it is told", async () => {
    const datapath = new MemoryDatapath();
    await datapath.load(idOf("a"), object, rules);
    datapath.setCounters(idOf("a"), [5, 0, 7]);
    expect(await datapath.counters(idOf("a"))).toEqual([5, 0, 7]);
    expect(() => datapath.setCounters(idOf("a"), [1, 2, 3, 4]), "more counters than rules").toThrow();
    expect(() => datapath.setCounters(idOf("b"), [1]), "an unloaded id").toThrow(expect.objectContaining({ code: "NOT_LOADED" }) as Error);
  });
});
