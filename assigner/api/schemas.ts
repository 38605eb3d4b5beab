// Every input and output of the HTTP API, as zod schemas: the server's
// handlers validate with them, /openapi.json is generated from them, and
// clients (the CLI, agents) type their calls with them.
// Shapes follow the seed document ("Expected API Responses") and DESIGN.md.
import { z } from "zod";

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
  reason: z.string().optional(),
  counters: z.record(z.string(), z.number()).optional(),
  time: z.string(),
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

/** What agents publish on aegis.telemetry.<host_id> (DESIGN.md "Agent", step 5). */
export const TelemetryMessage = z.object({
  host_id: HostId,
  artifact_id: Digest,
  event: z.enum(["received", "verified", "program_loaded", "attached", "detached", "failed"]),
  reason: z.string().max(2048).optional(),
  counters: z.record(z.string(), z.number()).optional(),
  time: z.string().optional(),
});

export type TelemetryMessage = z.infer<typeof TelemetryMessage>;

/** What the assigner publishes on aegis.assignments.<host_id>: the host's new version (poll for the set). */
export const AssignmentNotice = z.object({ host_id: HostId, version: z.number().int() });

export type AssignmentNotice = z.infer<typeof AssignmentNotice>;
