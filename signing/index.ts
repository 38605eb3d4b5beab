// The signing package: keys, trust, signing and verification of policy artifacts.
export { SignatureError, type SignatureErrorCode } from "./errors.js";
export { generateKeyPair, keyHint, loadPrivateKey, loadPublicKey, parsePublicKey, writeKeyPair, type KeyAlgorithm, type KeyPairPem } from "./keys.js";
export { KeySigner } from "./signer.js";
export { signArtifact, SignatureAnnotation, SIGSTORE_BUNDLE_TYPE, type SignedArtifact } from "./sign.js";
export { COSIGN_SIGN_PREDICATE, IN_TOTO_PAYLOAD_TYPE } from "./statement.js";
export { keyValidity, loadTrust, loadTrustFile, trustedKey, type TrustedKey, type TrustPolicy } from "./trust.js";
export { verifyArtifact, type VerifiedSignature, type VerifyOptions } from "./verify.js";
