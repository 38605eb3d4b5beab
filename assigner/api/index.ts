// The assigner's wire contract apart from its server: the HTTP API's zod
// schemas, the NATS subjects, the error codes and their statuses, and a typed
// client. Agents and the CLI import only this; it loads no Express, ioredis,
// prom-client or NATS.
export { capabilitiesJson, featuresOf } from "./capabilities.js";
export { AssignerClient, type ForHostResult, type RegisterOptions } from "./client.js";
export { AssignerError, ERROR_STATUS, isAssignerErrorCode, type AssignerErrorCode } from "./errors.js";
export {
  AgentDetailJson,
  AgentJson,
  AgentList,
  AgentUid,
  ArtifactJson,
  ArtifactList,
  ArtifactStatusJson,
  AssignmentJson,
  AssignmentNotice,
  Capabilities,
  Digest,
  ErrorJson,
  HealthJson,
  HostId,
  RegisterArtifactBody,
  RegisterArtifactByReference,
  RegisterArtifactUpload,
  RegisterCompleteBody,
  RegisterCompleteResponse,
  RegisterInitBody,
  RegisterInitResponse,
  SignaturesJson,
  StatusJson,
  TelemetryMessage,
} from "./schemas.js";
export { assignmentsSubject, TELEMETRY_SUBJECTS, telemetrySubject } from "./subjects.js";
