// The agent's telemetry payloads without a server: what a step becomes on
// the wire (signed by the assigner-facing tests), and how a receipt of a
// very large policy keeps within the message bounds.
import { describe, expect, it } from "vitest";
import { receiptCounters, telemetryMessage } from "../../agent/index.js";
import { RECEIPT_COUNTERS_MAX, TELEMETRY_PAYLOAD_TYPE, TelemetryMessage } from "../../assigner/api/index.js";

const id = `sha256:${"a".repeat(64)}`;

describe("telemetry payloads", () => {
  it("a failure carries its code apart from its reason, with the type, time and seq", () => {
    const message = telemetryMessage("web-01", { event: "failed", id, code: "NO_SIGNATURE", reason: "no signature" }, 17, new Date("2026-01-01T00:00:00.000Z"));
    expect(message, "payload").toEqual({ type: TELEMETRY_PAYLOAD_TYPE, host_id: "web-01", artifact_id: id, event: "failed", code: "NO_SIGNATURE", reason: "no signature", time: "2026-01-01T00:00:00.000Z", seq: 17 });
    expect(TelemetryMessage.safeParse(message).success, "valid on the wire").toBe(true);
  });

  it("lists every rule's counter up to the bound, and past it the rules that dropped the most", () => {
    expect(receiptCounters([0, 3, 0]), "small policy: every rule").toEqual({ rule0: 0, rule1: 3, rule2: 0 });
    expect(receiptCounters([2, 3, 9], [2]), "an allow rule's matches are not drops: left out").toEqual({ rule0: 2, rule1: 3 });
    const large = new Array<number>(RECEIPT_COUNTERS_MAX + 100).fill(0);
    for (let i = 0; i < RECEIPT_COUNTERS_MAX + 10; i++) large[i] = i < 10 ? 1 : 2;
    const listed = receiptCounters(large);
    expect(Object.keys(listed).length, "bounded").toBe(RECEIPT_COUNTERS_MAX);
    expect([listed.rule0, listed.rule10, listed[`rule${RECEIPT_COUNTERS_MAX + 9}`], listed[`rule${RECEIPT_COUNTERS_MAX + 10}`]], "the top droppers, none of the idle").toEqual([undefined, 2, 2, undefined]);
  });
});
