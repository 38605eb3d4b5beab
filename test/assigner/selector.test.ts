// Label selectors (assigner/api/selector.ts): Kubernetes syntax, canonical
// text, matching, and the bounds that keep a selector small.
import { describe, expect, it } from "vitest";
import { AssignerError } from "../../assigner/api/index.js";
import { canonicalSelector, matches, parseSelector, SELECTOR_MAX_REQUIREMENTS } from "../../assigner/api/selector.js";

const hosts: Record<string, Record<string, string>> = {
  a: { env: "prod", zone: "a" },
  b: { env: "prod", zone: "b", canary: "true" },
  c: { env: "prod", zone: "c" },
  s: { env: "staging", zone: "a" },
  none: {},
};

function selected(text: string): string[] {
  const selector = parseSelector(text);
  return Object.keys(hosts).filter((h) => matches(selector, hosts[h]));
}

describe("parseSelector / matches", () => {
  it.each([
    ["env=prod", ["a", "b", "c"]],
    ["env==prod", ["a", "b", "c"]],
    ["env!=prod", ["s", "none"]],
    ["env=prod,zone in (a,b)", ["a", "b"]],
    ["zone notin (a,b)", ["c", "none"]],
    ["canary", ["b"]],
    ["!canary,env=prod", ["a", "c"]],
    ["env = prod , zone in ( a , c )", ["a", "c"]],
  ])("%s selects %j", (text, expected) => {
    expect(selected(text), `hosts matched by ${text}`).toEqual(expected);
  });

  it("gives one canonical text for the same selector written differently", () => {
    expect(canonicalSelector("zone in (b,a,b),env==prod")).toBe("env=prod,zone in (a,b)");
    expect(canonicalSelector("env=prod, zone in (a, b)")).toBe(canonicalSelector("zone in (a,b),env=prod"));
    expect(canonicalSelector("!canary,canary")).toBe("!canary,canary");
  });

  it.each([
    ["", "empty"],
    ["  ", "empty"],
    ["env=prod,", "empty requirement"],
    ["zone in (a,b", "unbalanced"],
    ["zone in ((a))", "unbalanced"],
    ["zone in ()", "at least one value"],
    ["env=pr od", "cannot read"],
    ["-env=prod", "not a label key"],
    ["env=prod=x", "not a label value"],
    [`env=${"x".repeat(64)}`, "not a label value"],
    [Array.from({ length: SELECTOR_MAX_REQUIREMENTS + 1 }, (_, i) => `k${i}`).join(","), `at most ${SELECTOR_MAX_REQUIREMENTS} requirements`],
    [`zone in (${Array.from({ length: 65 }, (_, i) => `z${i}`).join(",")})`, "at most 64 values"],
    ["k".repeat(1025), "longer than 1024"],
  ])("refuses %j (%s)", (text, why) => {
    const err = (() => {
      try {
        parseSelector(text);
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err, `${JSON.stringify(text)} is refused`).toBeInstanceOf(AssignerError);
    expect((err as AssignerError).code).toBe("BAD_REQUEST");
    expect((err as Error).message, "the message says why").toContain(why);
  });
});
