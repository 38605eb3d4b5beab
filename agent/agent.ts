// The agent: learns what this host is assigned (poll for-host with its ETag,
// woken at once by NATS), fetches and verifies each new digest, plans, and
// has the executor carry the plan out through the Datapath. It adopts what
// is pinned and attached when it starts and never detaches anything when it
// stops: enforcement outlives the process (docs/architecture.md "The agent").
import type { KeyObject } from "node:crypto";
import { hostname, release } from "node:os";
import type { NatsConnection } from "@nats-io/transport-node";
import { ArtifactJson, AssignerClient, AssignerError, assignmentsSubject, capabilitiesJson, MAX_ASSIGNED, sealTelemetry, telemetrySubject } from "../assigner/api/index.js";
import { BUNDLE_LIMITS } from "../bundle/index.js";
import { hookName, probeKernelFeatures, type Attachment, type Datapath, type LoadedProgram } from "../ebpf/index.js";
import { describeError, errorCode } from "../errors.js";
import type { RepositoryOptions } from "../registry/index.js";
import type { SignatureError, TrustPolicy } from "../signing/index.js";
import { backoffDelay, connectNats, failureWait, logText, natsRetryBase, refusalWait, sleep, subscribeKept } from "../util/index.js";
import { AgentError } from "./errors.js";
import { Executor } from "./executor.js";
import { ArtifactCache, assignerAllowanceMs, DEFAULT_PULL_TIMEOUT_MS, type FetchOptions, type VerifiedArtifact } from "./fetch.js";
import { reportedReason } from "./fetch-failure.js";
import { withDeadline } from "./deadline.js";
import { pooled } from "./pool.js";
import { AgentMetrics } from "./metrics.js";
import { TelemetryRoute } from "./telemetry-route.js";
import { newestByName, plan, type InstalledProgram, type Program, type Step } from "./plan.js";
import { logLine, receiptCounters, telemetryMessage, type Reporter, type StepReport } from "./report.js";
import { recordOf, StateDir, type InstalledRecord, type OrphanRecord } from "./state.js";
import { TrustCheck, trustBasis, trustVerdictOf } from "./trust-check.js";
import { TrustRootFollower, type TrustRootOptions } from "./trust-root.js";
import { collectStatus } from "./status.js";
import type { z } from "zod";

export interface AgentOptions {
  assigner: string;
  hostId: string;
  stateDir: string;
  datapath: Datapath;
  /** Pinned keys (and identities); with `trustRoot`, added to what the followed root ships. */
  trust: TrustPolicy;
  /** Follow a signed trust root artifact (agent/trust-root.ts). */
  trustRoot?: TrustRootOptions;
  /** Interfaces to attach on; default every Ethernet device the Datapath sees (not the loopback, nor a tunnel: NetInterface.ethernet). */
  ifaces?: readonly string[];
  mirrors?: readonly string[];
  /**
   * The registries (`host[:port]`) an artifact's reference may name; default
   * any. A reference elsewhere, or naming a directory on this host (`oci:`,
   * never read: local layouts are the operator's, as mirrors), is not read,
   * and the assigner's copy is asked instead (FetchOptions.references).
   */
  allowedRegistries?: readonly string[];
  natsUrl?: string;
  /** Base of the wait between attempts to reach NATS, or to have it take a refused subscription or publish again (ms); default 500 (util/nats.ts). */
  natsRetryMs?: number;
  /** Mean poll interval (ms); default 30 s. */
  pollIntervalMs?: number;
  /** How long one exchange with the assigner may take (ms); default 30 s. */
  requestTimeoutMs?: number;
  /** How long one registry (a mirror, the reference) may take to serve an artifact whole (ms); default 5 minutes (FetchOptions.pullTimeoutMs). */
  pullTimeoutMs?: number;
  /**
   * How long a pass's fetches of new digests may take together (ms); default
   * one digest's longest fetch: the pull timeout at each mirror and the
   * reference, then the assigner's allowance for the largest bundle. Those
   * unfinished then are cut off (failed, backed off), those not begun are
   * left for the next pass; the pass goes on to its removals and receipts.
   */
  fetchBudgetMs?: number;
  /** Cap of the backoff after failures (ms); default four poll intervals. */
  maxBackoffMs?: number;
  /**
   * Least time from the end of one pass to the start of a pass that a NATS
   * wake-up brings forward (ms); default 250. A flood of wake-ups (a
   * publisher gone wrong, or hostile) leaves the agent idle at least this
   * long between passes, each a poll of the assigner, a read of the kernel's
   * state and receipts, however long a pass takes (counted from a pass's
   * start, passes longer than the gap ran back to back); changes a person
   * makes one after another are not held back.
   */
  minWakeGapMs?: number;
  /**
   * Base of the wait before a digest whose fetch failed again is fetched once
   * more (ms); default the poll interval. The first failure is retried at the
   * next pass; from the second in a row the wait doubles, up to ten bases
   * (util failureWait); an attempt that took a base or more waits at least
   * as long as it took. The wait is counted from the end of the pass's
   * fetches, so a long pass does not use it up.
   */
  fetchRetryMs?: number;
  labels?: Record<string, string>;
  enrollSecret?: string;
  /** Fetch, verify and plan, but never touch the Datapath. */
  dryRun?: boolean;
  repository?: RepositoryOptions;
  /** The operator's log; default stderr. */
  log?: (line: string) => void;
  /** More places steps go (tests); the log and NATS always get them. */
  reporters?: Reporter[];
}

/** How far ahead sequence numbers are reserved (µs): an hour. */
const SEQ_BLOCK = 3600 * 1_000_000;

/** A NATS connection that lasted this long before it closed was not closed at once: the wait before dialling again starts over. */
const NATS_LIVED_MS = 60_000;

type Assigned = z.infer<typeof ArtifactJson>;

/**
 * Digests fetched at once, by a pass or by a rotation's fetch of signatures
 * again (which refuses every program's cached signatures in the same pass):
 * a host's fan-out to its registries stays this small however many it runs,
 * and a digest whose registry stalls holds up one turn, not the rest.
 */
const FETCH_CONCURRENCY = 4;

/** What a pass's underTrust may fetch again: the digests assigned, and those whose fetch failed, with the trust basis it failed under. */
interface Refetch {
  assigned: readonly Assigned[];
  failed: Map<string, string>;
}

/** What a pass's fetch of a digest gave (Agent.fetchDue): the artifact verified, or the failure and how long the attempt took (ms). */
type Fetched = { artifact: VerifiedArtifact } | { failure: unknown; took: number };

/** A program of the agent's whose pins were lost: tc still runs it at `hooks`. */
interface Orphan {
  record: OrphanRecord;
  hooks: Attachment[];
}

/** What installedNow() found: the agent's records, the kernel's programs and hooks, the orphans in force, and the kernel's boot (Datapath.boot; none on a dry run, which reads no kernel). */
interface Installed {
  records: Map<string, InstalledRecord>;
  loaded: LoadedProgram[];
  attached: Attachment[];
  /** The prefs of every clsact filter, attached's and those of filters running no BPF (Datapath.prefsInUse): none is a new policy's. */
  inUse: number[];
  orphans: Orphan[];
  boot: string | undefined;
  /** The records of programs no longer loaded, dropped from `records` (and from the file) by this reading. */
  dropped: [string, InstalledRecord][];
}

export class Agent {
  readonly state: StateDir;
  readonly cache: ArtifactCache;
  /** What /metrics shows (served by the CLI on --metrics-port). */
  readonly metrics: AgentMetrics;
  private readonly controller = new AbortController();
  /** The pass under way's (withPassSignal). */
  private passController: AbortController | undefined;
  /** The state dir's, held from start() to stop(). */
  private lock: { release(): void } | undefined;
  private readonly executor: Executor;
  private readonly log: (line: string) => void;
  private readonly interval: number;
  /** The options' requestTimeoutMs and fetchBudgetMs, or their defaults. */
  private readonly requestTimeoutMs: number;
  private readonly fetchBudgetMs: number;
  private client: AssignerClient | undefined;
  private etag: string | undefined;
  private assigned: Assigned[] = [];
  /** Digests already reported received, verified, failed (with the code), so a poll does not repeat them. */
  private readonly received = new Set<string>();
  private readonly failed = new Map<string, string>();
  private readonly stepFailed = new Map<string, string>();
  private readonly verifiedOnce = new Set<string>();
  /**
   * Digests whose fetch failed: how many times in a row, when it may be tried
   * again (performance.now(): a clock stepped back does not lengthen the
   * wait), and on what basis (retryBasis): a new one is tried at once.
   */
  private readonly fetchRetry = new Map<string, { failures: number; notBefore: number; basis: string }>();
  private readonly missing = new Set<string>();
  /** Devices logged as not Ethernet, each once. */
  private readonly notEthernet = new Set<string>();
  private readonly superseded = new Set<string>();
  /** Programs whose counters could not be read at the last receipt (logged once). */
  private readonly countersUnread = new Set<string>();
  /** An `attached` step went out without its receipt since the last receipts were sent (publish). */
  private receiptsOwed = false;
  /** NATS connections closed in a row, each soon after it was made (NATS_LIVED_MS): the wait before dialling again grows with them. */
  private natsCloses = 0;
  /** Programs lost from the kernel that the cache could not give while the assigner could not be asked (logged once, until it answers). */
  private readonly unreloadable = new Set<string>();
  /** Previous versions loaded again, or not, for a policy whose assigned version cannot be had (pass): each outcome said once. */
  private readonly fallbackSaid = new Set<string>();
  /** Digests that said program_loaded since their step last succeeded: a step that keeps failing says it once (report). */
  private readonly loadSaid = new Set<string>();
  private nats: NatsConnection | undefined;
  /** The attempts at NATS under way (connectNats), which stop() waits for: a dial begun before it ends before it returns. */
  private natsDialing: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  /** A wake-up that came while reconciling: the next sleep ends at once, so no change is missed. */
  private woken = false;
  /** When the loop's last pass ended (performance.now()), for minWakeGapMs. */
  private passEndedAt = -Infinity;
  private queue: Promise<unknown> = Promise.resolve();
  private loop: Promise<void> | undefined;
  /** The registered key, which signs every message, and the uid the HTTP route is under. */
  private key: KeyObject | undefined;
  private agentUid: string | undefined;
  /** The last `seq` sent: microseconds since the epoch at least, and above what was reserved before a restart (reserveSeq). */
  private seq = 0;
  /** Every `seq` sent is below this, also on file (StateDir.seqReserved). */
  private seqReserved = 0;
  private reserving: Promise<void> | undefined;
  /** Where signed messages go: NATS, or the HTTP route's outbox. */
  private readonly telemetry: TelemetryRoute;
  private readonly trustRoot: TrustRootFollower | undefined;
  /** What runs, verified again whenever the trust in force changes. */
  private readonly trustCheck: TrustCheck;

  constructor(private readonly options: AgentOptions) {
    this.state = new StateDir(options.stateDir);
    this.cache = new ArtifactCache(this.state.cacheDir);
    this.trustCheck = new TrustCheck(this.cache, (line) => this.log(line));
    // Lines quote what registries and the assigner said: escaped and bounded, so none can forge or flood the journal.
    const sink = options.log ?? ((line: string) => process.stderr.write(`aegis agent: ${line}\n`));
    this.log = (line) => sink(logText(line));
    this.interval = options.pollIntervalMs ?? 30_000;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.fetchBudgetMs = options.fetchBudgetMs ?? ((options.mirrors?.length ?? 0) + 1) * (options.pullTimeoutMs ?? DEFAULT_PULL_TIMEOUT_MS) + assignerAllowanceMs(this.requestTimeoutMs, BUNDLE_LIMITS.maxTotalSize);
    const reporter: Reporter = { report: (step) => this.report(step) };
    this.executor = new Executor(options.datapath, reporter);
    this.telemetry = new TelemetryRoute(telemetrySubject(options.hostId), this.log, options.natsRetryMs);
    this.metrics = new AgentMetrics(async () => collectStatus(options.datapath, await this.state.installed()));
    this.trustRoot = options.trustRoot
      ? new TrustRootFollower({
          ...options.trustRoot,
          stateDir: options.stateDir,
          mirrors: options.mirrors ?? [],
          log: this.log,
          ...(options.repository ? { repository: options.repository } : {}),
          ...(options.pullTimeoutMs ? { pullTimeoutMs: options.pullTimeoutMs } : {}),
        })
      : undefined;
  }

  /** Adopts what the kernel runs, connects to NATS in the background, and starts the poll loop. */
  async start(): Promise<void> {
    await this.state.init();
    const lock = this.state.lock();
    if (!lock) throw new AgentError("STATE_DIR_IN_USE", `another agent runs on ${this.state.dir} (it holds ${this.state.lockFile}): stop it first, or give this one its own --state-dir`);
    this.lock = lock;
    try {
      await this.prepare();
    } catch (err) {
      // A start that fails leaves the state dir to the next.
      this.lock.release();
      this.lock = undefined;
      throw err;
    }
    this.connectNats();
    this.loop = this.run();
  }

  /** start()'s work once the state dir is this agent's: its key, its sequence numbers, the trust root, what the kernel runs. */
  private async prepare(): Promise<void> {
    this.key = await this.state.key();
    this.seq = await this.state.seqReserved();
    this.seqReserved = this.seq;
    await this.reserveSeq();
    await this.trustRoot?.init();
    if (this.options.dryRun) this.log("dry run: verifying only, NOTHING IS ENFORCED by this agent");
    try {
      const loaded = await this.options.datapath.loaded();
      const attached = await this.options.datapath.attached();
      const records = await this.state.installed();
      for (const p of loaded) {
        const hooks = attached.filter((a) => a.id === p.id).length;
        this.log(`adopted ${records.get(p.id)?.name ?? "(unknown policy)"} ${p.id} (program id ${p.programId}, ${hooks} hook(s))`);
      }
    } catch (err) {
      // A dry run is what runs where BPF cannot: not being able to read the kernel's state is expected there.
      if (!this.options.dryRun) throw err;
      this.log(`dry run: cannot read the datapath (${describeError(err)})`);
    }
  }

  /** Stops polling, cancels a pull in flight, closes NATS. Detaches nothing. */
  async stop(): Promise<void> {
    this.controller.abort(new Error("agent stopping"));
    await this.loop?.catch(() => undefined);
    await this.queue.catch(() => undefined);
    await this.nats?.close().catch(() => undefined);
    await this.natsDialing;
    this.lock?.release();
    this.lock = undefined;
  }

  /** One reconciliation now, serialized with the loop's (tests call it to step the agent). */
  reconcile(): Promise<void> {
    const next = this.queue.then(() => this.withPassSignal(() => this.reconcileOnce()));
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** The signal of the pass under way (withPassSignal), else the agent's own: what a stop aborts. */
  private get signal(): AbortSignal {
    return this.passController?.signal ?? this.controller.signal;
  }

  /**
   * Runs a pass with a signal of its own, which the agent's stop aborts. The
   * clients below combine the signal they are given with others
   * (AbortSignal.any, per request); combined with the agent's lifelong
   * signal, Node 20 keeps a reference to each combination from it, about 50
   * bytes that are never freed, tens per pass, on a host that runs for
   * months. A pass's own signal is dropped with the pass, and those with it.
   */
  private async withPassSignal<T>(work: () => Promise<T>): Promise<T> {
    const pass = new AbortController();
    const stop = () => pass.abort(this.controller.signal.reason);
    if (this.controller.signal.aborted) stop();
    else this.controller.signal.addEventListener("abort", stop, { once: true });
    this.passController = pass;
    try {
      return await work();
    } finally {
      this.passController = undefined;
      this.controller.signal.removeEventListener("abort", stop);
    }
  }

  private async run(): Promise<void> {
    const { signal } = this.controller;
    let failures = 0;
    while (!signal.aborted) {
      // Wake-ups from now on ask for a pass after this one: this one reads the assigner's answer as it is now.
      this.woken = false;
      try {
        await this.reconcile();
        failures = 0;
      } catch (err) {
        if (signal.aborted) break;
        failures++;
        this.log(`reconcile failed [${errorCode(err)}]: ${describeError(err)} (attempt ${failures}, backing off)`);
      }
      this.passEndedAt = performance.now();
      // Full jitter over [0, 2×interval]: the mean stays the interval and a fleet started together spreads out.
      // After failures, quick retries at first (a blip), growing to four intervals: a fleet asks a failing assigner
      // less often than a healthy one (a cap of one interval made it ask twice as often, with a mean of half of it).
      const wait = failures > 0 ? backoffDelay(failures, { baseMs: Math.min(1000, this.interval), maxMs: this.options.maxBackoffMs ?? 4 * this.interval }) : Math.random() * 2 * this.interval;
      // After a failed pass the backoff is waited out whatever wakes the agent, so a flood of wake-ups has a failing
      // assigner asked no more often (a wake-up meanwhile is not lost: the next pass asks for the set anyway).
      if (failures > 0) await sleep(wait, signal).catch(() => undefined);
      else if (await this.sleepOrWake(wait)) await this.keepWakeGap();
    }
  }

  /** Sleeps `ms`; true if a wake-up ended it (or came during the pass), false if the time passed or the agent stops. */
  private async sleepOrWake(ms: number): Promise<boolean> {
    if (this.woken) return true;
    // A listener on the agent's signal, removed after, not AbortSignal.any with it (see withPassSignal).
    const woken = new AbortController();
    const wake = () => woken.abort();
    this.wake = wake;
    this.controller.signal.addEventListener("abort", wake, { once: true });
    try {
      if (!this.controller.signal.aborted) await sleep(ms, woken.signal);
    } catch {
      // woken or stopping
    } finally {
      this.controller.signal.removeEventListener("abort", wake);
      this.wake = undefined;
    }
    return woken.signal.aborted && !this.controller.signal.aborted;
  }

  /** Waits out what is left of minWakeGapMs since the last pass ended (wake-ups meanwhile make no more passes than this one). */
  private async keepWakeGap(): Promise<void> {
    const left = this.passEndedAt + (this.options.minWakeGapMs ?? 250) - performance.now();
    if (left > 0) await sleep(left, this.controller.signal).catch(() => undefined);
  }

  /** Reconciles as soon as possible: now if sleeping, else right after the current pass. */
  private nudge(): void {
    if (this.wake) this.wake();
    else this.woken = true;
  }

  private connectNats(): void {
    const url = this.options.natsUrl;
    if (!url) {
      this.log("no --nats: polling only");
      return;
    }
    this.log(`connecting to NATS at ${withoutCredentials(url)}; polling only until connected`);
    this.natsDialing = (async () => {
      const nc = await connectNats(url, {
        name: `aegis-agent-${this.options.hostId}`,
        signal: this.controller.signal,
        ...(this.options.natsRetryMs !== undefined ? { retryMs: this.options.natsRetryMs } : {}),
        onFirstFailure: (err) => this.log(`NATS unavailable (${describeError(err)}): polling only, retrying`),
      });
      if (!nc) return;
      this.nats = nc;
      // nats.js redials a lost server for ever, but closes for good on some errors (refused credentials twice in a
      // row): then this agent dials again, as at start, rather than go without wake-ups until it is restarted.
      // A server that closes each connection at once is dialled after a growing wait, not in a tight loop.
      const since = performance.now();
      void nc.closed().then(async (err) => {
        if (this.controller.signal.aborted) return;
        this.natsCloses = performance.now() - since > NATS_LIVED_MS ? 1 : this.natsCloses + 1;
        this.log(`NATS closed the connection${err ? ` (${describeError(err)})` : ""}: polling only, connecting again`);
        await refusalWait(this.natsCloses, natsRetryBase(this.options.natsRetryMs), this.controller.signal);
        if (!this.controller.signal.aborted) this.connectNats();
      });
      this.telemetry.use(nc);
      const subject = assignmentsSubject(this.options.hostId);
      this.log(`NATS connected: woken by ${subject}`);
      // While NATS refuses the subscription (its permissions), the agent learns of its assignments by polling.
      await subscribeKept(nc, subject, () => this.nudge(), {
        signal: this.controller.signal,
        ...(this.options.natsRetryMs !== undefined ? { retryMs: this.options.natsRetryMs } : {}),
        onRefused: (err) => this.log(`NATS refused the subscription to ${subject} (${describeError(err)}): polling only, asking again later`),
        onAccepted: () => this.log(`NATS took the subscription to ${subject}: woken by it again`),
      });
    })().catch((err: unknown) => this.log(`NATS: ${describeError(err)}: polling only`));
  }

  /** A step: one line in the operator's log, and published. */
  private report(step: StepReport): void {
    // A step that keeps failing loads its program again on every pass: that is said the first time only, so the
    // failure stays the digest's latest report (at the assigner too) and the journal gets no line per pass.
    if (step.event === "program_loaded") {
      if (this.stepFailed.has(step.id) && this.loadSaid.has(step.id)) return;
      this.loadSaid.add(step.id);
    }
    if (step.event === "failed") this.metrics.failed(step.code ?? "INTERNAL");
    this.log(logLine(step));
    this.publish(step);
  }

  /**
   * Sends a report to the test reporters and, signed with the agent's key,
   * to the assigner: on NATS when connected, else queued for POST
   * /agents/{uid}/telemetry at the end of the pass (and before it fetches a
   * new digest). An `attached` step without its receipt is not sent: the
   * receipt follows in the same pass.
   */
  private publish(step: StepReport): void {
    for (const reporter of this.options.reporters ?? []) reporter.report(step);
    const withoutReceipt = step.event === "attached" && !step.receipt;
    if (withoutReceipt) this.receiptsOwed = true;
    if (!this.key || withoutReceipt) return;
    this.seq = Math.max(this.seq + 1, Date.now() * 1000);
    // Reserved ahead at the start of each pass; one that runs past its block (a pull of hours) reserves more now.
    if (this.seq >= this.seqReserved) void this.reserveSeq();
    const envelope = sealTelemetry(telemetryMessage(this.options.hostId, step, this.seq), this.key);
    this.telemetry.send(envelope);
  }

  /**
   * Keeps the sequence numbers reserved on file an hour (of microseconds)
   * ahead of the last one sent and of the clock: written about every half
   * hour, and before any report of a pass.
   */
  private async reserveSeq(): Promise<void> {
    const ahead = Math.max(this.seq, Date.now() * 1000);
    if (ahead + SEQ_BLOCK / 2 <= this.seqReserved) return;
    if (this.reserving) return this.reserving;
    const next = ahead + SEQ_BLOCK;
    this.reserving = this.state
      .saveSeqReserved(next)
      .then(() => void (this.seqReserved = Math.max(this.seqReserved, next)))
      .catch((err: unknown) => this.log(`cannot save the reserved sequence numbers: ${describeError(err)}`))
      .finally(() => (this.reserving = undefined));
    return this.reserving;
  }

  /** Confirms what went to NATS this pass, then sends what waits for HTTP (agent/telemetry-route.ts). */
  private async flushTelemetry(): Promise<void> {
    await this.telemetry.confirm(this.signal);
    const uid = this.agentUid;
    if (!uid) return;
    await this.telemetry.outbox.flush(async (batch) => this.bounded(async (signal) => (await this.assignerClient()).telemetry(uid, batch, { signal })), this.signal);
  }

  /** The agent token: the stored one for this assigner and host, or a fresh registration with the agent's key. */
  private async assignerClient(refresh = false): Promise<AssignerClient> {
    if (this.client && !refresh) return this.client;
    const { assigner, hostId } = this.options;
    const stored = refresh ? undefined : await this.state.registration();
    // A new kernel (a reboot into an upgrade) registers again, so the assigner checks assignments against what runs now.
    if (stored && stored.assigner === assigner && stored.host_id === hostId && (stored.kernel === undefined || stored.kernel === release())) {
      this.agentUid = stored.agent_uid;
      this.client = new AssignerClient(assigner, stored.token);
      return this.client;
    }
    const registered = await new AssignerClient(assigner).register(hostId, this.key ?? (await this.state.key()), {
      hostname: hostname(),
      kernel: release(),
      capabilities: capabilitiesJson(probeKernelFeatures()),
      ...(this.options.labels && Object.keys(this.options.labels).length > 0 ? { labels: this.options.labels } : {}),
      ...(this.options.enrollSecret !== undefined ? { enrollSecret: this.options.enrollSecret } : {}),
    });
    await this.state.saveRegistration({ assigner, host_id: registered.host_id, agent_uid: registered.agent_uid, token: registered.token, kernel: release() });
    this.log(`registered as ${registered.agent_uid} for host ${registered.host_id}`);
    this.agentUid = registered.agent_uid;
    this.client = new AssignerClient(assigner, registered.token);
    return this.client;
  }

  /** The assigned set: unchanged (304) keeps the last one; a refused token registers again with the same key. */
  private async poll(signal: AbortSignal): Promise<Assigned[]> {
    const forHost = async (client: AssignerClient) => client.forHost(this.options.hostId, { signal, ...(this.etag ? { ifNoneMatch: this.etag } : {}) });
    let result;
    try {
      result = await forHost(await this.assignerClient());
    } catch (err) {
      if (!(err instanceof AssignerError && err.code === "UNAUTHORIZED")) throw err;
      this.log("the assigner refused the agent token: registering again with the same key");
      result = await forHost(await this.assignerClient(true));
    }
    if (!result.notModified) {
      // Refused whole, before its ETag is kept: the last answer stays the assigned set, and the next poll asks again.
      this.assigned = assignedIn(result.body, this.options.assigner);
      this.etag = result.etag || undefined;
    }
    return this.assigned;
  }

  /**
   * The assigner's answer, unless the agent stops or the assigner hangs past
   * the request timeout first. `work` gets the signal of both, which aborts
   * its request and body (the poll, telemetry); a step it does not reach (a
   * registration) is abandoned, left to finish on its own: its answer is
   * small and capped (assigner/api/client.ts).
   */
  private bounded<T>(work: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const ms = this.requestTimeoutMs;
    const outer = this.signal;
    const { signal, clear } = withDeadline(outer, ms, () => new DOMException(`no answer within ${ms} ms`, "TimeoutError"));
    return new Promise<T>((resolve, reject) => {
      const onAbort = () =>
        reject(outer.aborted ? outer.reason : new AgentError("UNAVAILABLE", `the assigner at ${this.options.assigner} did not answer within ${ms} ms`));
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort, { once: true });
      work(signal)
        .then(resolve, reject)
        .finally(() => {
          clear();
          signal.removeEventListener("abort", onAbort);
        });
    });
  }

  /**
   * The interfaces to enforce on now: the configured ones that exist (a
   * missing one is logged once), or every Ethernet device but the
   * loopback. A device that carries no Ethernet frames (a tunnel) is left
   * out, and logged once: the program would read its packets at the wrong
   * offset.
   */
  private async interfaces(): Promise<string[]> {
    const present = await this.options.datapath.interfaces();
    const configured = this.options.ifaces ?? [];
    for (const { name, loopback, ethernet } of present) {
      const wanted = configured.length === 0 ? !loopback : configured.includes(name);
      if (!wanted || ethernet || this.notEthernet.has(name)) continue;
      this.notEthernet.add(name);
      this.log(`interface ${name} carries no Ethernet frames (a tunnel): no policy is attached there`);
    }
    // Devices gone are forgotten, so one that comes back as a tunnel is said again.
    for (const name of this.notEthernet) if (!present.some((i) => i.name === name)) this.notEthernet.delete(name);
    if (configured.length === 0) return present.filter((i) => i.ethernet && !i.loopback).map((i) => i.name);
    const usable = present.filter((i) => i.ethernet).map((i) => i.name);
    const names = new Set(present.map((i) => i.name));
    for (const iface of configured) {
      if (!names.has(iface) && !this.missing.has(iface)) this.log(`interface ${iface} does not exist (yet): enforcing on it once it appears`);
      if (names.has(iface)) this.missing.delete(iface);
      else this.missing.add(iface);
    }
    return configured.filter((iface) => usable.includes(iface));
  }

  private async reconcileOnce(): Promise<void> {
    const { signal } = this;
    signal.throwIfAborted();
    await this.reserveSeq();
    let assigned: Assigned[];
    try {
      assigned = await this.bounded((signal) => this.poll(signal));
    } catch (err) {
      signal.throwIfAborted();
      // The pass still fails (backoff, the operator's log), once what is installed has been held in force.
      await this.holdInstalled().catch((held: unknown) => this.log(`while the assigner could not be asked: ${describeError(held)}`));
      throw err;
    }
    try {
      await this.pass(assigned);
    } catch (err) {
      signal.throwIfAborted();
      // A pass that fails after the assigner answered (the trust root unreachable, the kernel unreadable) still
      // holds what is installed, and sends what it reported; the metric of the last pass stays as it was.
      await this.holdInstalled().catch((held: unknown) => this.log(`while the pass could not finish: ${describeError(held)}`));
      await this.flushTelemetry().catch(() => undefined);
      throw err;
    }
    this.metrics.polled();
    this.unreloadable.clear();
  }

  /** The pass once the assigner answered with `assigned`: fetch and verify, plan, enforce, report. */
  private async pass(assigned: Assigned[]): Promise<void> {
    const { signal } = this;
    const dry = this.options.dryRun === true;
    // What the trust held already refuses is taken out before anything else (underTrust): a program signed by a
    // revoked key does not run on while this pass holds, fetches and restores. One whose signatures may be fetched
    // again (deferred to the second check, below) is left exactly as it is until then: not held, nor restored.
    const heldTrust = this.trustRoot ? this.trustRoot.heldTrust(this.options.trust) : this.options.trust;
    let now = await this.installedNow();
    let refused = new Set<string>();
    let deferred = new Set<string>();
    // Programs whose signatures underTrust fetched again in vain, and under which trust: not asked again in this pass.
    const refetch: Refetch = { assigned, failed: new Map() };
    if (!dry && heldTrust) ({ now, refused, deferred } = await this.underTrust(now, heldTrust, { ...refetch, defer: true }));

    const desired: Program[] = [];
    const hold: string[] = [];
    const verified = new Map<string, VerifiedArtifact>();
    const fresh = assigned.filter((a) => !now.records.has(a.id));
    for (const artifact of fresh) {
      if (this.received.has(artifact.id)) continue;
      this.received.add(artifact.id);
      this.report({ event: "received", id: artifact.id, name: artifact.name, version: artifact.version });
    }
    // A digest never verified here is fetched from a registry, which may take minutes (pullTimeoutMs for each source,
    // should one be slow or unreachable): what runs and is still assigned (by digest, or a version of its policy) is
    // held first, as in a pass without the assigner, so meanwhile a deleted filter is back and a new interface
    // covered; one unassigned is left as it is, for this pass to remove. The assigner then has what changed (receipts
    // included) and the digests received, so it takes their reports even if they are unassigned before they come.
    // (A digest verified before comes from the cache.)
    if (!dry && fresh.some((a) => !this.verifiedOnce.has(a.id) && !this.backedOff(a))) {
      const running = this.actual(now, assigned, verified).filter((p) => !deferred.has(p.id) && assigned.some((a) => a.id === p.id || a.name === p.name));
      await this.enforce(plan([], running, { hold: running.map((p) => p.name), distrusted: [...refused] }), now.records, verified);
      if (this.receiptsOwed) await this.reportReceipts(now.records);
      await this.flushTelemetry();
    }
    // The followed trust root first: a rotated CA or log key applies to this pass's verifications, and what the new
    // root refuses is taken out at once. Taken before any verification, the basis is never newer than what it names.
    const trust = this.trustRoot ? await this.trustRoot.trust(this.options.trust, signal) : this.options.trust;
    const basis = this.basis(trust);
    const checked = dry ? { now, refused: new Set<string>(), unchecked: new Set<string>() } : await this.underTrust(now, trust, { ...refetch, defer: false });
    now = checked.now;
    const { records, loaded, attached, orphans } = now;
    // Installed and refused (its removal failed), or unchecked (the cache could not give it): an assigned one is
    // fetched as a new digest would be (its registries may carry a signature the trust accepts, or repair the cache).
    const distrusted = checked.refused;
    const runsTrusted = (id: string) => records.has(id) && !distrusted.has(id) && !checked.unchecked.has(id);
    const fetched = await this.fetchDue(
      assigned.filter((a) => !runsTrusted(a.id) && !this.backedOff(a) && refetch.failed.get(a.id) !== basis),
      trust,
    );
    for (const artifact of assigned) {
      const record = records.get(artifact.id);
      if (record && runsTrusted(artifact.id)) {
        desired.push({ id: artifact.id, name: record.name, version: record.version });
        continue;
      }
      // Not fetched in this pass: one that keeps failing is not asked of its registries at every pass (a fleet would
      // ask together, every interval, for what none can give; reported failed once), and one whose turn did not come
      // within the pass's budget is left for the next. What is installed of its policy stays in force.
      const outcome = fetched.get(artifact.id);
      if (!outcome) {
        hold.push(artifact.name);
        continue;
      }
      if ("artifact" in outcome) {
        const v = outcome.artifact;
        const { policy } = v.bundle;
        verified.set(artifact.id, v);
        distrusted.delete(artifact.id);
        this.trustCheck.verified(artifact.id, basis);
        desired.push({ id: artifact.id, name: policy.name, version: policy.version });
        // Reported once (again after a failure): a superseded or dry-run digest is verified on every pass.
        const first = !this.verifiedOnce.has(artifact.id);
        if (this.failed.delete(artifact.id) || first) {
          this.report({ event: "verified", id: artifact.id, name: policy.name, version: policy.version, reason: `signed by ${v.signature.key.name}, from ${v.source}` });
        }
        if (this.options.dryRun && first) {
          this.log(`dry run: would load and attach ${policy.name} ${policy.version} ${artifact.id} (${policy.attach.direction}); nothing is enforced`);
        }
        this.verifiedOnce.add(artifact.id);
        this.fetchRetry.delete(artifact.id);
        continue;
      }
      const err = outcome.failure;
      // The claimed name only keeps an installed version in force: trusting it can never widen what runs. Not this
      // digest itself, if it runs (unchecked, orphaned, or never recorded) and the trust refuses its signatures.
      hold.push(artifact.name);
      const verdict = trustVerdictOf(err);
      if (verdict && (loaded.some((p) => p.id === artifact.id) || orphans.some((o) => o.record.id === artifact.id))) {
        this.trustCheck.refuse(artifact.id, verdict);
        distrusted.add(artifact.id);
      }
      const code = errorCode(err);
      // Counted from the end of the fetch phase, not of its own attempt: a long phase does not use up its wait.
      this.backOff(artifact, code, outcome.took);
      if (this.failed.get(artifact.id) !== code) {
        this.failed.set(artifact.id, code);
        // The assigner gets no text a registry wrote (fetch-failure.ts): the journal has it.
        this.log(`${artifact.id}: ${describeError(err)}`);
        this.report({ event: "failed", id: artifact.id, name: artifact.name, version: artifact.version, code, reason: reportedReason(err) });
      }
    }
    // After a refusal the next poll asks for the whole set again: what the assigner said may have been fixed since.
    if (hold.length > 0) this.etag = undefined;
    // Previous versions that may run again for a held policy (below) are remembered too: their step failures included.
    const heldDropped = now.dropped.filter(([, r]) => hold.includes(r.name));
    this.forget(new Set([...assigned.map((a) => a.id), ...records.keys(), ...heldDropped.map(([id]) => id)]));
    if (this.options.dryRun) return this.flushTelemetry();

    for (const p of newestByName(desired).superseded) {
      if (!this.superseded.has(p.id)) this.log(`superseded ${p.name} ${p.version} ${p.id}: a newer version of ${p.name} is assigned`);
      this.superseded.add(p.id);
    }
    const actual = this.actual(now, assigned, verified);
    // After a reboot, a policy whose assigned version cannot be had (held: its fetch or verification failed) runs the
    // version it ran before, from the cache and verified there, as in a pass without the assigner: not nothing until
    // the new one can be had. One the cache cannot give keeps its record and its blobs, to be tried again.
    const running = new Set(actual.map((p) => p.name));
    const fallback = heldDropped.filter(([, r]) => !desired.some((p) => p.name === r.name) && !running.has(r.name) && !attached.some((a) => a.pref === r.pref));
    const restored = await this.reloadable(fallback, trust, { why: "its assigned version cannot be fetched or verified", until: "that version can", said: this.fallbackSaid });
    for (const [id, v] of restored) {
      desired.push(v.program);
      verified.set(id, v.artifact);
    }
    const steps = plan(desired, actual, { hold, distrusted: [...distrusted], inUse: now.inUse });
    await this.enforce(steps, records, verified);
    const wanted = new Set(newestByName(desired).chosen.map((p) => p.name));
    await this.settleOrphans(orphans, records, ({ id, name }) => distrusted.has(id) || (!wanted.has(name) && !hold.includes(name)));
    await this.reportReceipts(records);
    const unrestored = fallback.filter(([id]) => !records.has(id));
    for (const [id, record] of unrestored) records.set(id, record);
    if (unrestored.length > 0) await this.state.saveInstalled(records);
    const keep = new Set([...desired.map((p) => p.id), ...steps.filter((s) => s.kind === "keep").map((s) => s.program.id), ...unrestored.map(([id]) => id)]);
    for (const digest of await this.cache.prune(keep)) if (loaded.some((p) => p.id === digest)) this.log(`pruned ${digest} from the cache`);
    await this.flushTelemetry();
  }

  /**
   * What a digest's failures in a row are counted on: what its fetch reads
   * and checks of the assigner's entry (the reference, the checksum) and the
   * trust root held. When one of them changes, the digest may verify now.
   * Not the rest of the entry (its name, version, signature), which a lying
   * assigner could change at every poll to have its registries asked every
   * pass.
   */
  private retryBasis(artifact: Assigned): string {
    return `${artifact.reference} ${artifact.checksum} ${this.trustRoot?.heldDigest ?? ""}`;
  }

  /**
   * Fetches and verifies `due` under `trust`, FETCH_CONCURRENCY at a time
   * (new digests first, before those that failed before) and within the
   * pass's fetch budget (fetchBudgetMs): one slow or stalling registry holds
   * one of them up, not the pass, whose removals and receipts come after.
   * What each gave, and how long each failure took; a digest whose turn
   * never came is left out (held, and tried at the next pass), one cut off
   * by the budget fails with it.
   */
  private async fetchDue(due: Assigned[], trust: TrustPolicy): Promise<Map<string, Fetched>> {
    const outcomes = new Map<string, Fetched>();
    if (due.length === 0) return outcomes;
    const ms = this.fetchBudgetMs;
    const { signal, deadline, clear } = withDeadline(this.signal, ms, () => new AgentError("UNAVAILABLE", `cut off at the pass's fetch budget of ${ms} ms`));
    // Each digest once (an assigner that lists one twice does not have it fetched twice at once into the cache).
    const once = [...new Map(due.map((a) => [a.id, a])).values()];
    const queue = [...once.filter((a) => !this.fetchRetry.has(a.id)), ...once.filter((a) => this.fetchRetry.has(a.id))];
    const options = { ...this.fetchOptions(trust), signal };
    let left: Assigned[];
    try {
      left = await pooled(queue, FETCH_CONCURRENCY, deadline, async (artifact) => {
        const attemptStart = performance.now();
        try {
          outcomes.set(artifact.id, { artifact: await this.cache.fetchVerified(artifact, options) });
        } catch (err) {
          this.signal.throwIfAborted();
          outcomes.set(artifact.id, { failure: deadline.aborted && !trustVerdictOf(err) ? deadline.reason : err, took: performance.now() - attemptStart });
        }
      });
    } finally {
      clear();
    }
    if (left.length > 0) this.log(`${left.length} assigned digest(s) not fetched within the pass's fetch budget of ${ms} ms, before their turn came: left for the next pass (${left.map((a) => a.id).join(", ")})`);
    return outcomes;
  }

  /** How an assigned digest is fetched and verified under `trust`: the mirrors, the reference, then the assigner. */
  private fetchOptions(trust: TrustPolicy): FetchOptions {
    return {
      mirrors: this.options.mirrors ?? [],
      references: this.options.allowedRegistries ? { registries: this.options.allowedRegistries } : {},
      trust,
      signal: this.signal,
      ...(this.client ? { assigner: this.client, assignerTimeoutMs: this.requestTimeoutMs } : {}),
      ...(this.options.pullTimeoutMs ? { pullTimeoutMs: this.options.pullTimeoutMs } : {}),
      ...(this.options.repository ? { repository: this.options.repository } : {}),
    };
  }

  /** A failed fetch of `artifact` (its error's `code`; the attempt took `took` ms) is not tried again until its wait, from now, has passed. */
  private backOff(artifact: Assigned, code: string, took: number): void {
    const basis = this.retryBasis(artifact);
    const retry = this.fetchRetry.get(artifact.id);
    const failures = retry?.basis === basis ? retry.failures + 1 : 1;
    // An attempt that took an interval or more (a registry that stalls until the pull timeout) waits at least as
    // long, the first too: passes spent on a digest none can give are at most every other one.
    const base = this.options.fetchRetryMs ?? this.interval;
    const wait = Math.max(failureWait(failures, base), took >= base ? took : 0);
    this.fetchRetry.set(artifact.id, { failures, notBefore: performance.now() + wait, basis });
    if (wait > 0) this.log(`fetching ${artifact.id} failed ${failures === 1 ? "after" : `${failures} times in a row, the last after`} ${(took / 1000).toFixed(1)} s [${code}]: not tried again for ${(wait / 1000).toFixed(wait < 10_000 ? 1 : 0)} s`);
  }

  /** A digest that failed again lately, on the same basis: not asked of its registries until its wait has passed. */
  private backedOff(artifact: Assigned): boolean {
    const retry = this.fetchRetry.get(artifact.id);
    return retry !== undefined && retry.basis === this.retryBasis(artifact) && performance.now() < retry.notBefore;
  }

  /**
   * Drops what the agent remembers of digests neither assigned nor installed
   * any more, so a long-running agent holds per-digest state for the current
   * set only, however many digests it has seen. One assigned again is new:
   * it is reported received again.
   */
  private forget(current: ReadonlySet<string>): void {
    for (const seen of [this.received, this.verifiedOnce, this.superseded, this.countersUnread, this.loadSaid]) for (const id of seen) if (!current.has(id)) seen.delete(id);
    for (const outcome of this.fallbackSaid) if (!current.has(outcome.split(" ")[0]!)) this.fallbackSaid.delete(outcome);
    for (const byId of [this.failed, this.stepFailed, this.fetchRetry]) for (const id of byId.keys()) if (!current.has(id)) byId.delete(id);
    this.trustCheck.forget(current);
  }

  /** What names `trust`, the trust in force now, for the TrustCheck (trustBasis). */
  private basis(trust: TrustPolicy): string {
    return trustBasis(trust, this.trustRoot?.heldDigest);
  }

  /**
   * Checks what is installed against `trust` (TrustCheck) and takes out at
   * once what it refuses, each said and reported failed with its verdict
   * once: what is installed after, the digests refused (one whose removal
   * failed is still installed, and orphans, for settleOrphans) and those the
   * cache could not check.
   *
   * Given `refetch` (a pass's, knowing what is assigned), a program still
   * assigned whose cached signatures the trust now refuses may have a
   * signature made for a key rotation in its registries. With `defer` (the
   * pass's first check, before it holds what runs) it is left as it is, to
   * the pass's second check; there it is fetched again (refetchSignatures)
   * after what no fetch can save is out, and runs on, with no gap, if it
   * verifies. One whose fetch fails is taken out and noted in
   * `refetch.failed` with the trust basis, so the pass does not ask its
   * registries again. Without `refetch` (the assigner away) it goes at once.
   * `deferred` names those left to the second check.
   */
  private async underTrust(now: Installed, trust: TrustPolicy, refetch?: Refetch & { defer: boolean }): Promise<{ now: Installed; refused: Set<string>; unchecked: Set<string>; deferred: Set<string> }> {
    // Orphans too (tc runs them, no pin names them): settleOrphans removes those refused.
    const programs = new Map<string, { name: string; version: string }>([...now.records, ...now.orphans.map(({ record }) => [record.id, record] as const)]);
    const basis = this.basis(trust);
    const { refused, verdicts, unchecked } = await this.trustCheck.check(programs, trust, basis, this.signal);
    const again = new Map<string, Assigned>();
    for (const id of verdicts.keys()) {
      const artifact = refetch?.assigned.find((a) => a.id === id);
      if (artifact && !this.backedOff(artifact) && refetch?.failed.get(id) !== basis) again.set(id, artifact);
    }
    const refuse = (id: string, verdict: SignatureError) => {
      this.trustCheck.refuse(id, verdict);
      refused.set(id, verdict);
    };
    for (const [id, verdict] of verdicts) if (!again.has(id)) refuse(id, verdict);
    if (refetch?.defer || again.size === 0) return { ...(await this.takeOut(now, refused, programs)), unchecked, deferred: new Set(again.keys()) };
    ({ now } = await this.takeOut(now, refused, programs));
    const saved = await this.refetchSignatures([...again.values()], trust, basis, refetch!.failed);
    for (const id of again.keys()) {
      if (saved.has(id)) this.trustCheck.verified(id, basis);
      else refuse(id, verdicts.get(id)!);
    }
    return { ...(await this.takeOut(now, refused, programs)), unchecked, deferred: new Set() };
  }

  /** Takes out the installed programs `refused` names (underTrust), each said and reported once with its verdict. */
  private async takeOut(now: Installed, refused: ReadonlyMap<string, SignatureError>, programs: ReadonlyMap<string, { name: string; version: string }>): Promise<{ now: Installed; refused: Set<string> }> {
    for (const [id, verdict] of refused) {
      if (this.failed.get(id) === verdict.code) continue;
      const { name, version } = programs.get(id)!;
      this.failed.set(id, verdict.code);
      this.log(`${name} ${version} ${id} no longer verifies under the trust in force (${describeError(verdict)}): taken out`);
      this.report({ event: "failed", id, name, version, code: verdict.code, reason: `no longer trusted: ${describeError(verdict)}` });
    }
    const ids = new Set(refused.keys());
    const out = this.actual(now, [], new Map()).filter((p) => ids.has(p.id));
    if (out.length === 0) return { now, refused: ids };
    await this.enforce(plan([], out, { distrusted: [...ids] }), now.records, new Map());
    // Read again for what the removals changed. What the first read found dropped (records of programs the kernel
    // lost, which it already took off file) is kept: the pass may still load them again, or put them back on file.
    const after = await this.installedNow();
    return { now: { ...after, dropped: [...now.dropped, ...after.dropped] }, refused: ids };
  }

  /**
   * Fetches `artifacts` again under `trust` (ArtifactCache.fetchVerified, into
   * the cache), FETCH_CONCURRENCY at a time and all within one pull timeout
   * (a registry that stalls cannot keep what the trust refuses running
   * longer): the digests that verify. One that does not is logged, backed
   * off and noted in `failed` with `basis`; one whose turn never came is
   * logged only.
   */
  private async refetchSignatures(artifacts: Assigned[], trust: TrustPolicy, basis: string, failed: Refetch["failed"]): Promise<Set<string>> {
    const ms = this.options.pullTimeoutMs ?? DEFAULT_PULL_TIMEOUT_MS;
    const { signal, deadline, clear } = withDeadline(this.signal, ms, () => new AgentError("UNAVAILABLE", `signatures not fetched again within ${ms} ms`));
    const saved = new Set<string>();
    let left: Assigned[];
    try {
      left = await pooled(artifacts, FETCH_CONCURRENCY, deadline, async (artifact) => {
        const attemptStart = performance.now();
        try {
          const { bundle, signature, source } = await this.cache.fetchVerified(artifact, { ...this.fetchOptions(trust), signal });
          this.log(`${bundle.policy.name} ${bundle.policy.version} ${artifact.id} verifies under the trust in force with a signature fetched again (signed by ${signature.key.name}, from ${source}): it runs on`);
          saved.add(artifact.id);
        } catch (err) {
          this.signal.throwIfAborted();
          const why = deadline.aborted && !trustVerdictOf(err) ? deadline.reason : err;
          this.log(`${artifact.id}: its registries give no signature the trust in force accepts either (${describeError(why)})`);
          this.backOff(artifact, errorCode(why), performance.now() - attemptStart);
          failed.set(artifact.id, basis);
        }
      });
    } finally {
      clear();
    }
    // Never started (the deadline passed first): refused, but not counted as failed, so the pass's own fetch tries it.
    for (const { id } of left) this.log(`${id}: its signatures were not fetched again within ${ms} ms, before its turn came`);
    return saved;
  }

  /**
   * A pass without an answer from the assigner (down, slow, lying): what is
   * installed stays exactly as it is, on every interface, so a filter someone
   * deleted comes back and a new interface is covered; nothing is added,
   * replaced or removed, since what is assigned is not known.
   */
  private async holdInstalled(): Promise<void> {
    if (this.options.dryRun) return;
    // Followed, but no root held (its file set aside): what the root requires is not known, so nothing is verified
    // against less, and what runs stays (it was verified against the root it was installed under).
    const trust = this.trustRoot ? this.trustRoot.heldTrust(this.options.trust) : this.options.trust;
    // Orphans (installedNow keeps them on file) stay as they are too. Not what the trust refuses (an agent started
    // with another --trust while the assigner is away): underTrust takes that out first, settleOrphans its orphans.
    let now = await this.installedNow();
    let refused = new Set<string>();
    if (trust) ({ now, refused } = await this.underTrust(now, trust));
    const actual = this.actual(now, [], new Map());
    // Recorded programs the kernel no longer has (a reboot empties bpffs and tc): each was in force, and nothing newer
    // is known. Not one whose name runs, nor one whose pref a filter holds (a replacement the agent crashed before
    // recording, an orphan): that is in force already.
    const running = new Set(actual.map((p) => p.name));
    const gone = now.dropped.filter(([, record]) => !running.has(record.name) && !now.attached.some((a) => a.pref === record.pref));
    try {
      const lost = await this.reloadable(gone, trust, { why: "the assigner cannot be asked", until: "the assigner answers", said: this.unreloadable });
      const steps = plan([...lost.values()].map((v) => v.program), actual, { hold: actual.map((p) => p.name), distrusted: [...refused], inUse: now.inUse });
      await this.enforce(steps, now.records, new Map([...lost].map(([id, v]) => [id, v.artifact])));
      await this.settleOrphans(now.orphans, now.records, ({ id }) => refused.has(id));
    } finally {
      // One not loaded again stays on file, so the next pass without the assigner tries again (installedNow dropped it).
      const left = gone.filter(([id]) => !now.records.has(id));
      for (const [id, record] of left) now.records.set(id, record);
      if (left.length > 0) await this.state.saveInstalled(now.records);
    }
  }

  /**
   * Of `gone`, those the cache gives verified (ArtifactCache.verifyHeld, no
   * network) against `trust`, to load again. The log says why the cache is
   * the source (`why`) and until when one it cannot give stays off
   * (`until`); `said` holds what was said (a digest and its outcome), so
   * each is said once while it lasts.
   */
  private async reloadable(
    gone: readonly [string, InstalledRecord][],
    trust: TrustPolicy | undefined,
    log: { why: string; until: string; said: Set<string> },
  ): Promise<Map<string, { program: Program; artifact: VerifiedArtifact }>> {
    const lost = new Map<string, { program: Program; artifact: VerifiedArtifact }>();
    if (gone.length === 0) return lost;
    const { signal } = this;
    const basis = trust ? this.basis(trust) : "";
    for (const [id, { name, version }] of gone) {
      const held = trust ? await this.cache.verifyHeld(id, { trust, signal }) : { failure: "no trust root is held to verify it with" };
      if ("artifact" in held) {
        lost.set(id, { program: { id, name, version }, artifact: held.artifact });
        this.trustCheck.verified(id, basis);
      }
      const outcome = `${id} ${"artifact" in held ? "loaded" : "off"}`;
      if (log.said.has(outcome)) continue;
      log.said.add(outcome);
      const then = "artifact" in held ? "loading it again from the cache" : `the cache cannot give it verified (${describeError(held.failure)}); it stays off until ${log.until}`;
      this.log(`${name} ${version} ${id} is no longer loaded (a reboot?) and ${log.why}: ${then}`);
    }
    return lost;
  }

  /**
   * The agent's records and what the kernel has pinned and attached. A record
   * of a program no longer pinned is dropped (the digest is installed afresh
   * if still assigned); where tc still runs that program (its pins were
   * lost, not detached), it becomes an orphan, saved at once in its own file
   * (StateDir.orphans), for settleOrphans.
   */
  private async installedNow(): Promise<Installed> {
    const { datapath } = this.options;
    const records = await this.state.installed();
    // A dry run also runs where BPF cannot: there it sees an empty kernel, and never enforces (nor writes state).
    const dry = this.options.dryRun === true;
    const loaded = await datapath.loaded().catch((err: unknown) => (dry ? [] : Promise.reject(err)));
    const attached = await datapath.attached().catch((err: unknown) => (dry ? [] : Promise.reject(err)));
    const inUse = await datapath.prefsInUse().catch((err: unknown) => (dry ? [] : Promise.reject(err)));
    const dropped = [...records].filter(([id]) => !loaded.some((p) => p.id === id));
    for (const [id] of dropped) records.delete(id);
    if (dry) return { records, loaded, attached, inUse, orphans: [], boot: undefined, dropped };

    const boot = await datapath.boot();
    for (const { id, programId } of loaded) {
      const record = records.get(id);
      if (record) Object.assign(record, { programId, boot });
    }
    const known = await this.state.orphans();
    const found: OrphanRecord[] = [];
    for (const [id, { name, version, programId, boot }] of dropped) {
      if (programId !== undefined && boot !== undefined && !known.some((o) => o.programId === programId && o.boot === boot)) found.push({ id, name, version, programId, boot });
    }
    // A program id is unique among running programs of one boot: a hook that runs it, with no pin naming it, runs the orphan.
    const orphans = [...known, ...found]
      .filter((o) => o.boot === boot)
      .map((record) => ({ record, hooks: attached.filter((a) => a.id === undefined && a.programId === record.programId) }))
      .filter((o) => o.hooks.length > 0);
    if (found.length > 0 || orphans.length !== known.length) await this.state.saveOrphans(orphans.map((o) => o.record));
    // Saved at once (after the orphans): a pass with no step to save them would find the dropped records again, and status show them.
    if (dropped.length > 0) await this.state.saveInstalled(records);
    return { records, loaded, attached, inUse, orphans, boot, dropped };
  }

  /**
   * Programs of the agent's whose pins were lost (bpffs remounted) still run
   * where they were attached, past its reach but for their program id. One
   * is detached once its policy runs afresh, or once `removable` says its
   * policy is no longer wanted; until then it stays in force, and in the
   * orphans file, so the next pass finds it again.
   */
  private async settleOrphans(orphans: readonly Orphan[], records: ReadonlyMap<string, InstalledRecord>, removable: (orphan: OrphanRecord) => boolean): Promise<void> {
    if (orphans.length === 0) return;
    const running = new Set([...records.values()].map((r) => r.name));
    const left: OrphanRecord[] = [];
    // What tc runs, read once for all of them (each is told by its own program id); read again after a failed read.
    let now: Attachment[] | undefined;
    for (const { record, hooks } of orphans) {
      const { id, name, version, programId } = record;
      const where = hooks.map(hookName).join(", ");
      if (!running.has(name) && !removable(record)) {
        left.push(record);
        continue;
      }
      try {
        // detach() removes whatever runs at a hook: only where this program still does.
        now ??= await this.options.datapath.attached();
        for (const hook of hooks) if (now.some((a) => hookName(a) === hookName(hook) && a.programId === programId)) await this.options.datapath.detach(hook);
      } catch (err) {
        this.log(`cannot remove program id ${programId} of ${name} ${version} (its pins were lost) from ${where}: ${describeError(err)}; retrying next pass`);
        left.push(record);
        continue;
      }
      const reason = `program id ${programId}, whose pins were lost, removed from ${where}`;
      // The same digest running afresh is not detached: the log says it, and its receipt follows.
      if (records.has(id)) this.log(`${name} ${version} ${id}: ${reason}`);
      else this.report({ event: "detached", id, name, version, reason });
    }
    if (left.length < orphans.length) await this.state.saveOrphans(left);
  }

  /** Carries the steps out on the interfaces to enforce on now, one at a time, until the agent stops. */
  private async enforce(steps: Step[], records: Map<string, InstalledRecord>, verified: Map<string, VerifiedArtifact>): Promise<void> {
    const ifaces = await this.interfaces();
    for (const step of steps) {
      this.signal.throwIfAborted();
      await this.applyStep(step, ifaces, records, verified);
    }
  }

  /**
   * What the kernel runs, named from the records. A program pinned but never
   * recorded (a crash between load and record) is named from its verified
   * bundle and kept at the pref it is attached at; unattached, it is left out
   * so it is added again (load returns the pinned program); unassigned, it is
   * removed.
   */
  private actual({ loaded, attached, records, boot }: Installed, assigned: Assigned[], verified: Map<string, VerifiedArtifact>): InstalledProgram[] {
    const actual: InstalledProgram[] = [];
    for (const { id, programId } of loaded) {
      const record = records.get(id);
      const pref = attached.find((a) => a.id === id)?.pref;
      if (record) {
        actual.push({ id, name: record.name, version: record.version, pref: record.pref });
        continue;
      }
      const bundle = verified.get(id)?.bundle;
      if (bundle && pref !== undefined && boot !== undefined) {
        const { policy } = bundle;
        records.set(id, recordOf(policy, pref, { programId, boot }));
        actual.push({ id, name: policy.name, version: policy.version, pref });
      } else if (!bundle) {
        // Named as the assigner names it, only so a refused update holds it in force.
        actual.push({ id, name: assigned.find((a) => a.id === id)?.name ?? id, version: "", pref: pref ?? 0 });
      }
    }
    return actual;
  }

  /** Carries out one step; the records are saved after each, so a crash loses at most the step in flight. */
  private async applyStep(step: Step, ifaces: string[], records: Map<string, InstalledRecord>, verified: Map<string, VerifiedArtifact>): Promise<void> {
    const { id, name, version } = step.program;
    try {
      await this.executor.apply(step, ifaces, records, verified);
      await this.state.saveInstalled(records);
      this.stepFailed.delete(id);
      this.loadSaid.delete(id);
    } catch (err) {
      // A tool killed by the stop (the datapath's signal) is no failure of the step: the next start reads the kernel again.
      this.signal.throwIfAborted();
      // Until its replacement goes in, the old version is held as a kept one is (a step of its own, its failure
      // reported under its digest): a replacement the kernel refuses on every pass must not leave the old one
      // unrestored after drift, or missing on a new interface. Once the new version is recorded it runs, and only
      // retiring the old one failed: nothing to hold. (One the trust refuses is taken out again at the start of the
      // next pass, underTrust.)
      if (step.kind === "replace" && !records.has(step.program.id)) await this.applyStep({ kind: "keep", program: step.old }, ifaces, records, verified);
      // What a failed keep changed in its record (the interfaces it covers, since when) is kept too: install and
      // remove change the records only once they succeed.
      await this.state.saveInstalled(records).catch((saving: unknown) => this.log(`cannot save the installed records: ${describeError(saving)}`));
      // Retried every pass; reported again only when the failure changes.
      const failure = `${step.kind} ${errorCode(err)}`;
      if (this.stepFailed.get(id) === failure) return;
      this.stepFailed.set(id, failure);
      this.report({ event: "failed", id, name, version, code: errorCode(err), reason: `${step.kind}: ${describeError(err)}` });
    }
  }

  /**
   * The in-force receipt of every installed program, as an `attached` report
   * (signed and published, not logged): the program id the kernel runs at
   * each hook (as tc reports it now), since when, and its per-rule drop
   * counters. A program attached nowhere has no receipt.
   */
  private async reportReceipts(records: Map<string, InstalledRecord>): Promise<void> {
    const { datapath } = this.options;
    // attached() names each hook's program from what is loaded (one listing of both), so an id means the loaded program runs there.
    const attached = await datapath.attached();
    this.receiptsOwed = false;
    for (const [id, record] of records) {
      const hooks = attached.filter((a) => a.id === id);
      const programId = hooks[0]?.programId;
      if (programId === undefined) continue;
      // Counters that cannot be read leave the receipt without them (it still proves what runs), said once until they can be read again.
      const counters = await datapath.counters(id).then(
        (read) => (this.countersUnread.delete(id), read),
        (err: unknown) => {
          if (!this.countersUnread.has(id)) this.log(`cannot read the counters of ${record.name} ${record.version} ${id}: ${describeError(err)}; its receipts go without them`);
          this.countersUnread.add(id);
          return undefined;
        },
      );
      this.publish({
        event: "attached",
        id,
        name: record.name,
        version: record.version,
        ...(counters ? { counters: receiptCounters(counters, record.allows) } : {}),
        receipt: { program_id: programId, interfaces: hooks.map(({ iface, direction, pref }) => ({ iface, direction, pref })), since: record.since },
      });
    }
  }
}

/**
 * A NATS URL as a log line shows it: without the user and password it may
 * carry (nats://user:pass@host), which journald would keep. nats.js also
 * takes `user:pass@host:port` without a scheme, which URL would misread.
 */
function withoutCredentials(url: string): string {
  try {
    const parsed = new URL(url.includes("://") ? url : `nats://${url}`);
    parsed.username = "";
    parsed.password = "";
    return parsed.href;
  } catch {
    return "the --nats URL (not a URL)";
  }
}

/** The artifacts a for-host answer assigns, checked: at most MAX_ASSIGNED (counted first), each an artifact as the API describes it. */
function assignedIn(body: unknown, assigner: string): Assigned[] {
  const artifacts = (body as { artifacts?: unknown } | undefined)?.artifacts;
  if (!Array.isArray(artifacts)) throw new AgentError("BAD_ASSIGNMENT", `the assigner at ${assigner} answered the poll without a list of artifacts`);
  if (artifacts.length > MAX_ASSIGNED) {
    throw new AgentError("BAD_ASSIGNMENT", `the assigner at ${assigner} assigned ${artifacts.length} artifacts to this host, more than the ${MAX_ASSIGNED} an agent takes`);
  }
  const parsed = ArtifactJson.array().safeParse(artifacts);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new AgentError("BAD_ASSIGNMENT", `the assigner at ${assigner} answered the poll with a malformed artifact: artifacts.${issue.path.join(".")}: ${issue.message}`);
  }
  return parsed.data;
}
