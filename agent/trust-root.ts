// The agent's trust root: it follows `--trust-root-ref` (an `aegis trust
// push` artifact: a Sigstore trusted_root.json and the trust policy shipped
// with it), from the mirrors first and then the reference, as it does
// policies. A tag is resolved at most every few minutes, each source within
// a deadline, so a registry that never answers costs a pass little; a
// digest pins one artifact.
// Each candidate must be signed by a pinned operator key and carry a higher
// version than the root held, which is kept in the state dir
// (`trust-root.json`, replaced atomically) so a restart cannot be rolled back
// either. When no source can be read, the held root stays in force.
import { rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { describeError, errorCode } from "../errors.js";
import { isDigest, openReference, parseReference, RegistryError, type Descriptor, type ReadOnlyTarget, type RepositoryOptions } from "../registry/index.js";
import { fetchTrustRoot, mergeTrust, SignatureError, trustRootFromBytes, type TrustPolicy, type TrustRootArtifact } from "../signing/index.js";
import { atomicWrite } from "../util/index.js";
import { AgentError } from "./errors.js";
import { withDeadline } from "./deadline.js";
import { DEFAULT_PULL_TIMEOUT_MS, isUnavailable } from "./fetch.js";
import { readOptional } from "./state.js";

export interface TrustRootOptions {
  /** `host/repo@sha256:…` (pinned) or `host/repo:tag` (followed), or `oci:<dir>…`. */
  reference: string;
  /** The operator keys a trust root must be signed by. */
  operator: TrustPolicy;
  /**
   * Past a source that served the root held, how often the sources after it
   * are asked for a newer one (ms; default 5 minutes), and how long they may
   * take then (ms; default 10 s).
   */
  recheck?: { everyMs: number; timeoutMs: number };
  /**
   * How often a pass looks for a newer root, once one is held (ms; default
   * 5 minutes): the passes between use the root held, with no network.
   */
  everyMs?: number;
}

const RECHECK = { everyMs: 5 * 60_000, timeoutMs: 10_000 };
/** TrustRootOptions.everyMs's default. */
const EVERY_MS = 5 * 60_000;

/** The version and digest a held file names, if its text still says them (an unreadable file's floor). */
function floorOf(text: string | undefined): { version: number; digest: string | undefined } | undefined {
  try {
    const held = JSON.parse(text ?? "") as Partial<HeldFile> | null;
    return Number.isSafeInteger(held?.version) ? { version: held!.version!, digest: typeof held!.digest === "string" ? held!.digest : undefined } : undefined;
  } catch {
    return undefined;
  }
}

interface HeldFile {
  reference: string;
  digest: string;
  version: number;
  root: string;
  policy?: string;
}

export class TrustRootFollower {
  private held: TrustRootArtifact | undefined;
  /** The last failure logged, so a pass that fails the same way says nothing new. */
  private lastFailure = "";
  /** When (performance.now()) the sources past one serving the root held were last asked. */
  private recheckedAt = -Infinity;
  /** When (performance.now()) trust() last looked for a newer root. */
  private refreshedAt = -Infinity;
  /** With no root held, the version a root must pass (or be that root): an unreadable held file's (init). */
  private floor: { version: number; digest: string | undefined } | undefined;
  readonly file: string;

  constructor(
    private readonly options: TrustRootOptions & {
      stateDir: string;
      mirrors: readonly string[];
      repository?: RepositoryOptions;
      log: (line: string) => void;
      /** How long a source may take to serve a root (ms; default 5 minutes, the agent's pull timeout); resolving its tag while a root is held, recheck.timeoutMs. */
      pullTimeoutMs?: number;
    },
  ) {
    this.file = join(options.stateDir, "trust-root.json");
    const ref = parseReference(options.reference);
    if (ref.kind !== "layout" && !ref.tag && !ref.digest) throw new AgentError("BAD_ASSIGNMENT", `--trust-root-ref ${options.reference} names no tag or digest`);
  }

  /**
   * The root held from an earlier run, if any (its bytes are checked again).
   * A file that cannot be taken as one (damaged bytes, a hand edit) is logged
   * and set aside as `<file>.bad`: the agent starts, and fetches a root, which
   * must still be newer than the version the file names (or that very root),
   * if it names one, also after a restart (the floor is read from the file
   * set aside until a root is held again). A file that cannot be read at all
   * (EACCES, EIO) still stops the start: that says nothing of its content.
   */
  async init(): Promise<void> {
    const text = await readOptional(this.file);
    if (text === undefined) {
      // A read error other than "none" stops the start here too: the floor must not be lost unsaid.
      this.floor = floorOf(await readOptional(`${this.file}.bad`));
      if (this.floor) this.options.log(`no trust root held; ${this.file}.bad, set aside earlier, names version ${this.floor.version}: a root must still be newer (or be ${this.floor.digest})`);
      return;
    }
    let held: Partial<HeldFile>;
    try {
      held = JSON.parse(text) as Partial<HeldFile>;
      this.held = await trustRootFromBytes(held.digest!, held.version!, Buffer.from(held.root!, "base64"), held.policy === undefined ? undefined : Buffer.from(held.policy, "base64"));
    } catch (err) {
      this.floor = floorOf(text);
      await rename(this.file, `${this.file}.bad`).catch(() => undefined);
      const after = this.floor === undefined ? "no version is known, so any root the operator key signs is taken" : `a root must still be newer than version ${this.floor.version} (or be ${this.floor.digest})`;
      this.options.log(`trust root held in ${this.file} is unreadable, set aside as ${this.file}.bad (${describeError(err)}): ${after}`);
      return;
    }
    this.options.log(`trust root ${held.digest} version ${held.version} held from an earlier run`);
    // A new --trust-root-ref does not reset the versions: whatever it names must still be newer (rollback protection).
    if (held.reference !== this.options.reference) {
      this.options.log(`trust root held was followed from ${held.reference}, now ${this.options.reference}: a root from it must still be newer than version ${held.version} (remove ${this.file} to start over)`);
    }
  }

  get current(): TrustRootArtifact | undefined {
    return this.held;
  }

  /** Where to look, in order: each mirror (`<mirror>@<digest>` or `<mirror>:<tag>`), then the reference. */
  private sources(): { name: string; target: ReadOnlyTarget; selector: string }[] {
    const { reference, mirrors, repository } = this.options;
    const { target, selector } = openReference(reference, repository ?? {});
    const sel = selector ?? "latest";
    const sep = isDigest(sel) ? "@" : ":";
    return [
      ...mirrors.map((m) => {
        const name = `${m}${sep}${sel}`;
        return { name, target: openReference(name, repository ?? {}).target, selector: sel };
      }),
      { name: reference, target, selector: sel },
    ];
  }

  /**
   * Looks for a newer signed root and takes it; returns the root in force.
   * Throws only when there is none at all. A source that serves the root
   * held does not end the search for good when the reference is a tag: a
   * mirror may lag behind the reference, and a rotation or a revoked
   * identity must not wait for it. The sources after it are asked every
   * `recheck.everyMs`, within `recheck.timeoutMs`, so an origin an
   * air-gapped site cannot reach (which may never answer) costs each pass
   * nothing; that they could not be read is then no news, but what they
   * served and was refused (an older root, another signer) is logged.
   * Every source has deadlines: to resolve the tag, recheck.timeoutMs while
   * a root is held, else the pull timeout; then the pull timeout to serve a
   * newer root (a registry that never answers costs that, not the registry
   * client's 120 s per request).
   */
  async refresh(signal?: AbortSignal): Promise<TrustRootArtifact> {
    const recheck = this.options.recheck ?? RECHECK;
    const pullMs = this.options.pullTimeoutMs ?? DEFAULT_PULL_TIMEOUT_MS;
    let last: unknown;
    /** Past a source that served the root held: the rest are asked only every recheck.everyMs, and their being out of reach is no news. */
    let confirmed = false;
    /** The first refusal of what a source served (an older root, another signer), logged even when a later source is only out of reach. */
    let refused: unknown;
    for (const { name, target, selector } of this.sources()) {
      signal?.throwIfAborted();
      const resolveMs = this.held ? recheck.timeoutMs : pullMs;
      const resolving = withDeadline(signal, resolveMs, () => new DOMException(`no answer within ${resolveMs} ms`, "TimeoutError"));
      let desc: Descriptor;
      try {
        desc = await target.resolve(selector, { signal: resolving.signal });
      } catch (err) {
        signal?.throwIfAborted();
        // Past the recheck's time: out of reach, no news. Else unavailable (out of time too), or a verdict on the tag.
        if (!(confirmed && resolving.deadline.aborted)) {
          last = resolving.deadline.aborted ? new RegistryError("TIMEOUT", `${name} did not resolve ${selector} in time`, { cause: err }) : err;
          if (!isUnavailable(last)) refused ??= last;
        }
        continue;
      } finally {
        resolving.clear();
      }
      const source = withDeadline(signal, pullMs, () => new DOMException(`no answer within ${pullMs} ms`, "TimeoutError"));
      try {
        if (this.held && desc.digest === this.held.digest) {
          // A monotonic clock: a wall clock stepped back would stop the rechecks.
          if (confirmed || isDigest(selector) || performance.now() - this.recheckedAt < recheck.everyMs) return this.held;
          this.recheckedAt = performance.now();
          confirmed = true;
          continue;
        }
        const candidate = await fetchTrustRoot(target, desc.digest, this.options.operator, { signal: source.signal }).catch((err: unknown) => {
          throw source.deadline.aborted ? new RegistryError("TIMEOUT", `${name} did not serve trust root ${desc.digest} in time`, { cause: err }) : err;
        });
        if (this.held && candidate.version <= this.held.version) {
          const how = candidate.version < this.held.version ? "older than" : "the same version as, but other content than,";
          throw new SignatureError("TRUST_ROOT_ROLLBACK", `trust root ${candidate.digest} (version ${candidate.version}) from ${name} is ${how} the one held (${this.held.digest}, version ${this.held.version}): refused`);
        }
        const floor = this.held ? undefined : this.floor;
        if (floor && candidate.version <= floor.version && !(candidate.version === floor.version && candidate.digest === floor.digest)) {
          throw new SignatureError("TRUST_ROOT_ROLLBACK", `trust root ${candidate.digest} (version ${candidate.version}) from ${name} is not newer than version ${floor.version}, named by the held file set aside: refused`);
        }
        await this.keep(candidate);
        this.options.log(`trust root ${candidate.digest} version ${candidate.version} from ${name}, signed by ${candidate.signature?.key.name ?? "?"}${this.held ? ` (replaces version ${this.held.version})` : ""}`);
        this.held = candidate;
        this.lastFailure = "";
        return candidate;
      } catch (err) {
        signal?.throwIfAborted();
        last = err;
        if (!isUnavailable(err)) refused ??= err;
      } finally {
        source.clear();
      }
    }
    // What was served and refused is the news, whatever came after it; past a confirmation, a source out of reach is none.
    if (refused !== undefined) last = refused;
    else if (confirmed && this.held) return this.held;
    const failure = `[${errorCode(last)}] ${describeError(last)}`;
    if (failure !== this.lastFailure) this.options.log(`trust root not updated: ${failure}${this.held ? `; version ${this.held.version} stays in force` : ""}`);
    this.lastFailure = failure;
    if (this.held) return this.held;
    throw new AgentError("UNAVAILABLE", `no trust root: ${this.options.reference} could not be read or verified (${describeError(last)})`, { cause: last });
  }

  /**
   * The trust the agent verifies policies with: the root's policy (its keys
   * and identities) over the root, plus the locally pinned `--trust`. A
   * newer root is looked for (refresh) at most every `everyMs` once one is
   * held, so a pass is not held up by the trust root's registries each time.
   */
  async trust(local: TrustPolicy, signal?: AbortSignal): Promise<TrustPolicy> {
    // Looked for at most every everyMs once a root is held (a monotonic clock, as the rechecks); until then, every pass.
    if (this.held && performance.now() - this.refreshedAt < (this.options.everyMs ?? EVERY_MS)) return merged(this.held, local);
    this.refreshedAt = performance.now();
    return merged(await this.refresh(signal), local);
  }

  /** The digest of the root held now (undefined while none is): a new one may verify what the last one refused. */
  get heldDigest(): string | undefined {
    return this.held?.digest;
  }

  /** `local` with the root held now, looking for no newer one (a pass that cannot reach the network); undefined while none is held. */
  heldTrust(local: TrustPolicy): TrustPolicy | undefined {
    return this.held && merged(this.held, local);
  }

  private async keep(artifact: TrustRootArtifact): Promise<void> {
    const held: HeldFile = { reference: this.options.reference, digest: artifact.digest, version: artifact.version, root: artifact.rootBytes.toString("base64") };
    if (artifact.policyBytes) held.policy = artifact.policyBytes.toString("base64");
    await atomicWrite(this.file, `${JSON.stringify(held, null, 2)}\n`, { mode: 0o600 });
    // A root is held again: a file set aside earlier no longer binds (a later "start over" must not meet its floor).
    await rm(`${this.file}.bad`, { force: true });
    this.floor = undefined;
  }
}

/** The trust a root artifact gives (its policy and trusted root), with the agent's own `local` trust. */
function merged(artifact: TrustRootArtifact, local: TrustPolicy): TrustPolicy {
  return mergeTrust({ keys: [], ...artifact.policy, trustedRoot: artifact.root }, local);
}
