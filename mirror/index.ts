// The mirror package: capsules that carry signed artifacts into air-gapped sites.
export { MirrorError, type MirrorErrorCode } from "./errors.js";
export { CAPSULE_LIMITS, readCapsule, SOURCE_ANNOTATION, writeCapsule, type CapsuleArtifact, type CapsuleLimits, type CapsuleSource, type OpenedCapsule, type WrittenCapsule } from "./capsule.js";
export { importCapsule, type ImportedArtifact, type ImportOptions } from "./import.js";
