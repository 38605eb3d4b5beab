// Minimal raw OCI distribution calls for the harness self-tests
// (https://github.com/opencontainers/distribution-spec/blob/main/spec.md#push).
import { createHash } from "node:crypto";
import { fetch } from "undici";
import type { Response } from "undici";

export const EMPTY_CONFIG = {
  mediaType: "application/vnd.oci.empty.v1+json",
  digest: "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
  size: 2,
} as const;
export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";

export function sha256(data: Uint8Array | string): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

export function basicAuth(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`).toString("base64")}`;
}

/** Monolithic upload: POST to open a session, then PUT ?digest= with the bytes. Returns the digest. */
export async function pushBlob(baseUrl: string, repo: string, bytes: Uint8Array, authorization?: string): Promise<string> {
  const auth: Record<string, string> = authorization === undefined ? {} : { authorization };
  const digest = sha256(bytes);
  const post = await fetch(`${baseUrl}/v2/${repo}/blobs/uploads/`, { method: "POST", headers: auth });
  await post.arrayBuffer();
  if (post.status !== 202) throw new Error(`POST upload: ${post.status}`);
  const location = new URL(post.headers.get("location") ?? "", baseUrl);
  location.searchParams.set("digest", digest);
  const put = await fetch(location, {
    method: "PUT",
    headers: { ...auth, "content-type": "application/octet-stream" },
    body: bytes,
  });
  await put.arrayBuffer();
  if (put.status !== 201) throw new Error(`PUT upload: ${put.status}`);
  return digest;
}

/** Pushes exact manifest bytes; returns the response for header checks. */
export async function pushManifest(baseUrl: string, repo: string, reference: string, body: string, mediaType = OCI_MANIFEST): Promise<Response> {
  const res = await fetch(`${baseUrl}/v2/${repo}/manifests/${reference}`, {
    method: "PUT",
    headers: { "content-type": mediaType },
    body,
  });
  await res.arrayBuffer();
  if (res.status !== 201) throw new Error(`PUT manifest: ${res.status}`);
  return res;
}
