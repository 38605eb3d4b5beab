// The waits between retries (util/retry.ts): the agent's wait before asking
// its registries again for a digest that keeps failing.
import { describe, expect, it } from "vitest";
import { failureWait } from "../../util/index.js";

describe("failureWait", () => {
  it("none after the first failure, then the base, doubling, up to ten times it", () => {
    expect([1, 2, 3, 4, 5, 6, 7, 50].map((n) => failureWait(n, 30_000)), "failures 1, 2, 3, 4, 5, 6, 7 and 50 in a row").toEqual([0, 30_000, 60_000, 120_000, 240_000, 300_000, 300_000, 300_000]);
  });
});
