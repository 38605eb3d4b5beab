// NATS, optional (docs/architecture.md "The data path"): the assigner publishes
// aegis.assignments.<host_id> when a host's set changes, and records the
// agents' signed aegis.telemetry.<host_id> messages (subjects and shapes in
// api/; verified by AssignerServices.recordTelemetry).
// Without NATS, or while it is away, agents still learn everything by polling.
import type { NatsConnection } from "@nats-io/transport-node";
import { connectNats, isPublishRefused } from "../util/index.js";
import { assignmentsSubject, HostId, SignedTelemetry, TELEMETRY_SUBJECTS, telemetrySubjectHost, type AssignmentNotice } from "./api/index.js";

/** The queue group every assigner subscribes to telemetry in. */
export const TELEMETRY_QUEUE = "aegis-assigners";

export type NatsState = "connected" | "disconnected" | "disabled";

export class AssignerEvents {
  private nc: NatsConnection | undefined;
  private connected = false;
  /** NATS refused the telemetry subscription or a notice (its permissions): of no use, whatever the connection, until a restart. */
  private refused = false;
  /** Fired by close(): stops the first connection's retries. */
  private readonly closing = new AbortController();

  private constructor(private readonly onTelemetry: (message: SignedTelemetry, hostId: string) => Promise<unknown>, private readonly onInvalid: () => void) {}

  /**
   * Starts connecting in the background (retrying forever); never blocks
   * start-up. `refused` is told, once, if NATS refuses the telemetry
   * subscription (it ends with an error) or a notice (its permissions):
   * NATS then counts as disconnected (/healthz degraded) until the assigner
   * restarts, since what agents publish there is not received, or they are
   * not woken.
   */
  static start(
    url: string,
    handlers: { telemetry: (message: SignedTelemetry, hostId: string) => Promise<unknown>; invalid: () => void; refused: (err: unknown) => void },
  ): AssignerEvents {
    const events = new AssignerEvents(handlers.telemetry, handlers.invalid);
    const refuse = (err: unknown) => {
      if (!events.refused) handlers.refused(err);
      events.refused = true;
    };
    events.run(url, refuse).catch(refuse);
    return events;
  }

  private async run(url: string, refuse: (err: unknown) => void): Promise<void> {
    const nc = await connectNats(url, { name: "aegis-assigner", signal: this.closing.signal });
    if (!nc) return;
    this.nc = nc;
    this.connected = true;
    void (async () => {
      for await (const status of nc.status()) {
        if (status.type === "disconnect") this.connected = false;
        if (status.type === "reconnect") this.connected = true;
        if (status.type === "error" && isPublishRefused(status.error)) refuse(status.error);
      }
    })();
    // A queue group: with several assigners on one NATS, each message reaches
    // one of them, so it is recorded once.
    const subscription = nc.subscribe(TELEMETRY_SUBJECTS, { queue: TELEMETRY_QUEUE });
    for await (const msg of subscription) {
      const parsed = SignedTelemetry.safeParse(safeJson(msg.string()));
      // The subject names the host the message must be signed by and speak for.
      const hostId = HostId.safeParse(telemetrySubjectHost(msg.subject));
      if (!parsed.success || !hostId.success) {
        this.onInvalid();
        continue;
      }
      await this.onTelemetry(parsed.data, hostId.data).catch(() => this.onInvalid());
    }
  }

  state(): NatsState {
    return this.connected && !this.refused ? "connected" : "disconnected";
  }

  /** Best effort: a host that misses this learns of the change at its next poll. */
  notifyAssignments(notice: AssignmentNotice): void {
    if (this.nc && this.connected) this.nc.publish(assignmentsSubject(notice.host_id), JSON.stringify(notice));
  }

  async close(): Promise<void> {
    this.closing.abort();
    await this.nc?.drain().catch(() => undefined);
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
