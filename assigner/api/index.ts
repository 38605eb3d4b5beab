// The assigner's wire contract apart from its server: the HTTP API's zod
// schemas, the NATS subjects, the error codes and their statuses, and a typed
// client. Agents and the CLI import only this; it loads no Express, ioredis,
// prom-client or NATS.
export { capabilitiesJson, featuresOf, unrunnable, unrunnableError } from "./capabilities.js";
export { AssignerClient, MAX_ANSWER_SIZE, type ForHostResult, type RegisterOptions } from "./client.js";
export { AssignerError, ERROR_STATUS, isAssignerErrorCode, type AssignerErrorCode } from "./errors.js";
export {
  AgentDetailJson,
  AgentJson,
  AgentList,
  AgentUid,
  ASSIGNMENT_CHANGES_BODY_LIMIT,
  ASSIGNMENT_CHANGES_MAX,
  AssignmentChangesBody,
  AssignmentChangesResult,
  AssignmentEntry,
  ArtifactJson,
  ArtifactList,
  ArtifactStatusJson,
  AssignmentJson,
  AssignmentNotice,
  Capabilities,
  DesiredStateJson,
  Digest,
  ErrorJson,
  HealthJson,
  HostAssignmentsJson,
  HostId,
  InForceReceipt,
  RECEIPT_COUNTERS_MAX,
  ReceiptInterface,
  RegisterArtifactBody,
  RegisterArtifactByReference,
  RegisterArtifactUpload,
  RegisterCompleteBody,
  RegisterCompleteResponse,
  RegisterInitBody,
  RegisterInitResponse,
  RolloutId,
  RolloutJson,
  RolloutList,
  ROLLOUT_ACTIVE_STATES,
  ROLLOUT_BODY_LIMIT,
  RolloutRing,
  SELECTOR_ASSIGNMENTS_MAX,
  SelectorText,
  SignaturesJson,
  SignedTelemetry,
  StatusJson,
  TELEMETRY_BODY_LIMIT,
  TELEMETRY_PAYLOAD_TYPE,
  TelemetryBody,
  TelemetryMessage,
  TelemetryResult,
} from "./schemas.js";
export { canonicalSelector, matches, parseSelector, type Requirement, type Selector } from "./selector.js";
export { openTelemetry, sealTelemetry, type OpenOptions } from "./telemetry.js";
export { assignmentsSubject, TELEMETRY_SUBJECTS, telemetrySubject, telemetrySubjectHost } from "./subjects.js";
