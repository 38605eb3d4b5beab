// What the assigner keeps, behind one interface with two implementations:
// Redis (production, many stateless assigners) and an embedded file store
// (one machine, no server). test/assigner/store-conformance.test.ts runs the
// same suite against both.
import type { KernelFeatures } from "../../ebpf/index.js";
import type { RolloutJson } from "../api/index.js";

/** An artifact registered with the assigner: a policy manifest in some registry. */
export interface ArtifactRecord {
  /** The manifest digest, sha256:<hex>. */
  id: string;
  /** Where it lives: host/repo@sha256:… or oci:<dir>@sha256:…. */
  reference: string;
  name: string;
  version: string;
  description: string;
  /** Size of the binary (the bundle layer). */
  size: number;
  /** The layer digest, sha256:<hex>; served as the seed's sha256-<hex> checksum. */
  layerDigest: string;
  metadata: Record<string, string>;
  /** The verified signature (base64), or "" when no trusted signature was found. */
  signature: string;
  /** Name of the trusted key that signed it, if any. */
  signer?: string;
  createdAt: string;
}

export interface AgentRecord {
  uid: string;
  hostId: string;
  /** Ed25519 public key, base64 of the raw 32 bytes. */
  publicKey: string;
  hostname?: string;
  kernel?: string;
  labels?: Record<string, string>;
  /** What the agent reported of its kernel at registration. */
  capabilities?: KernelFeatures;
  registeredAt: string;
  lastSeen?: string;
}

export interface Registration {
  id: string;
  hostId: string;
  publicKey: string;
  /** base64 */
  nonce: string;
  hostname?: string;
  kernel?: string;
  labels?: Record<string, string>;
  capabilities?: KernelFeatures;
  /** A tag of the enroll secret it began under (not the secret's digest): one begun under another does not complete. */
  enrollment?: string;
}

export interface TokenRecord {
  agentUid: string;
  hostId: string;
}

/** The latest telemetry of one host about one artifact. */
export interface StatusRecord {
  hostId: string;
  artifactId: string;
  event: string;
  code?: string;
  reason?: string;
  counters?: Record<string, number>;
  /** From a verified in-force receipt (event `attached`). */
  receipt?: { programId: number; interfaces: { iface: string; direction: string; pref: number }[]; since: string };
  time: string;
  /** The agent's sequence number: a status is only replaced by a newer one. */
  seq?: number;
}

export interface HostAssignments {
  /** Moves on every change of this host's set; the ETag of its for-host answer. */
  version: number;
  artifactIds: string[];
}

/** Caps on registrations begun and not yet completed (each lives a few minutes). */
export interface RegistrationLimits {
  perHost: number;
  total: number;
}

/**
 * What bindAgent did: bound the host to the agent (replacing an earlier agent
 * with the same key, whose tokens are revoked), or nothing, because another
 * key holds the host.
 */
export type BindResult = { bound: true; replaced?: string } | { bound: false; holder: AgentRecord };

/** One assignment of the desired state: to a host, or to the hosts a selector (canonical text) matches. */
export type AssignmentTarget = { hostId: string } | { selector: string };

export interface AssignmentChange {
  add: boolean;
  artifactId: string;
  target: AssignmentTarget;
}

/** The whole desired state; `version` moves on every change of it. */
export interface DesiredState {
  version: number;
  direct: { artifactId: string; hostId: string }[];
  selectors: { artifactId: string; selector: string }[];
}

/** A host's own set and version, with every selector assignment, read together. */
export interface HostDesired extends HostAssignments {
  selectors: { artifactId: string; selector: string }[];
}

/**
 * What changeAssignments did: nothing, because the desired state is no
 * longer at `ifVersion` or a host checked moved (applied false), or because
 * the selector assignments would rise past the store's cap (applied false,
 * `selectorsOver`: how many there would be, and the cap); or every change,
 * with the version of each host a host change touched (changed: its set moved).
 */
export type ChangeResult =
  | { applied: false; version: number; selectorsOver?: { count: number; max: number } }
  | { applied: true; version: number; added: number; removed: number; hosts: { hostId: string; version: number; changed: boolean }[] };

/** A status without its counters and receipt: what `?view=summary` answers, read without the rest. */
export type StatusSummary = Omit<StatusRecord, "counters" | "receipt">;

/** The summary of a status: the fields every store keeps beside the full record. */
export function statusSummary({ counters: _counters, receipt: _receipt, ...summary }: StatusRecord): StatusSummary {
  return summary;
}

/** Rollouts kept, newest first; older ones are dropped. */
export const ROLLOUTS_KEPT = 100;

export interface AssignerStore {
  /** Stores an artifact unless one with its id exists; true when it was new. */
  putArtifact(record: ArtifactRecord): Promise<boolean>;
  /** Overwrites an artifact's record (a signature found after registration). */
  replaceArtifact(record: ArtifactRecord): Promise<void>;
  getArtifact(id: string): Promise<ArtifactRecord | undefined>;
  getArtifacts(ids: string[]): Promise<(ArtifactRecord | undefined)[]>;
  listArtifacts(): Promise<ArtifactRecord[]>;

  /**
   * Applies adds and removes (to hosts and to selectors) in one atomic step,
   * only if the desired state's version is `ifVersion` when given. The
   * desired version moves once if anything changed; a host's version moves
   * when its own set did, and, if anything changed, each host of `alsoMoved`
   * (those a changed selector matches, which the caller knows) in the same
   * step: no failure part-way leaves one of them serving its old answer as
   * current (a 304 for its old ETag). With `ifHostVersions`, also only if
   * each of those hosts is still at its version (what a host is served has
   * not changed since the caller checked it): else applied false, with the
   * desired state's version. In the same step, refuses (applied false,
   * selectorsOver) a change after which there would be more selector
   * assignments than the store's cap and more than before: only adds of
   * ones not there count, so re-adding one at the cap is applied (a no-op),
   * and a store already past the cap (lowered) may still shed.
   */
  changeAssignments(changes: AssignmentChange[], ifVersion?: number, alsoMoved?: readonly string[], ifHostVersions?: ReadonlyMap<string, number>): Promise<ChangeResult>;
  desiredState(): Promise<DesiredState>;
  /** The host's set, its version and the selector assignments, in one read (the version no older than the rest). */
  hostDesired(hostId: string): Promise<HostDesired>;

  /** Stores a rollout's record (replacing the one with its id); keeps the newest ROLLOUTS_KEPT. */
  putRollout(rollout: RolloutJson): Promise<void>;
  getRollout(id: string): Promise<RolloutJson | undefined>;
  /** Newest first. */
  listRollouts(): Promise<RolloutJson[]>;
  /** Those running or rolling back (ROLLOUT_ACTIVE_STATES), newest first, without reading the others' records. */
  listActiveRollouts(): Promise<RolloutJson[]>;

  /** The host's version alone: the cheap check behind a 304. */
  hostVersion(hostId: string): Promise<number>;
  /**
   * Changes whenever versions already handed out may be handed out again for
   * other content, so a version is told apart by the two (a host's ETag
   * holds both): the embedded store's changes at each start and each time a
   * failed write puts it back to the snapshot on disk (its versions go back
   * with it); Redis's, at each start or failover of the server (its last
   * writes may be lost).
   */
  versionEpoch(): string;
  /** Moves a host's version without changing its set: what it is served changed. */
  bumpHostVersion(hostId: string): Promise<number>;
  artifactHosts(artifactId: string): Promise<string[]>;

  /**
   * Keeps a registration for `ttlSeconds`, unless its host or the store
   * already holds as many pending ones as `limits` allow (then false);
   * `takeRegistration` returns it once.
   */
  putRegistration(registration: Registration, ttlSeconds: number, limits: RegistrationLimits): Promise<boolean>;
  takeRegistration(id: string): Promise<Registration | undefined>;
  /**
   * In one atomic step, so that concurrent registrations cannot both win:
   * refuses when the host is bound to another public key; otherwise binds the
   * host to `agent`, removes the host's earlier agent and its tokens, and
   * issues the token whose sha256 is `tokenHash`.
   */
  bindAgent(agent: AgentRecord, tokenHash: string): Promise<BindResult>;
  /** Forgets an agent and revokes its tokens; false when there was none. */
  deleteAgent(uid: string): Promise<boolean>;
  getAgent(uid: string): Promise<AgentRecord | undefined>;
  getAgentByHost(hostId: string): Promise<AgentRecord | undefined>;
  /** The agents of these hosts, in their order (undefined where none), in a few store reads whatever their number; last-seen may be left out. */
  getAgentsByHosts(hostIds: readonly string[]): Promise<(AgentRecord | undefined)[]>;
  listAgents(): Promise<AgentRecord[]>;
  touchAgent(hostId: string, time: string): Promise<void>;
  getToken(hash: string): Promise<TokenRecord | undefined>;

  /**
   * Stores the host's latest status about the artifact, atomically refusing
   * (false) one whose `seq` is not above the stored one's: a replay, or a
   * message overtaken by a newer one at another assigner.
   */
  putStatus(status: StatusRecord): Promise<boolean>;
  artifactStatus(artifactId: string): Promise<StatusRecord[]>;
  /** The same statuses' summaries, read without their counters and receipts (kept apart, written in putStatus's step). */
  artifactStatusSummary(artifactId: string): Promise<StatusSummary[]>;
  /** Whether the host has a status recorded about the artifact. */
  hasStatus(artifactId: string, hostId: string): Promise<boolean>;
  hostStatus(hostId: string): Promise<StatusRecord[]>;

  /** Throws StoreUnavailableError when the store cannot answer. */
  ping(): Promise<void>;
  close(): Promise<void>;
}
