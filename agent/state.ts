// The agent's state directory (default /var/lib/aegis): its Ed25519 key and
// token (0600, replaced atomically), what it installed (policy name, version,
// direction, pref per digest; the kernel is asked for the rest), the programs
// whose pins were lost, the telemetry sequence numbers it reserved, the
// content-addressed OCI layout cache of verified artifacts, and the lock that
// keeps a second agent out.
import { createPrivateKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { closeSync, openSync } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { join } from "node:path";
import { getSystemErrorName } from "node:util";
import type { Direction, Policy } from "../policy/index.js";
import { atomicWrite } from "../util/index.js";

export const DEFAULT_STATE_DIR = "/var/lib/aegis";

/** flock(2)'s operations and its "held elsewhere" errno (<sys/file.h>, <errno.h> on Linux). */
const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;
let flock: ((fd: number, operation: number) => number) | undefined;

/** What the assigner gave this agent at registration. */
export interface Registration {
  assigner: string;
  host_id: string;
  agent_uid: string;
  token: string;
  /** The kernel (uname -r) the capabilities sent with this registration describe. */
  kernel?: string;
}

/** One installed program, as the agent recorded it after verifying its bundle. */
export interface InstalledRecord {
  name: string;
  version: string;
  direction: Direction;
  pref: number;
  /** Number of rules (counter indexes). */
  rules: number;
  /**
   * Indexes of its allow rules. The kernel counts the packets each rule
   * matches; an allow rule's are let through, so they are left out of drops
   * (status, metrics, receipts). Absent in records written before: none.
   */
  allows?: number[];
  /** When it was attached, or last restored after drift (tc does not record it): the receipt's `since`. */
  since: string;
  /** The interfaces it was last attached on: a hook missing there is drift, one missing elsewhere a new interface. */
  ifaces?: string[];
  /**
   * The kernel's id of the program, while pinned, and the boot it belongs
   * to (ids start again after a reboot). Should its pins be lost (bpffs
   * remounted), tc still runs it, and these tell that filter is the agent's
   * own (an OrphanRecord). Absent in records written before: not traced.
   */
  programId?: number;
  boot?: string;
}

/** The kernel program a record was installed as (InstalledRecord.programId and boot). */
export interface KernelProgram {
  programId: number;
  boot: string;
}

/**
 * A program of the agent's whose pins were lost while tc still runs it,
 * known by its program id within its boot: kept in its own file, so no
 * write of the installed records (which no longer hold it, and may hold the
 * same digest loaded afresh) can lose it before it is removed.
 */
export interface OrphanRecord extends KernelProgram {
  /** The digest it was loaded from. */
  id: string;
  name: string;
  version: string;
}

/** The indexes of a policy's allow rules (InstalledRecord.allows). */
export function allowIndexes(rules: readonly { action: string }[]): number[] {
  return rules.flatMap((rule, i) => (rule.action === "allow" ? [i] : []));
}

/** The record of `policy` installed now as `kernel`'s program at `pref` (on `ifaces`, when known). */
export function recordOf(policy: Policy, pref: number, kernel: KernelProgram, ifaces?: readonly string[]): InstalledRecord {
  const { name, version, attach, rules } = policy;
  const { programId, boot } = kernel;
  return { name, version, direction: attach.direction, pref, rules: rules.length, allows: allowIndexes(rules), since: new Date().toISOString(), ...(ifaces ? { ifaces: [...ifaces] } : {}), programId, boot };
}

/** Each drop rule's counter as [rule index, packets]: the allow rules' (`allows`) are packets let through, not drops. */
export function dropCounters(counters: readonly number[], allows: readonly number[] = []): [number, number][] {
  const allowed = new Set(allows);
  return counters.flatMap((n, i) => (allowed.has(i) ? [] : [[i, n] as [number, number]]));
}

export class StateDir {
  constructor(readonly dir: string) {}

  get keyFile(): string {
    return join(this.dir, "agent.key");
  }
  get tokenFile(): string {
    return join(this.dir, "agent.token");
  }
  get installedFile(): string {
    return join(this.dir, "installed.json");
  }
  get orphansFile(): string {
    return join(this.dir, "orphans.json");
  }
  get cacheDir(): string {
    return join(this.dir, "cache");
  }
  get seqFile(): string {
    return join(this.dir, "seq");
  }
  get lockFile(): string {
    return join(this.dir, "agent.lock");
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  /**
   * Takes the state dir for this process: an exclusive flock(2) on
   * `agent.lock`, held until release() or the process ends (the kernel drops
   * it then, so a crash never leaves it held). Two agents on one state dir
   * would overwrite each other's records, prune each other's cache and sign
   * reports as the same host. Undefined when another holds it. Node has no
   * flock: koffi, the FFI the libbpf datapath uses, calls libc's.
   */
  lock(): { release(): void } | undefined {
    const koffi = createRequire(import.meta.url)("koffi") as typeof import("koffi");
    flock ??= koffi.load("libc.so.6").func("int flock(int fd, int operation)") as (fd: number, operation: number) => number;
    const fd = openSync(this.lockFile, "a", 0o600);
    if (flock(fd, LOCK_EX | LOCK_NB) === 0) return { release: () => closeSync(fd) };
    const errno = koffi.errno();
    closeSync(fd);
    if (errno === EWOULDBLOCK) return undefined;
    throw new Error(`cannot lock ${this.lockFile}: flock failed with ${getSystemErrorName(-errno)}`);
  }

  /** The agent's Ed25519 key, made on first use and reused ever after (the assigner knows the agent by it). */
  async key(): Promise<KeyObject> {
    const pem = await readOptional(this.keyFile);
    if (pem !== undefined) return createPrivateKey(pem);
    const { privateKey } = generateKeyPairSync("ed25519");
    await atomicWrite(this.keyFile, privateKey.export({ format: "pem", type: "pkcs8" }) as string, { mode: 0o600 });
    return privateKey;
  }

  async registration(): Promise<Registration | undefined> {
    const text = await readOptional(this.tokenFile);
    return text === undefined ? undefined : (JSON.parse(text) as Registration);
  }

  async saveRegistration(registration: Registration): Promise<void> {
    await atomicWrite(this.tokenFile, `${JSON.stringify(registration, null, 2)}\n`, { mode: 0o600 });
  }

  /** What this agent installed, by digest. */
  async installed(): Promise<Map<string, InstalledRecord>> {
    const text = await readOptional(this.installedFile);
    return new Map(text === undefined ? [] : Object.entries(JSON.parse(text) as Record<string, InstalledRecord>));
  }

  async saveInstalled(records: ReadonlyMap<string, InstalledRecord>): Promise<void> {
    await atomicWrite(this.installedFile, `${JSON.stringify(Object.fromEntries(records), null, 2)}\n`, { mode: 0o600 });
  }

  /**
   * The telemetry sequence numbers reserved so far: every `seq` this agent
   * sent is below it (0 when none was). A restart starts above it, so a clock
   * stepped back (a VM that booted hours ahead, then NTP) never makes the
   * assigner take its reports for replays.
   */
  async seqReserved(): Promise<number> {
    const text = await readOptional(this.seqFile);
    const n = text === undefined ? 0 : Number(text.trim());
    if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${this.seqFile} does not hold a sequence number: ${JSON.stringify(text!.slice(0, 40))}`);
    return n;
  }

  async saveSeqReserved(n: number): Promise<void> {
    await atomicWrite(this.seqFile, `${n}\n`, { mode: 0o600 });
  }

  /** The agent's programs whose pins were lost and that tc may still run. */
  async orphans(): Promise<OrphanRecord[]> {
    const text = await readOptional(this.orphansFile);
    return text === undefined ? [] : (JSON.parse(text) as OrphanRecord[]);
  }

  async saveOrphans(orphans: readonly OrphanRecord[]): Promise<void> {
    await atomicWrite(this.orphansFile, `${JSON.stringify(orphans, null, 2)}\n`, { mode: 0o600 });
  }
}

/** A file's text, or undefined when it does not exist. */
export async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}
