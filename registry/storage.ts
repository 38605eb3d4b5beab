// Storage roles, after oras-go's content package: small interfaces that the
// memory, OCI-layout and remote implementations share, so that one `copy`
// serves push, pull and mirror, and a reader (`copy`'s source, `verify`, the
// agent) asks only for the read half. https://pkg.go.dev/oras.land/oras-go/v2/content
import type { Readable } from "node:stream";
import type { Descriptor } from "./oci.js";

/** Lets a caller cancel a call, and the stream it returns: a stopping agent cancels its pull. */
export interface AbortOptions {
  signal?: AbortSignal;
}

export interface Fetcher {
  /**
   * The content of `desc`, verified against its size and digest as it
   * streams. Aborting `signal` rejects the call, or destroys the stream with
   * the signal's reason.
   */
  fetch(desc: Descriptor, options?: AbortOptions): Promise<Readable>;
}

export interface Pusher {
  /**
   * Stores `content`, which must match `desc`; content that does not match
   * is refused and nothing is stored.
   */
  push(desc: Descriptor, content: Readable, options?: AbortOptions): Promise<void>;
}

export interface ReadOnlyStorage extends Fetcher {
  exists(desc: Descriptor, options?: AbortOptions): Promise<boolean>;
  /**
   * The stored bytes of `desc`, NOT verified: only for handing straight to
   * a Pusher, whose contract is to check what it stores. `copy` uses it so
   * each byte is hashed once, by the destination, instead of on fetch and
   * again on push. Optional: without it `copy` uses `fetch`.
   */
  fetchUnverified?(desc: Descriptor, options?: AbortOptions): Promise<Readable>;
}

export interface Storage extends ReadOnlyStorage, Pusher {}

/**
 * Content written to a store but not yet stored: its descriptor is known,
 * and only `commit` makes it content of the store.
 */
export interface Ingested {
  /** The bytes' descriptor, their digest learned as they streamed. */
  readonly desc: Descriptor;
  /** Stores the bytes under `desc.digest`; a failed commit stores nothing. */
  commit(): Promise<void>;
  /** Drops the bytes (best effort: a registry purges an abandoned upload anyway); nothing is stored. */
  abort(): Promise<void>;
}

/**
 * A store that takes a blob whose digest is learned as it streams, after
 * containerd's content.Ingester and content.Writer (write the bytes, learn
 * the digest, then commit or abort) and containers/image's PutBlob with an
 * unknown digest: `aegis push` reads a bundle file once, hashing and
 * uploading its bytes while it checks them, and commits only once the
 * bundle has proved valid. https://pkg.go.dev/github.com/containerd/containerd/content#Ingester
 */
export interface Ingester {
  /**
   * Writes `content`, which must be exactly `size` bytes, hashing it as it
   * streams; resolves once every byte is written, with its descriptor and
   * nothing stored yet: the caller commits it, or aborts it. Content of
   * another size, a failing stream or an aborted `signal` rejects, and
   * nothing is left behind. For blobs: a manifest, whose bytes are in hand,
   * goes through `push`.
   */
  ingest(mediaType: string, size: number, content: Readable, options?: AbortOptions): Promise<Ingested>;
}

/** A store that can take a blob from another store without the bytes passing through this process (a cross-repository mount). */
export interface Mounter {
  /**
   * True once `desc`, held by `source`, is stored here; false when its
   * bytes must be copied instead (another registry, or the registry declined).
   */
  mountFrom(desc: Descriptor, source: ReadOnlyTarget, options?: AbortOptions): Promise<boolean>;
}

/**
 * A store that takes a manifest and a tag for it in one write, after
 * oras-go's registry.ReferencePusher: a registry's PUT /manifests/<tag>
 * stores the manifest and points the tag at it, where push then tag would
 * cost a HEAD and two PUTs. https://pkg.go.dev/oras.land/oras-go/v2/registry#ReferencePusher
 */
export interface ReferencePusher {
  /** Stores the manifest `content` (which must match `desc`) and points `tag` at it; content that does not match stores nothing. */
  pushReference(desc: Descriptor, content: Readable, tag: string, options?: AbortOptions): Promise<void>;
}

export interface Deleter {
  /** Removes `desc`'s content and every tag that names it; NOT_FOUND when it is not stored. */
  delete(desc: Descriptor): Promise<void>;
}

export interface Resolver {
  /** The descriptor a tag or digest names. */
  resolve(reference: string, options?: AbortOptions): Promise<Descriptor>;
}

export interface TagLister {
  /** Every tag, in no particular order. `options.signal` cancels the listing (every page). */
  tags(options?: AbortOptions): Promise<string[]>;
}

export interface Tagger extends TagLister {
  /** Points `tag` at the manifest `desc`, which must already be stored. */
  tag(desc: Descriptor, tag: string): Promise<void>;
}

export interface ReferrerLister {
  /** Manifests whose subject is `subject`, optionally of one artifact type. `options.signal` cancels the listing. */
  referrers(subject: Descriptor, artifactType?: string, options?: AbortOptions): Promise<Descriptor[]>;
}

export interface ReferrerIndexer {
  /**
   * Records that `referrer` (already pushed, its subject set) refers to
   * `subject`, where the store does not do it on push (the OCI tag-schema
   * fallback).
   */
  indexReferrer(subject: Descriptor, referrer: Descriptor): Promise<void>;
}

/** What a reader needs of a store: the source of `copy`, `verifyArtifact`, a pull. */
export interface ReadOnlyTarget extends ReadOnlyStorage, Resolver, TagLister, ReferrerLister {
  /** Where the content lives, for messages: "127.0.0.1:5000/aegis/policies", "oci:./mirror". */
  readonly name: string;
}

/** A store that holds manifests with tags and referrers: a repository, a layout, memory. */
export interface Target extends ReadOnlyTarget, Storage, Tagger, ReferrerIndexer, Partial<Ingester>, Partial<Mounter>, Partial<ReferencePusher> {}
