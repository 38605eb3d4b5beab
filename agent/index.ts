// The agent package: a host daemon that registers, learns its assigned
// digests, fetches and verifies them, plans, and enforces them through the
// Datapath (docs/architecture.md "The agent").
export { Agent, type AgentOptions } from "./agent.js";
export { AgentError, type AgentErrorCode } from "./errors.js";
export { Executor } from "./executor.js";
export { ArtifactCache, type Assigned, type FetchOptions, type VerifiedArtifact } from "./fetch.js";
export { AssignerSource, type ArtifactReader } from "./source.js";
export { AgentMetrics, serveMetrics } from "./metrics.js";
export { basePref, compareVersions, newestByName, plan, PREF_MAX, PREF_MIN, prefFor, type InstalledProgram, type PlanOptions, type Program, type Step } from "./plan.js";
export { logLine, receiptCounters, telemetryMessage, type Reporter, type StepEvent, type StepReport } from "./report.js";
export { collectStatus, STATUS_HEADER, statusCells, type StatusRow } from "./status.js";
export { allowIndexes, DEFAULT_STATE_DIR, StateDir, type InstalledRecord, type Registration } from "./state.js";
export { TrustRootFollower, type TrustRootOptions } from "./trust-root.js";
