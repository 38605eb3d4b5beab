// The telemetry outbox (agent/outbox.ts): bounded, batched, and never losing
// a message it did not send, whatever is pushed while a batch is in flight.
import { describe, expect, it } from "vitest";
import { AssignerError, type SignedTelemetry } from "../../assigner/api/index.js";
import { TelemetryOutbox } from "../../agent/outbox.js";

const message = (n: string): SignedTelemetry => ({ payload: Buffer.from(n).toString("base64"), signature: "" });
const names = (batch: SignedTelemetry[]) => batch.map((m) => Buffer.from(m.payload, "base64").toString());

describe("the telemetry outbox", () => {
  it("a batch in flight is not trimmed by messages pushed meanwhile: every message pushed is sent or was the oldest over the cap", async () => {
    const outbox = new TelemetryOutbox(() => undefined);
    for (let i = 0; i < 10; i++) outbox.push(message(`old-${i}`));
    const sent: string[] = [];
    let first = true;
    await outbox.flush(async (batch) => {
      // NATS going away mid-send: 256 messages fall back to the outbox (its cap).
      if (first) for (let i = 0; i < 256; i++) outbox.push(message(`new-${i}`));
      first = false;
      sent.push(...names(batch));
    }, new AbortController().signal);
    expect(sent.slice(0, 10), "the batch in flight").toEqual(Array.from({ length: 10 }, (_, i) => `old-${i}`));
    expect(sent.slice(10), "then every message pushed during it, none lost").toEqual(Array.from({ length: 256 }, (_, i) => `new-${i}`));
    expect(outbox.size, "nothing left").toBe(0);
  });

  it("a batch the assigner cannot take now goes back in front, within the cap; one it refuses is dropped, said", async () => {
    const logs: string[] = [];
    const outbox = new TelemetryOutbox((line) => logs.push(line));
    for (let i = 0; i < 3; i++) outbox.push(message(`m-${i}`));
    await outbox.flush(async () => {
      outbox.push(message("during"));
      throw new AssignerError("UNAVAILABLE", "away");
    }, new AbortController().signal);
    const kept: string[] = [];
    await outbox.flush(async (batch) => void kept.push(...names(batch)), new AbortController().signal);
    expect(kept, "kept in order, the batch first").toEqual(["m-0", "m-1", "m-2", "during"]);

    outbox.push(message("refused"));
    await outbox.flush(async () => {
      throw new AssignerError("BAD_REQUEST", "no");
    }, new AbortController().signal);
    expect([outbox.size, logs.at(-1)], "dropped, and said").toEqual([0, "telemetry over HTTP failed [BAD_REQUEST: no]; 1 message(s) lost"]);
  });
});
