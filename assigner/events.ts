// NATS, optional (docs/architecture.md "The data path"): the assigner publishes
// aegis.assignments.<host_id> when a host's set changes, and records the
// agents' signed aegis.telemetry.<host_id> messages (subjects and shapes in
// api/; verified by AssignerServices.recordTelemetry).
// Without NATS, or while it is away, agents still learn everything by polling.
// NATS may refuse the assigner (its permissions) and take it again once its
// configuration is fixed and reloaded: no restart is needed.
import type { NatsConnection } from "@nats-io/transport-node";
import { connectNats, flushed, isRefused, natsRetryBase, refusalWait, subscribeKept } from "../util/index.js";
import { assignmentsSubject, HostId, SignedTelemetry, TELEMETRY_SUBJECTS, telemetrySubjectHost, type AssignmentNotice } from "./api/index.js";

/** The queue group every assigner subscribes to telemetry in. */
export const TELEMETRY_QUEUE = "aegis-assigners";

export type NatsState = "connected" | "disconnected" | "disabled";

/** What NATS may refuse the assigner (its permissions), and take again later. */
export type NatsUse = "telemetry subscription" | "assignment notices";

export interface EventHandlers {
  telemetry: (message: SignedTelemetry, hostId: string) => Promise<unknown>;
  /** A message that is no signed telemetry envelope, on `hostId`'s subject (undefined: a subject naming no valid host id). */
  malformed: (hostId: string | undefined, why: string) => void;
  /** A message `telemetry` could not record (the store failed). */
  failed: (hostId: string, err: unknown) => void;
  /** NATS refused `use`: told once, until it takes it again. */
  refused: (use: NatsUse, err: unknown) => void;
  /** NATS takes `use` again. */
  accepted: (use: NatsUse) => void;
}

export interface EventOptions {
  /** Base of the waits between attempts to reach NATS, and to subscribe again after a refusal (ms); default 500 (util/nats.ts). */
  retryMs?: number;
}

/** The latest notice of this many hosts is kept, to be sent again should NATS refuse it (it says which only by subject, afterwards). */
const RECENT_NOTICES = 4096;
/** Refused notices sent again per attempt, taken in turn. */
const RETRIED_NOTICES = 256;

export class AssignerEvents {
  private nc: NatsConnection | undefined;
  private connected = false;
  /**
   * What NATS refuses now (its permissions): NATS counts as disconnected
   * while it refuses either, since what agents publish is not received, or
   * they are not woken. A refused subscription is asked for again, and
   * refused notices are sent again, with backoff, until NATS takes them.
   */
  private readonly refusing = new Set<NatsUse>();
  /** The latest notice published per subject, for the last RECENT_NOTICES subjects. */
  private readonly recent = new Map<string, AssignmentNotice>();
  /**
   * Notices NATS refused, by subject, in the order they are sent again (at
   * most RECENT_NOTICES: past that, the one whose turn comes next is
   * dropped): the latest of each, and the number of its last refusal.
   */
  private readonly refusedNotices = new Map<string, { notice: AssignmentNotice; refusal: number }>();
  /** Notice refusals so far: what was sent again counts as taken only if no refusal of it came since. */
  private noticeRefusals = 0;
  /** retryNotices is running. */
  private retrying = false;
  /** Fired by close(): stops the first connection's retries and a refused subscription's. */
  private readonly closing = new AbortController();

  private constructor(
    private readonly handlers: EventHandlers,
    private readonly options: EventOptions,
  ) {}

  /** Starts connecting in the background (retrying forever); never blocks start-up. */
  static start(url: string, handlers: EventHandlers, options: EventOptions = {}): AssignerEvents {
    const events = new AssignerEvents(handlers, options);
    events.run(url).catch((err: unknown) => {
      // Closing (a subscription asked for while NATS drains) is no refusal.
      if (!events.closing.signal.aborted) events.refuse("telemetry subscription", err);
    });
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
        if (status.type === "error" && isRefused(status.error, "publish")) this.noticeRefused(status.error);
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
        const host = hostId.success ? hostId.data : undefined;
        if (!parsed.success) return this.handlers.malformed(host, "not a signed telemetry envelope (JSON with payload and signature)");
        if (host === undefined) return this.handlers.malformed(undefined, "its subject names no valid host id");
        await this.handlers.telemetry(parsed.data, host).catch((err: unknown) => this.handlers.failed(host, err));
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
    const subject = assignmentsSubject(notice.host_id);
    this.recent.delete(subject); // to the newest end
    this.recent.set(subject, notice);
    if (this.recent.size > RECENT_NOTICES) this.recent.delete(this.recent.keys().next().value!);
    const refused = this.refusedNotices.get(subject);
    if (refused) refused.notice = notice;
    nc.publish(subject, JSON.stringify(notice));
  }

  private noticeRefused(err: unknown): void {
    const subject = (err as { subject?: unknown }).subject;
    if (typeof subject !== "string") return;
    const notice = this.recent.get(subject) ?? this.refusedNotices.get(subject)?.notice;
    // Not one of the last RECENT_NOTICES hosts notified (one change woke more): that host learns of it at its next poll.
    if (!notice) return;
    this.refusedNotices.delete(subject); // to the newest end
    this.refusedNotices.set(subject, { notice, refusal: ++this.noticeRefusals });
    if (this.refusedNotices.size > RECENT_NOTICES) this.refusedNotices.delete(this.refusedNotices.keys().next().value!); // its host polls
    this.refuse("assignment notices", err);
    if (!this.retrying) void this.retryNotices();
  }

  /**
   * Sends the refused notices again (the missed wake-ups), RETRIED_NOTICES at
   * a time in turn, with a backoff that starts again whenever NATS takes
   * some, until it has taken them all: a flush answered with no refusal of
   * theirs since. A NATS that still refuses one (its permissions deny that
   * host) keeps counting as disconnected, and its notice keeps its turn: with
   * many such hosts, a newly refused one waits some turns (its host polls
   * meanwhile; a notice only saves the wait for the poll).
   */
  private async retryNotices(): Promise<void> {
    this.retrying = true;
    const { signal } = this.closing;
    const retryMs = natsRetryBase(this.options.retryMs);
    try {
      for (let attempt = 1; this.refusedNotices.size > 0 && !signal.aborted; attempt++) {
        await refusalWait(attempt, retryMs, signal);
        const { nc } = this;
        if (!nc || !this.connected || signal.aborted) continue;
        const tried = [...this.refusedNotices.keys()].slice(0, RETRIED_NOTICES);
        const before = this.noticeRefusals;
        for (const subject of tried) {
          const entry = this.refusedNotices.get(subject)!;
          // To the end of the turn: a host denied for good does not keep the others from being tried.
          this.refusedNotices.delete(subject);
          this.refusedNotices.set(subject, entry);
          nc.publish(subject, JSON.stringify(entry.notice));
        }
        if (!(await flushed(nc, signal))) continue;
        const size = this.refusedNotices.size;
        for (const subject of tried) if ((this.refusedNotices.get(subject)?.refusal ?? Infinity) <= before) this.refusedNotices.delete(subject);
        if (this.refusedNotices.size < size) attempt = 0; // NATS takes some: the next turn comes soon
        if (this.refusedNotices.size === 0) this.accept("assignment notices");
      }
    } finally {
      this.retrying = false;
    }
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
