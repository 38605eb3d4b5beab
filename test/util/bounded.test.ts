// util/bounded.ts: a cache keeps its newest entries only.
import { describe, expect, it } from "vitest";
import { setBounded } from "../../util/index.js";

describe("setBounded", () => {
  it("keeps the newest `max` entries; setting a key again makes it the newest", () => {
    const map = new Map<string, number>();
    for (let i = 0; i < 10; i++) setBounded(map, `host-${i}`, i, 3);
    expect([...map.keys()], "the newest three").toEqual(["host-7", "host-8", "host-9"]);
    expect(setBounded(map, "host-7", 70, 3), "returns the value").toBe(70);
    setBounded(map, "host-10", 10, 3);
    expect([...map], "host-7 was refreshed, host-8 is the oldest and went").toEqual([["host-9", 9], ["host-7", 70], ["host-10", 10]]);
  });
});
