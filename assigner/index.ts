// The assigner package: the HTTP service that maps hosts to policy artifacts.
export { startAssigner, VERSION, type AssignerOptions, type RunningAssigner } from "./server.js";
export { AssignerError, ERROR_STATUS, StoreUnavailableError, type AssignerErrorCode } from "./errors.js";
export { EmbeddedStore } from "./store/embedded.js";
export { RedisStore, type RedisStoreOptions } from "./store/redis.js";
export type { AgentRecord, ArtifactRecord, AssignerStore, HostAssignments, StatusRecord } from "./store/store.js";
export { assignmentsSubject, telemetrySubject } from "./events.js";
export { TelemetryMessage } from "./schemas.js";
