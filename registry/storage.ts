// Storage roles, after oras-go's content package: small interfaces that the
// memory, OCI-layout and remote implementations share, so that one `copy`
// serves push, pull and mirror. https://pkg.go.dev/oras.land/oras-go/v2/content
import type { Readable } from "node:stream";
import type { Descriptor } from "./oci.js";

export interface Fetcher {
  /** The content of `desc`, verified against its size and digest as it streams. */
  fetch(desc: Descriptor): Promise<Readable>;
}

export interface Pusher {
  /**
   * Stores `content`, which must match `desc`; content that does not match
   * is refused and nothing is stored.
   */
  push(desc: Descriptor, content: Readable): Promise<void>;
}

export interface Storage extends Fetcher, Pusher {
  exists(desc: Descriptor): Promise<boolean>;
}

export interface Resolver {
  /** The descriptor a tag or digest names. */
  resolve(reference: string): Promise<Descriptor>;
}

export interface Tagger {
  /** Points `tag` at the manifest `desc`, which must already be stored. */
  tag(desc: Descriptor, tag: string): Promise<void>;
  /** Every tag, in no particular order. */
  tags(): Promise<string[]>;
}

export interface ReferrerLister {
  /** Manifests whose subject is `subject`, optionally of one artifact type. */
  referrers(subject: Descriptor, artifactType?: string): Promise<Descriptor[]>;
  /**
   * Records that `referrer` (already pushed, its subject set) refers to
   * `subject`, where the store does not do it on push (the OCI tag-schema
   * fallback).
   */
  indexReferrer(subject: Descriptor, referrer: Descriptor): Promise<void>;
}

/** A store that holds manifests with tags and referrers: a repository, a layout, memory. */
export interface Target extends Storage, Resolver, Tagger, ReferrerLister {
  /** Where the content lives, for messages: "127.0.0.1:5000/aegis/policies", "oci:./mirror". */
  readonly name: string;
}
