// References: `host[:port]/repo[:tag][@sha256:…]` for registries (the
// distribution reference grammar, host required) and `oci:<dir>[:tag|@digest]`
// for OCI image layouts.
// https://github.com/distribution/reference/blob/main/reference.go
import { InputError } from "../errors.js";
import { quote } from "../util/index.js";

export interface RemoteReference {
  kind: "remote";
  /** host[:port] */
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
}

export interface LayoutReference {
  kind: "layout";
  dir: string;
  tag?: string;
  digest?: string;
}

export type Reference = RemoteReference | LayoutReference;

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;
const HOST = /^(?:localhost|\[[0-9a-fA-F:]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::\d{1,5})?$/;

/**
 * Whether `value` is a registry's `host[:port]` as a reference names one: a
 * name with a dot or a port, or `localhost` (a bare word is the first
 * component of a repository, as Docker reads `team/policy`).
 */
export function isRegistryHost(value: string): boolean {
  return HOST.test(value) && (value.includes(".") || value.includes(":") || value === "localhost");
}

/** Whether `value` is a tag by the OCI grammar: what a reference can select, and all a registry's tag list is kept for. */
export function isTag(value: unknown): value is string {
  return typeof value === "string" && TAG.test(value);
}

function fail(text: string, why: string): never {
  throw new InputError("INVALID_REFERENCE", `invalid reference ${quote(text)}: ${why}`);
}

function splitDigest(text: string, rest: string): { rest: string; digest?: string } {
  const at = rest.lastIndexOf("@");
  if (at < 0) return { rest };
  const digest = rest.slice(at + 1);
  if (!DIGEST.test(digest)) fail(text, `"${digest}" is not a sha256 digest (sha256:<64 lowercase hex>)`);
  return { rest: rest.slice(0, at), digest };
}

export function parseReference(text: string): Reference {
  if (text.startsWith("oci:")) {
    const { rest, digest } = splitDigest(text, text.slice(4));
    // A tag follows the last ':' unless that ':' is part of the directory path.
    const colon = rest.lastIndexOf(":");
    const tag = colon >= 0 && !rest.slice(colon + 1).includes("/") ? rest.slice(colon + 1) : undefined;
    const dir = tag === undefined ? rest : rest.slice(0, colon);
    if (!dir) fail(text, "no layout directory after oci:");
    if (tag !== undefined && !TAG.test(tag)) fail(text, `"${tag}" is not a valid tag`);
    return { kind: "layout", dir, ...(tag ? { tag } : {}), ...(digest ? { digest } : {}) };
  }
  const { rest, digest } = splitDigest(text, text);
  const slash = rest.indexOf("/");
  if (slash < 0) fail(text, "expected host[:port]/repository[:tag][@digest] or oci:<dir>");
  const registry = rest.slice(0, slash);
  if (!isRegistryHost(registry)) {
    fail(text, `"${registry}" is not a registry host (give one, e.g. registry.example.com/team/policy or 127.0.0.1:5000/policy)`);
  }
  let path = rest.slice(slash + 1);
  let tag: string | undefined;
  const colon = path.lastIndexOf(":");
  if (colon >= 0) {
    tag = path.slice(colon + 1);
    path = path.slice(0, colon);
    if (!TAG.test(tag)) fail(text, `"${tag}" is not a valid tag`);
  }
  if (!path || !path.split("/").every((c) => PATH_COMPONENT.test(c))) {
    fail(text, `"${path}" is not a valid repository name (lowercase letters, digits, separators . _ __ -)`);
  }
  return { kind: "remote", registry, repository: path, ...(tag ? { tag } : {}), ...(digest ? { digest } : {}) };
}

/** The tag or digest a reference selects; the digest wins, a tag is never trusted over it. */
export function selector(ref: Reference): string | undefined {
  return ref.digest ?? ref.tag;
}

export function formatReference(ref: Reference, digest = ref.digest): string {
  const base = ref.kind === "layout" ? `oci:${ref.dir}` : `${ref.registry}/${ref.repository}`;
  return digest ? `${base}@${digest}` : ref.tag ? `${base}:${ref.tag}` : base;
}
