// util/order.ts: text ordered by code unit, the same in every locale, and the
// hook order the Datapaths list and the agent records built on it.
import { describe, expect, it } from "vitest";
import { compareHooks, type Hook } from "../../ebpf/index.js";
import { byCodeUnit } from "../../util/index.js";

describe("byCodeUnit", () => {
  it("orders by UTF-16 code unit, where localeCompare follows the locale and calls different names equal", () => {
    expect(["eth0", "Eth0", "å0", "aa1"].sort(byCodeUnit)).toEqual(["Eth0", "aa1", "eth0", "å0"]);
    // ICU ignores a zero-width space and a soft hyphen: localeCompare says 0 for these pairs.
    expect(byCodeUnit("ab", "a\u200bb"), "a zero-width space").not.toBe(0);
    expect(byCodeUnit("ab", "a\u00adb"), "a soft hyphen").not.toBe(0);
    expect(byCodeUnit("eth0", "eth0")).toBe(0);
  });

  it("compareHooks: two hooks are the same only when iface, direction and pref are", () => {
    const hook = (iface: string): Hook => ({ iface, direction: "egress", pref: 1 });
    expect(compareHooks(hook("Eth0"), hook("eth0")), "upper case first, whatever LANG says").toBeLessThan(0);
    expect(compareHooks(hook("ab"), hook("a\u200bb")), "names ICU finds equal").not.toBe(0);
    expect(compareHooks(hook("eth0"), hook("eth0"))).toBe(0);
  });
});
