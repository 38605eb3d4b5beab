// Signed telemetry waiting for POST /agents/{uid}/telemetry, for an agent
// without NATS (or while NATS is away): a bounded queue, sent in batches at
// the end of each pass, and before a pass fetches a new digest. An assigner
// that cannot be reached keeps the messages for the next pass; one that
// refuses a batch itself loses it.
import { AssignerError, TELEMETRY_BODY_LIMIT, type AssignerErrorCode, type SignedTelemetry } from "../assigner/api/index.js";
import { describeError, errorCode } from "../errors.js";

/** Messages kept while the assigner is away (the oldest go first). */
const OUTBOX_MAX = 256;
/** One POST: at most this many messages and payload characters (within TELEMETRY_BODY_LIMIT). */
const BATCH_MAX = 32;
const BATCH_CHARS = (TELEMETRY_BODY_LIMIT * 3) / 4;
/** Answers that refuse a batch itself (sending it again would not help); anything else keeps it for the next pass. */
const REFUSED = new Set<AssignerErrorCode>(["BAD_REQUEST", "FORBIDDEN", "NOT_FOUND", "PAYLOAD_TOO_LARGE", "UNSUPPORTED_MEDIA_TYPE"]);

export class TelemetryOutbox {
  private queue: SignedTelemetry[] = [];
  /** The last failure logged, so a long outage is logged once. */
  private lastFailure: string | undefined;

  constructor(private readonly log: (line: string) => void) {}

  push(envelope: SignedTelemetry): void {
    this.queue.push(envelope);
    if (this.queue.length > OUTBOX_MAX) this.queue.splice(0, this.queue.length - OUTBOX_MAX);
  }

  /** Messages waiting. */
  get size(): number {
    return this.queue.length;
  }

  /** Sends what is queued, batch by batch, through `send`; stops at the first batch the assigner cannot take now. */
  async flush(send: (batch: SignedTelemetry[]) => Promise<unknown>, signal: AbortSignal): Promise<void> {
    while (this.queue.length > 0) {
      let count = 0;
      let chars = 0;
      for (const { payload } of this.queue) {
        if (count === BATCH_MAX || (count > 0 && chars + payload.length > BATCH_CHARS)) break;
        chars += payload.length;
        count++;
      }
      // Out of the queue while it is sent: messages pushed meanwhile (NATS going away) may trim the queue, never the batch in flight.
      const batch = this.queue.splice(0, count);
      try {
        await send(batch);
        this.lastFailure = undefined;
      } catch (err) {
        const keep = !(err instanceof AssignerError && REFUSED.has(err.code)) || signal.aborted;
        if (keep) this.keep(batch);
        signal.throwIfAborted();
        const failure = `${errorCode(err)}: ${describeError(err)}`;
        if (failure !== this.lastFailure) this.log(`telemetry over HTTP failed [${failure}]; ${keep ? "retrying at the next pass" : `${count} message(s) lost`}`);
        this.lastFailure = failure;
        if (keep) return;
      }
    }
  }

  /** A batch not sent, back at the front, within OUTBOX_MAX (the oldest go first). */
  private keep(batch: SignedTelemetry[]): void {
    this.queue.unshift(...batch);
    if (this.queue.length > OUTBOX_MAX) this.queue.splice(0, this.queue.length - OUTBOX_MAX);
  }
}
