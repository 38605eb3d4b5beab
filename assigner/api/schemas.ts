// Every input and output of the HTTP API, as zod schemas: the server's
// handlers validate with them, /openapi.json is generated from them, and
// clients (the CLI, agents) type their calls with them.
// Shapes follow the HTTP contract the first agents were written against (README "The assigner").
import { z } from "zod";
import { parseSelector, SELECTOR_MAX_LENGTH } from "./selector.js";

export const HostId = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, "a host id is 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit")
  .meta({ description: "Host id", example: "web-01" });

export const Digest = z
  .string()
  .regex(/^sha256:[a-f0-9]{64}$/, "an artifact id is a manifest digest: sha256:<64 lowercase hex>")
  .meta({ description: "Artifact id: the manifest digest", example: `sha256:${"0".repeat(64)}` });

export const AgentUid = z.string().regex(/^[0-9a-f-]{36}$/, "an agent uid is a UUID");

const Base64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, "must be base64");

/** Host labels, bounded like Kubernetes labels so an unauthenticated registration stays small. */
const Labels = z
  .record(z.string().regex(/^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$/, "a label key is 1-63 letters, digits, '.', '_', '/' or '-'"), z.string().max(63))
  .refine((labels) => Object.keys(labels).length <= 64, "at most 64 labels");

/** What the agent found its kernel offers (ebpf/requirements.ts); `POST /assign` checks the artifact's program against it. */
export const Capabilities = z
  .strictObject({
    kernel_version: z.string().max(64).optional().meta({ description: "major.minor[.patch] of the running kernel", example: "6.8.0" }),
    btf: z.boolean().optional().meta({ description: "/sys/kernel/btf/vmlinux exists" }),
    bpf_loop: z.boolean().optional().meta({ description: "The bpf_loop helper is available (Linux >= 5.17)" }),
    clsact: z.boolean().optional().meta({ description: "The clsact qdisc is available (Linux >= 4.5)" }),
  })
  .meta({ description: "The host's kernel capabilities, as the agent probed them" });

export const RegisterInitBody = z.strictObject({
  host_id: HostId,
  public_key: Base64.meta({ description: "The agent's Ed25519 public key: base64 of the raw 32 bytes" }),
  hostname: z.string().max(253).optional(),
  kernel: z.string().max(256).optional(),
  labels: Labels.optional(),
  capabilities: Capabilities.optional(),
  enroll_secret: z.string().max(1024).optional().meta({ description: "Required when the assigner has an enrollment secret" }),
});

/**
 * Bytes of a registration nonce. The agent's key also signs its telemetry
 * (api/telemetry.ts), so an agent signs a nonce of this size only: 32 bytes
 * can never be a TelemetryMessage's JSON, so an assigner (or anyone
 * answering at its address) cannot have the agent sign a report it chose.
 */
export const NONCE_BYTES = 32;

export const RegisterInitResponse = z.object({
  registration_id: z.string(),
  nonce: Base64.meta({ description: "Sign these bytes (base64-decoded) with the agent key; single use, expires" }),
});

export const RegisterCompleteBody = z.strictObject({
  registration_id: z.string().min(1).max(128),
  signature: Base64.meta({ description: "base64 Ed25519 signature of the nonce's bytes" }),
});

export const RegisterCompleteResponse = z.object({
  agent_uid: z.string(),
  host_id: z.string(),
  token: z.string().meta({ description: "Send as Authorization: Bearer <token>" }),
});

/** The seed's artifact JSON, plus `reference`. */
export const ArtifactJson = z.object({
  id: Digest,
  name: z.string(),
  version: z.string(),
  description: z.string(),
  signature: z.string().meta({ description: "The trusted signature (base64), or empty when unsigned by a trusted key" }),
  size: z.number().int(),
  checksum: z.string().meta({ description: "sha256-<hex> of the binary", example: `sha256-${"0".repeat(64)}` }),
  metadata: z.record(z.string(), z.string()),
  reference: z.string().meta({ description: "Where the artifact lives: host/repo@sha256:…" }),
});

export const ArtifactList = z.object({ artifacts: z.array(ArtifactJson), total: z.number().int() });

export const RegisterArtifactByReference = z.strictObject({
  reference: z.string().min(1).max(1024).meta({ description: "host[:port]/repo@sha256:… of an artifact already in a registry" }),
});

/**
 * The seed's upload form: the bundle itself, base64, pushed into the
 * assigner's registry. It takes the seed's whole `Artifact` struct (seed
 * document, "type Artifact struct"), as a Go client marshals it: `size` and
 * `checksum` are checked against the bytes when set (Go sends 0 and "" for
 * unset ones); `id`, `type`, `signature`, `created_at` and `updated_at` are
 * the server's to set and ignored; `metadata` is read from the bundle
 * (a nil Go map arrives as null).
 */
export const RegisterArtifactUpload = z.strictObject({
  name: z.string().min(1).max(64),
  version: z.string().min(1).max(64),
  description: z.string().max(1024).optional(),
  data: Base64.meta({ description: "base64 of the bundle (tar.zst), at most the assigner's --max-upload-bytes once decoded" }),
  checksum: z
    .string()
    .regex(/^(sha256[-:][a-fA-F0-9]{64})?$/, "checksum is sha256-<64 hex> (or sha256:<64 hex>)")
    .optional()
    .meta({ description: "When set, must be the sha256 of the decoded data" }),
  size: z.number().int().nonnegative().optional().meta({ description: "When set (not 0), must be the decoded data's length" }),
  metadata: z.record(z.string(), z.unknown()).nullable().optional().meta({ description: "Ignored: metadata comes from the bundle" }),
  id: z.unknown().optional().meta({ description: "Ignored: the server sets it (the manifest digest)" }),
  type: z.unknown().optional().meta({ description: "Ignored" }),
  signature: z.unknown().optional().meta({ description: "Ignored: the server sets it from trusted signatures in the registry" }),
  created_at: z.unknown().optional().meta({ description: "Ignored" }),
  updated_at: z.unknown().optional().meta({ description: "Ignored" }),
});

export const RegisterArtifactBody = z.union([RegisterArtifactByReference, RegisterArtifactUpload]);

export const AssignmentJson = z.object({
  artifact_id: Digest,
  host_id: HostId,
  assigned: z.boolean(),
  changed: z.boolean(),
  version: z.number().int(),
});

export const StatusJson = z.object({
  host_id: z.string(),
  artifact_id: z.string(),
  event: z.string(),
  code: z.string().optional().meta({ description: "A failure's error code (NO_SIGNATURE, LOAD_FAILED, …)" }),
  reason: z.string().optional(),
  counters: z.record(z.string(), z.number()).optional(),
  program_id: z.number().int().optional().meta({ description: "attached: the kernel's program id, from the host's signed receipt" }),
  interfaces: z.array(z.object({ iface: z.string(), direction: z.string(), pref: z.number().int() })).optional(),
  since: z.string().optional().meta({ description: "attached: in force on these interfaces since" }),
  time: z.string(),
  seq: z.number().int().optional().meta({ description: "The agent's sequence number of the report: a report is replaced only by one with a higher seq" }),
});

/**
 * An artifact's signatures as the registry stores them (each a sigstore
 * bundle referrer: the manifest's exact bytes and its one layer's), for an
 * agent that cannot reach a registry. It recomputes every digest.
 */
export const SignaturesJson = z.object({
  artifact_id: Digest,
  signatures: z.array(
    z.object({
      manifest: Base64.meta({ description: "The signature manifest's exact bytes" }),
      bundle: Base64.meta({ description: "Its layer: the sigstore bundle JSON's exact bytes" }),
    }),
  ),
});

export const ArtifactStatusJson = z.object({ artifact_id: Digest, hosts: z.array(StatusJson), total: z.number().int() });

export const AgentJson = z.object({
  uid: z.string(),
  host_id: z.string(),
  hostname: z.string().optional(),
  kernel: z.string().optional(),
  labels: Labels.optional(),
  capabilities: Capabilities.optional(),
  registered_at: z.string(),
  last_seen: z.string().nullable(),
});

export const AgentDetailJson = AgentJson.extend({
  assignments: z.array(z.string()),
  status: z.array(StatusJson),
});

export const AgentList = z.object({ agents: z.array(AgentJson), total: z.number().int() });

export const HealthJson = z.object({
  status: z.enum(["ok", "degraded"]),
  store: z.enum(["ok", "unavailable"]),
  registry: z.enum(["ok", "unavailable"]),
  nats: z.enum(["connected", "disconnected", "disabled"]),
});

export const ErrorJson = z.object({
  error: z.string(),
  code: z.string().meta({ description: "One of the assigner's error codes (BAD_GATEWAY, NOT_FOUND, …)" }),
  detail: z.string().optional().meta({ description: "The underlying failure's code, when there is one (DIGEST_MISMATCH, UNREACHABLE, …)" }),
});

/** The `type` of every telemetry payload: what the signed bytes are, and in which version. */
export const TELEMETRY_PAYLOAD_TYPE = "application/vnd.aegis.telemetry.v1+json";

/**
 * Bounds of one message, so a receipt of a large policy on a host with many
 * interfaces still fits (about 350 KiB of JSON at most; NATS takes 1 MiB by
 * default). A policy with more rules than RECEIPT_COUNTERS_MAX reports the
 * rules that dropped the most.
 */
export const RECEIPT_COUNTERS_MAX = 4096;
const RECEIPT_INTERFACES_MAX = 4096;
/** The HTTP route's body: a batch of messages, each at most 512 KiB of base64. */
export const TELEMETRY_BODY_LIMIT = 1024 * 1024;

/** Per-rule drop counters: rule<i> → packets dropped by rule i. */
const Counters = z
  .record(z.string().max(32), z.number().int().nonnegative())
  .refine((c) => Object.keys(c).length <= RECEIPT_COUNTERS_MAX, `at most ${RECEIPT_COUNTERS_MAX} counters`);

/** One hook a program is in force at. */
export const ReceiptInterface = z.strictObject({
  iface: z.string().min(1).max(15),
  direction: z.enum(["ingress", "egress"]),
  pref: z.number().int().min(1).max(0xffff),
});

/**
 * What an `attached` message proves: the kernel runs this program id at
 * these hooks (as tc reports them), since this time (kept by the agent: tc
 * does not record it), with these drop counters.
 */
export const InForceReceipt = z.strictObject({
  program_id: z.number().int().nonnegative(),
  interfaces: z.array(ReceiptInterface).max(RECEIPT_INTERFACES_MAX),
  since: z.iso.datetime(),
});

/**
 * What agents report (docs/architecture.md "The data path", step 7), as the signed payload of a
 * SignedTelemetry. `attached` is the in-force receipt: sent after attaching
 * and again every poll interval, it alone carries `receipt`. `drift`: a
 * filter someone else deleted or replaced, restored (an `attached` follows).
 * `seq` grows with every message an agent sends (microseconds since the
 * epoch at least, so it keeps growing across restarts): the assigner keeps
 * only a message newer than the last it recorded for that host and artifact.
 */
export const TelemetryMessage = z
  .strictObject({
    type: z.literal(TELEMETRY_PAYLOAD_TYPE),
    host_id: HostId,
    artifact_id: Digest,
    event: z.enum(["received", "verified", "program_loaded", "attached", "detached", "drift", "failed"]),
    code: z.string().max(64).optional().meta({ description: "failed: the stable error code (NO_SIGNATURE, DIGEST_MISMATCH, LOAD_FAILED, …)" }),
    reason: z.string().max(2048).optional(),
    counters: Counters.optional(),
    receipt: InForceReceipt.optional(),
    time: z.iso.datetime().meta({ description: "When the agent sent it; the assigner refuses one too far from its own clock" }),
    seq: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  })
  .refine((m) => (m.event === "attached") === (m.receipt !== undefined), "an attached message, and only one, carries the in-force receipt");

export type TelemetryMessage = z.infer<typeof TelemetryMessage>;
export type InForceReceipt = z.infer<typeof InForceReceipt>;

/**
 * What goes over the wire (NATS aegis.telemetry.<host_id>, or POST
 * /agents/{uid}/telemetry): `payload` is base64 of the exact UTF-8 JSON text
 * of a TelemetryMessage, and `signature` base64 of the Ed25519 signature of
 * those bytes by the key the agent registered with. The assigner verifies the
 * bytes it received before parsing them: nothing is re-serialized.
 */
export const SignedTelemetry = z.strictObject({
  payload: Base64.max(512 * 1024).meta({ description: "base64 of the TelemetryMessage JSON text (UTF-8), the signed bytes" }),
  signature: Base64.max(128).meta({ description: "base64 Ed25519 signature of the payload's bytes by the agent's registered key" }),
});

export type SignedTelemetry = z.infer<typeof SignedTelemetry>;

/** The HTTP route's body: one signed message, or a small batch of them. */
export const TelemetryBody = z.union([SignedTelemetry, z.strictObject({ messages: z.array(SignedTelemetry).min(1).max(32) })]);

export const TelemetryResult = z.object({
  recorded: z.number().int().meta({ description: "Messages verified and recorded" }),
  refused: z.number().int().meta({ description: "Messages dropped: unsigned or mis-signed, for another host, stale, replayed, or about an unregistered artifact" }),
});

/** What the assigner publishes on aegis.assignments.<host_id>: the host's new version (poll for the set). */
export const AssignmentNotice = z.object({ host_id: HostId, version: z.number().int() });

export type AssignmentNotice = z.infer<typeof AssignmentNotice>;

/** A label selector (selector.ts): Kubernetes syntax, bounded; stored in its canonical text. */
export const SelectorText = z
  .string()
  .max(SELECTOR_MAX_LENGTH)
  .superRefine((text, ctx) => {
    try {
      parseSelector(text);
    } catch (err) {
      ctx.addIssue({ code: "custom", message: (err as Error).message });
    }
  })
  .meta({ description: "A label selector: key=value, key!=value, key in (a,b), key notin (a,b), key, !key; comma-separated (all must hold)", example: "env=prod,zone in (a,b)" });

/** One assignment of the desired state: an artifact to one host, or to every host whose labels match a selector. */
export const AssignmentEntry = z.union([
  z.strictObject({ artifact_id: Digest, host_id: HostId }),
  z.strictObject({ artifact_id: Digest, selector: SelectorText }),
]);
export type AssignmentEntry = z.infer<typeof AssignmentEntry>;

/** Changes in one request, at most. */
export const ASSIGNMENT_CHANGES_MAX = 1000;
/**
 * POST /assignments's body: the largest the schema below allows, 1000
 * changes of a 1024-character selector, its whitespace characters that JSON
 * writes as six bytes (\u000b): 6.2 MB. The 1 MiB it had refused 1000
 * changes of selectors past ~900 characters, as `aegis apply` sends them.
 */
export const ASSIGNMENT_CHANGES_BODY_LIMIT = 8 * 1024 * 1024;
/** Selector assignments an assigner holds, at most (each is matched against a host's labels on its poll). */
export const SELECTOR_ASSIGNMENTS_MAX = 10_000;
/**
 * Most artifacts one host is assigned, directly and through selectors. Each
 * new one may cost its agent a fetch from the registries the answer names
 * (minutes, should they be slow) and two reports: a lying assigner's list of
 * thousands would keep an agent in one pass for days and aim its requests
 * wherever the list says. A host runs a few policies: an agent refuses a
 * longer answer whole, and the assigner a change that would send one.
 */
export const MAX_ASSIGNED = 256;

/** GET /assignments: the whole desired state; `version` is also the ETag. */
export const DesiredStateJson = z.object({
  version: z.number().int().meta({ description: "Moves on every change of the desired state; send it as If-Match on writes" }),
  assignments: z.array(AssignmentEntry),
  total: z.number().int(),
});

/** POST /assignments: adds and removes applied in one atomic step (If-Match: the version they were planned on). */
export const AssignmentChangesBody = z
  .strictObject({
    add: z.array(AssignmentEntry).max(ASSIGNMENT_CHANGES_MAX).optional(),
    remove: z.array(AssignmentEntry).max(ASSIGNMENT_CHANGES_MAX).optional(),
  })
  .refine((b) => (b.add?.length ?? 0) + (b.remove?.length ?? 0) <= ASSIGNMENT_CHANGES_MAX, `at most ${ASSIGNMENT_CHANGES_MAX} changes in one request`);

export const AssignmentChangesResult = z.object({
  version: z.number().int().meta({ description: "The desired state's version after the change (also the ETag)" }),
  added: z.number().int().meta({ description: "Assignments that were not there before" }),
  removed: z.number().int().meta({ description: "Assignments that were there before" }),
});

/** GET /hosts/{host_id}/assignments: what a host is served, and why. */
export const HostAssignmentsJson = z.object({
  host_id: HostId,
  version: z.number().int().meta({ description: 'The host\'s version, in the ETag of its for-host answer ("v12", or "v12.<epoch>" with the embedded store)' }),
  labels: z.record(z.string(), z.string()).optional().meta({ description: "The labels its agent registered with" }),
  assignments: z.array(z.object({ artifact_id: Digest, via: z.enum(["host", "selector"]), selector: z.string().optional() })),
});

export const RolloutId = z.string().regex(/^[a-z0-9][a-z0-9-]{0,63}$/, "a rollout id is 1-64 lowercase letters, digits or '-'");

/** One ring of a staged rollout, as the driver (`aegis apply --rollout`) records it. */
export const RolloutRing = z.strictObject({
  spec: z.string().max(16).meta({ description: "As given: a host count (1) or a share of the hosts (10%)" }),
  hosts: z.number().int().nonnegative().meta({ description: "Hosts in this ring (not counting earlier rings)" }),
  state: z.enum(["pending", "waiting", "passed", "failed"]),
  in_force: z.number().int().nonnegative().meta({ description: "Hosts whose signed in-force receipt for every new digest arrived" }),
  failed: z.number().int().nonnegative(),
  failures: z
    .array(z.strictObject({ host_id: HostId, artifact_id: Digest.optional(), code: z.string().max(64).optional(), reason: z.string().max(512) }))
    .max(20)
    .meta({ description: "The first failures, with the agents' codes (or 'no receipt in time')" }),
});

/**
 * PUT /rollouts/{id}'s body: the largest record the schema below allows,
 * every free-text character a control character that JSON writes as six
 * bytes (\u0001): 1000 changes of two digests and an 1100-character target
 * (6.8 MB), 16 rings of 20 failures with 128-character host ids, 64-character
 * codes and 512-character reasons (1.2 MB). The default 64 KiB refused a
 * rollout of ~340 replacements before it began.
 */
export const ROLLOUT_BODY_LIMIT = 8 * 1024 * 1024;

/** A staged rollout, kept on the assigner so that any process can show it (`aegis rollout status`). */
export const RolloutJson = z.strictObject({
  id: RolloutId,
  state: z.enum(["running", "completed", "rolling_back", "rolled_back", "failed"]),
  changes: z.array(z.strictObject({ from: Digest.optional(), to: Digest, target: z.string().max(1100) })).max(ASSIGNMENT_CHANGES_MAX),
  rings: z.array(RolloutRing).min(1).max(16),
  max_failures: z.string().max(16),
  ring_timeout_ms: z.number().int().positive(),
  reason: z.string().max(2048).optional().meta({ description: "Why it stopped" }),
  started_at: z.iso.datetime(),
  updated_at: z.iso.datetime(),
});
export type RolloutJson = z.infer<typeof RolloutJson>;

export const RolloutList = z.object({ rollouts: z.array(RolloutJson), total: z.number().int() });

/** A rollout's states while its process drives it: one at a time (fleet/rollout.ts refuses another, and applies). */
export const ROLLOUT_ACTIVE_STATES: ReadonlySet<RolloutJson["state"]> = new Set(["running", "rolling_back"]);
