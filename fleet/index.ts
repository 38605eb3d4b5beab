// GitOps for a fleet: fleet files (desired state by digest, targets by host
// or label selector), the plan against the assigner's desired state, apply
// with If-Match, promote between environments, and staged rollouts with
// automatic rollback. Talks to the assigner through assigner/api only.
export { environmentsOf, FLEET_MAX_FILES, FLEET_MAX_POLICIES, loadFleetFile, loadFleetFiles, rewriteRefs, type Fleet, type FleetFile, type FleetPolicy, type RefEdit } from "./file.js";
export { applyPlan, prepareFleet, registerArtifacts, type ApplyResult, type PrepareOptions } from "./apply.js";
export { desiredEntries, formatPlan, planFleet, planIsEmpty, planJson, targetText, type CurrentState, type FleetPlan, type PlanEntry, type Target } from "./plan.js";
export { promote } from "./promote.js";
export { abandonRollout, allowedFailures, parseRings, refuseDuringRollout, RolloutStopped, runRollout, type RolloutOptions, type RolloutResult } from "./rollout.js";
