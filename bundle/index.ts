// The bundle package: policy source, the deterministic tar.zst, and its OCI artifact shape.
export { BundleError, type BundleErrorCode } from "./errors.js";
export { buildBundle, encodeBundle } from "./build.js";
export { decodeBundle, POLICY_FILE, readBundlePolicy, PROGRAM_FILE, type Bundle } from "./read.js";
export { BUNDLE_LIMITS, readTar, writeTar, type TarEntry, type TarLimits } from "./tar.js";
export { LAYER_TITLE, packArtifact, policyAnnotations, PolicyAnnotation, storeArtifact, type PackedArtifact } from "./artifact.js";
export { pullBundle, pushBundle, readPolicyManifest, type PulledArtifact } from "./transfer.js";
