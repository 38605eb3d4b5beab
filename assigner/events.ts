// NATS, optional (docs/architecture.md "The data path"): the assigner publishes
// aegis.assignments.<host_id> when a host's set changes, and records the
// agents' signed aegis.telemetry.<host_id> messages (subjects and shapes in
// api/; verified by AssignerServices.recordTelemetry).
// Without NATS, or while it is away, agents still learn everything by polling.
// NATS may refuse the assigner (its permissions) and take it again once its
// configuration is fixed and reloaded: no restart is needed.
import type { NatsConnection } from "@nats-io/transport-node";
import { connectNats, flushed, isRefused, subscribeKept } from "../util/index.js";
import { assignmentsSubject, HostId, SignedTelemetry, TELEMETRY_SUBJECTS, telemetrySubjectHost, type AssignmentNotice } from "./api/index.js";

/** The queue group every assigner subscribes to telemetry in. */
export const TELEMETRY_QUEUE = "aegis-assigners";

export type NatsState = "connected" | "disconnected" | "disabled";

/** What NATS may refuse the assigner (its permissions), and take again later. */
export type NatsUse = "telemetry subscription" | "assignment notices";

export interface EventHandlers {
  telemetry: (message: SignedTelemetry, hostId: string) => Promise<unknown>;
  invalid: () => void;
  /** NATS refused `use`: told once, until it takes it again. */
  refused: (use: NatsUse, err: unknown) => void;
  /** NATS takes `use` again. */
  accepted: (use: NatsUse) => void;
}

export interface EventOptions {
  /** Base of the waits between attempts to reach NATS, and to subscribe again after a refusal (ms); default 500 (util/nats.ts). */
  retryMs?: number;
}

/** How long a notice's confirmation may wait for NATS's answer, while notices are refused (ms). */
const CONFIRM_MS = 5000;

export class AssignerEvents {
  private nc: NatsConnection | undefined;
  private connected = false;
  /**
   * What NATS refuses now (its permissions): NATS counts as disconnected
   * while it refuses either, since what agents publish is not received, or
   * they are not woken. A refused subscription is asked for again with
   * backoff; while notices are refused, each is confirmed (one at a time)
   * until NATS takes one.
   */
  private readonly refusing = new Set<NatsUse>();
  /** Notices NATS refused so far: a confirmation counts only if none came meanwhile. */
  private noticeRefusals = 0;
  /** A notice's confirmation is under way: one at a time, however many hosts a change wakes. */
  private confirming = false;
  /** Fired by close(): stops the first connection's retries and a refused subscription's. */
  private readonly closing = new AbortController();

  private constructor(
    private readonly handlers: EventHandlers,
    private readonly options: EventOptions,
  ) {}

  /** Starts connecting in the background (retrying forever); never blocks start-up. */
  static start(url: string, handlers: EventHandlers, options: EventOptions = {}): AssignerEvents {
    const events = new AssignerEvents(handlers, options);
    events.run(url).catch((err: unknown) => events.refuse("telemetry subscription", err));
    return events;
  }

  private async run(url: string): Promise<void> {
    const { retryMs } = this.options;
    const signal = this.closing.signal;
    const nc = await connectNats(url, { name: "aegis-assigner", signal, ...(retryMs !== undefined ? { retryMs } : {}) });
    if (!nc) return;
    this.nc = nc;
    this.connected = true;
    void (async () => {
      for await (const status of nc.status()) {
        if (status.type === "disconnect") this.connected = false;
        if (status.type === "reconnect") this.connected = true;
        if (status.type === "error" && isRefused(status.error, "publish")) {
          this.noticeRefusals++;
          this.refuse("assignment notices", status.error);
        }
      }
    })();
    // A queue group: with several assigners on one NATS, each message reaches
    // one of them, so it is recorded once.
    await subscribeKept(
      nc,
      TELEMETRY_SUBJECTS,
      async (msg) => {
        const parsed = SignedTelemetry.safeParse(safeJson(msg.string()));
        // The subject names the host the message must be signed by and speak for.
        const hostId = HostId.safeParse(telemetrySubjectHost(msg.subject));
        if (!parsed.success || !hostId.success) return this.handlers.invalid();
        await this.handlers.telemetry(parsed.data, hostId.data).catch(() => this.handlers.invalid());
      },
      {
        queue: TELEMETRY_QUEUE,
        signal,
        ...(retryMs !== undefined ? { retryMs } : {}),
        onRefused: (err) => this.refuse("telemetry subscription", err),
        onAccepted: () => this.accept("telemetry subscription"),
      },
    );
  }

  private refuse(use: NatsUse, err: unknown): void {
    if (!this.refusing.has(use)) this.handlers.refused(use, err);
    this.refusing.add(use);
  }

  private accept(use: NatsUse): void {
    if (this.refusing.delete(use)) this.handlers.accepted(use);
  }

  state(): NatsState {
    return this.connected && this.refusing.size === 0 ? "connected" : "disconnected";
  }

  /** Best effort: a host that misses this learns of the change at its next poll. */
  notifyAssignments(notice: AssignmentNotice): void {
    const { nc } = this;
    if (!nc || !this.connected) return;
    nc.publish(assignmentsSubject(notice.host_id), JSON.stringify(notice));
    if (this.refusing.has("assignment notices") && !this.confirming) void this.confirmNotice(nc);
  }

  /** While NATS refuses notices: one it takes (a flush answered, and no refusal came meanwhile) ends the refusal. */
  private async confirmNotice(nc: NatsConnection): Promise<void> {
    this.confirming = true;
    const refusals = this.noticeRefusals;
    const taken = await flushed(nc, AbortSignal.timeout(CONFIRM_MS));
    this.confirming = false;
    if (taken && this.noticeRefusals === refusals) this.accept("assignment notices");
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
