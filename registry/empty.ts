// The content of the OCI empty descriptor, `{}`: artifacts (policies,
// signatures, trust roots) use it as their config. Its bytes are fixed by
// its digest, so a reader needs no request for them and a writer stores them
// only where they are missing.
// https://github.com/opencontainers/image-spec/blob/main/manifest.md#guidance-for-an-empty-descriptor
import { Readable } from "node:stream";
import { EMPTY_CONFIG, type Descriptor } from "./oci.js";
import type { AbortOptions, Ingested, Ingester, Target } from "./storage.js";

/** The empty config's descriptor, without its embedded data. */
const EMPTY_CONFIG_DESCRIPTOR: Descriptor = { mediaType: EMPTY_CONFIG.mediaType, digest: EMPTY_CONFIG.digest, size: EMPTY_CONFIG.size };

/** A fresh copy of its bytes. */
export function emptyConfigBytes(): Buffer {
  return Buffer.from(EMPTY_CONFIG.data!, "base64");
}

/** Stores the empty config in `target` unless it is there; returns its descriptor. */
export async function storeEmptyConfig(target: Target, options: AbortOptions = {}): Promise<Descriptor> {
  if (!(await target.exists(EMPTY_CONFIG_DESCRIPTOR, options))) await target.push(EMPTY_CONFIG_DESCRIPTOR, Readable.from([emptyConfigBytes()]), options);
  return EMPTY_CONFIG_DESCRIPTOR;
}

/**
 * The empty config's upload opened in `target` unless it is there, for the
 * caller to commit beside an artifact's own upload once that proved valid
 * (or to abort): its requests overlap that upload instead of following it.
 */
export async function ingestEmptyConfig(target: Target & Ingester, options: AbortOptions = {}): Promise<Ingested | undefined> {
  if (await target.exists(EMPTY_CONFIG_DESCRIPTOR, options)) return undefined;
  return target.ingest(EMPTY_CONFIG.mediaType, EMPTY_CONFIG.size, Readable.from([emptyConfigBytes()]), options);
}
