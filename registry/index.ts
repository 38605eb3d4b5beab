// The registry package: OCI content, stores and copy.
export { RegistryError, isContentFault, isNotFound, type RegistryErrorCode } from "./errors.js";
export { checkDigest, descriptorFor, DigestingStream, isDigest, readAll, sha256, verifyBytes, verifyStream, VerifyingStream } from "./digest.js";
export {
  Annotation,
  EMPTY_CONFIG,
  MediaType,
  MAX_MANIFEST_SIZE,
  encodeJson,
  isManifestType,
  parseManifest,
  referrerDescriptor,
  successors,
  type Descriptor,
  type Index,
  type Manifest,
} from "./oci.js";
export { emptyConfigBytes, ingestEmptyConfig, storeEmptyConfig } from "./empty.js";
export type {
  AbortOptions,
  Deleter,
  Fetcher,
  Ingested,
  Ingester,
  Mounter,
  ReferencePusher,
  Pusher,
  ReadOnlyStorage,
  ReadOnlyTarget,
  ReferrerIndexer,
  ReferrerLister,
  Resolver,
  Storage,
  TagLister,
  Tagger,
  Target,
} from "./storage.js";
export { cancellable } from "./cancellable.js";
export { MemoryTarget } from "./memory.js";
export { OciLayoutTarget } from "./layout.js";
export { RemoteRepository, type RepositoryOptions } from "./remote/repository.js";
export { RegistryClient, isLoopback, SLOW_UPLINK_BYTES_PER_S, type ClientOptions } from "./remote/client.js";
export {
  credentialsFromDockerConfig,
  credentialsFromEnv,
  credentialsFromEnvironment,
  credentialsHost,
  type CredentialLookup,
  type Credentials,
} from "./remote/credentials.js";
export { addFallbackReferrer, fallbackReferrers, referrersTag } from "./referrers.js";
export { copy, COPY_LIMITS, type CopyEvent, type CopyOptions } from "./copy.js";
export { formatReference, isRegistryHost, parseReference, selector, type Reference } from "./reference.js";
export { openReference, type Opened } from "./open.js";
