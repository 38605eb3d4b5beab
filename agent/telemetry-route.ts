// Where the agent's signed telemetry goes: on NATS while it is connected
// and takes it, else into the HTTP outbox (outbox.ts), sent at the end of
// each pass. nats.js drops what is published while it reconnects, and NATS
// drops what its permissions refuse and says so only afterwards: a message
// published on NATS is therefore kept until a flush confirms it (NATS
// answers a refused publish before the flush's PONG), and goes to the
// outbox if it was refused or cannot be confirmed.
import type { NatsConnection } from "@nats-io/transport-node";
import type { SignedTelemetry } from "../assigner/api/index.js";
import { describeError } from "../errors.js";
import { isPublishRefused } from "../util/index.js";
import { TelemetryOutbox } from "./outbox.js";

/** Most messages kept unconfirmed between flushes (a pass sends a few per digest). */
const UNCONFIRMED_MAX = 256;

export class TelemetryRoute {
  readonly outbox: TelemetryOutbox;
  private nc: NatsConnection | undefined;
  private up = false;
  /** NATS refused a publish (its permissions): everything goes over HTTP from then on. */
  private refused = false;
  private readonly unconfirmed: SignedTelemetry[] = [];

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
        if (status.type === "disconnect") this.up = false;
        else if (status.type === "reconnect") this.up = true;
        else if (status.type === "error" && isPublishRefused(status.error)) {
          for (const envelope of this.unconfirmed.splice(0)) this.outbox.push(envelope);
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
   * `bounded` (a deadline): what NATS refused, or what the flush could not
   * confirm, is in the outbox after. The assigner refuses a message it
   * already recorded (its sequence number), so one sent both ways counts once.
   */
  async confirm(bounded: (work: () => Promise<void>) => Promise<void>): Promise<void> {
    const { nc } = this;
    if (!nc || this.unconfirmed.length === 0) return;
    const flush = async () => {
      await nc.flush();
      // A refusal came before the PONG, but reaches use()'s status loop through an async iterator's
      // microtasks: they have all run once the event loop gets to setImmediate.
      await new Promise((resolve) => setImmediate(resolve));
    };
    // Disconnected since: a flush would wait for the reconnect, so what waits goes over HTTP.
    const confirmed = this.up && !nc.isClosed() ? await bounded(flush).then(() => true, () => false) : false;
    const pending = this.unconfirmed.splice(0);
    if (!confirmed) for (const envelope of pending) this.outbox.push(envelope);
  }
}
