// The assigner package: the HTTP service that maps hosts to policy artifacts.
// Its wire contract (schemas, NATS subjects, error codes) and client are in
// api/, which clients import instead of this.
export { startAssigner, VERSION, type AssignerOptions, type RunningAssigner } from "./server.js";
export { StoreUnavailableError } from "./errors.js";
export { EmbeddedStore } from "./store/embedded.js";
export { RedisStore, type RedisStoreOptions } from "./store/redis.js";
export type { AgentRecord, ArtifactRecord, AssignerStore, HostAssignments, StatusRecord } from "./store/store.js";
