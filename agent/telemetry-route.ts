// Where the agent's signed telemetry goes: on NATS while it is connected
// and takes it, else into the HTTP outbox (outbox.ts), sent at the end of
// each pass. nats.js drops what is published while it reconnects (and what
// it had not written when the connection broke), and NATS drops what its
// permissions refuse and says so only afterwards: a message published on
// NATS is therefore kept until a flush on the same connection confirms the
// server accepted it (NATS answers a refused publish before the flush's
// PONG), and goes to the outbox if it was refused, the connection broke, or
// the flush did not answer in time. After a refusal everything goes over
// HTTP, and NATS is tried again after a backoff: once it takes a message
// (its permissions fixed and reloaded), telemetry goes there again.
import type { NatsConnection } from "@nats-io/transport-node";
import type { SignedTelemetry } from "../assigner/api/index.js";
import { describeError } from "../errors.js";
import { backoffDelay, flushed, FLUSH_MS, isRefused } from "../util/index.js";
import { TelemetryOutbox } from "./outbox.js";

/** Most messages kept unconfirmed between flushes (a pass sends a few per digest). */
const UNCONFIRMED_MAX = 256;

export class TelemetryRoute {
  readonly outbox: TelemetryOutbox;
  private nc: NatsConnection | undefined;
  private up = false;
  /**
   * Refusals since NATS last took a message (its permissions): while there
   * are any, everything goes over HTTP until `retryAt`, then NATS is tried
   * again; the backoff grows with them, and a confirmation counts only if
   * none came meanwhile.
   */
  private refusals = 0;
  private retryAt = 0;
  private readonly unconfirmed: SignedTelemetry[] = [];
  /** Counts the times toOutbox emptied `unconfirmed`: a flush then vouches for none of what it held. */
  private handedOver = 0;
  /** Counts the oldest unconfirmed messages sent over HTTP as newer ones came past UNCONFIRMED_MAX. */
  private overflowed = 0;
  /** The last confirmation failed (logged once until one succeeds). */
  private unanswered = false;

  constructor(
    private readonly subject: string,
    private readonly log: (line: string) => void,
    /** Base of the wait before NATS is tried again after a refusal (ms); default 500. At least this, it grows to 60× this. */
    private readonly retryMs = 500,
  ) {
    this.outbox = new TelemetryOutbox(log);
  }

  /** Routes through `nc` from now on, as its status says: disconnected, reconnected, refusing. */
  use(nc: NatsConnection): void {
    this.nc = nc;
    this.up = true;
    void (async () => {
      for await (const status of nc.status()) {
        if (status.type === "disconnect") {
          // A flush on the next connection would not vouch for what this one carried.
          this.up = false;
          this.toOutbox();
        } else if (status.type === "reconnect") this.up = true;
        else if (status.type === "error" && isRefused(status.error, "publish")) {
          this.toOutbox();
          if (this.refusals === 0) this.log(`NATS refuses what this agent publishes (${describeError(status.error)}): telemetry goes over HTTP, and NATS is tried again later`);
          this.refusals++;
          this.retryAt = Date.now() + this.retryMs + backoffDelay(this.refusals, { baseMs: this.retryMs, maxMs: 59 * this.retryMs });
        }
      }
    })();
  }

  send(envelope: SignedTelemetry): void {
    const { nc } = this;
    if (!nc || !this.up || nc.isClosed() || (this.refusals > 0 && Date.now() < this.retryAt)) return this.outbox.push(envelope);
    nc.publish(this.subject, JSON.stringify(envelope));
    this.unconfirmed.push(envelope);
    if (this.unconfirmed.length > UNCONFIRMED_MAX) {
      this.outbox.push(this.unconfirmed.shift()!);
      this.overflowed++;
    }
  }

  /**
   * Confirms what went to NATS since the last call with a flush, within
   * FLUSH_MS and until `signal` (the agent stopping): what NATS refused,
   * or what the flush could not confirm, is in the outbox after. The
   * assigner refuses a message it already recorded (its sequence number),
   * so one sent both ways counts once.
   */
  async confirm(signal: AbortSignal): Promise<void> {
    const { nc } = this;
    if (!nc || this.unconfirmed.length === 0) return;
    if (!this.up || nc.isClosed()) return this.toOutbox();
    const refusals = this.refusals;
    // The flush vouches for what was published before it, not for what a send adds meanwhile.
    const vouched = this.unconfirmed.length;
    const { handedOver, overflowed } = this;
    if (await flushed(nc, signal)) {
      if (this.handedOver === handedOver) this.unconfirmed.splice(0, Math.max(0, vouched - (this.overflowed - overflowed)));
      this.unanswered = false;
      // Taken while refused, with no refusal since: NATS's permissions allow this agent again.
      if (refusals > 0 && this.refusals === refusals) {
        this.refusals = 0;
        this.log("NATS takes this agent's telemetry again");
      }
      return;
    }
    if (!this.unanswered && !signal.aborted) this.log(`NATS did not confirm ${this.unconfirmed.length} message(s) within ${FLUSH_MS} ms: sending them over HTTP`);
    this.unanswered = true;
    this.toOutbox();
  }

  /** What NATS has not confirmed goes over HTTP. */
  private toOutbox(): void {
    this.handedOver++;
    for (const envelope of this.unconfirmed.splice(0)) this.outbox.push(envelope);
  }
}
