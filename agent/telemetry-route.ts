// Where the agent's signed telemetry goes: on NATS while it is connected
// and takes it, else into the HTTP outbox (outbox.ts), sent at the end of
// each pass. nats.js drops what is published while it reconnects (and what
// it had not written when the connection broke), and NATS drops what its
// permissions refuse and says so only afterwards: a message published on
// NATS is therefore kept until a flush on the same connection confirms the
// server accepted it (NATS answers a refused publish before the flush's
// PONG), and goes to the outbox if it was refused, the connection broke, or
// the flush did not answer in time.
import type { NatsConnection } from "@nats-io/transport-node";
import type { SignedTelemetry } from "../assigner/api/index.js";
import { describeError } from "../errors.js";
import { isPublishRefused } from "../util/index.js";
import { TelemetryOutbox } from "./outbox.js";

/** Most messages kept unconfirmed between flushes (a pass sends a few per digest). */
const UNCONFIRMED_MAX = 256;
/** How long a flush may take: a connection that does not answer it is treated as broken for what it carried. */
const CONFIRM_MS = 5000;

export class TelemetryRoute {
  readonly outbox: TelemetryOutbox;
  private nc: NatsConnection | undefined;
  private up = false;
  /** NATS refused a publish (its permissions): everything goes over HTTP from then on. */
  private refused = false;
  private readonly unconfirmed: SignedTelemetry[] = [];
  /** The last confirmation failed (logged once until one succeeds). */
  private unanswered = false;

  constructor(
    private readonly subject: string,
    private readonly log: (line: string) => void,
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
        else if (status.type === "error" && isPublishRefused(status.error)) {
          this.toOutbox();
          if (!this.refused) this.log(`NATS refuses what this agent publishes (${describeError(status.error)}): telemetry goes over HTTP`);
          this.refused = true;
        }
      }
    })();
  }

  send(envelope: SignedTelemetry): void {
    const { nc } = this;
    if (!nc || !this.up || this.refused || nc.isClosed()) return this.outbox.push(envelope);
    nc.publish(this.subject, JSON.stringify(envelope));
    this.unconfirmed.push(envelope);
    if (this.unconfirmed.length > UNCONFIRMED_MAX) this.outbox.push(this.unconfirmed.shift()!);
  }

  /**
   * Confirms what went to NATS since the last call with a flush, within
   * CONFIRM_MS and until `signal` (the agent stopping): what NATS refused,
   * or what the flush could not confirm, is in the outbox after. The
   * assigner refuses a message it already recorded (its sequence number),
   * so one sent both ways counts once.
   */
  async confirm(signal: AbortSignal): Promise<void> {
    const { nc } = this;
    if (!nc || this.unconfirmed.length === 0) return;
    if (!this.up || nc.isClosed()) return this.toOutbox();
    const deadline = AbortSignal.any([signal, AbortSignal.timeout(CONFIRM_MS)]);
    const confirmed = await new Promise<boolean>((resolve) => {
      if (deadline.aborted) return resolve(false);
      deadline.addEventListener("abort", () => resolve(false), { once: true });
      nc.flush()
        // A refusal came before the PONG, but reaches use()'s status loop through an async iterator's
        // microtasks: they have all run once the event loop gets to setImmediate.
        .then(() => new Promise((settled) => setImmediate(settled)))
        .then(() => resolve(true), () => resolve(false));
    });
    if (confirmed) {
      this.unconfirmed.length = 0;
      this.unanswered = false;
      return;
    }
    if (!this.unanswered && !signal.aborted) this.log(`NATS did not confirm ${this.unconfirmed.length} message(s) within ${CONFIRM_MS} ms: sending them over HTTP`);
    this.unanswered = true;
    this.toOutbox();
  }

  /** What NATS has not confirmed goes over HTTP. */
  private toOutbox(): void {
    for (const envelope of this.unconfirmed.splice(0)) this.outbox.push(envelope);
  }
}
