// The signing package: keys, trust, signing and verification of policy artifacts.
export { CHECK_OF, SignatureError, type SignatureCheck, type SignatureErrorCode } from "./errors.js";
export { FULCIO_OID, matchIdentity, type CertificateIdentity, type IdentityPolicy, type Matcher } from "./identity.js";
export { generateKeyPair, keyHint, loadPrivateKey, loadPublicKey, parsePublicKey, writeKeyPair, type KeyAlgorithm, type KeyPairPem } from "./keys.js";
export { KeySigner } from "./signer.js";
export { signArtifact, SignatureAnnotation, SIGSTORE_BUNDLE_TYPE, storeSignatureBundle, type SignedArtifact } from "./sign.js";
export { COSIGN_SIGN_PREDICATE, IN_TOTO_PAYLOAD_TYPE } from "./statement.js";
export {
  keyValidity,
  loadTrust,
  loadTrustFile,
  readTrustDocument,
  mergeTrust,
  trustedKey,
  trustFromDocument,
  type LoadTrustOptions,
  type SignatureRequirement,
  type TrustedKey,
  type TrustedRootFetcher,
  type TrustPolicy,
} from "./trust.js";
export { loadTrustedRootFile, parseTrustedRoot, TRUSTED_ROOT_MEDIA_TYPE, type TrustedRootMaterial } from "./trusted-root.js";
export { explainArtifact, listSignatures, MAX_SIGNATURE_SIZE, MAX_SIGNATURES, verifyArtifact, verifySignatures, type Explanation, type SignatureVerdict, type VerifiedSignature, type VerifyOptions } from "./verify.js";
export {
  fetchTrustRoot,
  pushTrustRoot,
  TRUST_ROOT_ARTIFACT_TYPE,
  trustedRootFetcher,
  trustRootFromBytes,
  type PushTrustRootOptions,
  type TrustRootArtifact,
} from "./trust-root.js";
