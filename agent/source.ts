// The assigner as the last source of an artifact, for a host that reaches no
// registry: the manifest, the signature bundles and the layer it serves,
// behind the registry's read role (ReadOnlyTarget), so `copy` and
// `verifyArtifact` treat it exactly like a registry. Nothing it says is
// trusted: every digest is recomputed here and every byte is verified as it
// is read, so an assigner that lies is refused with the same codes a
// registry would get (DIGEST_MISMATCH, SUBJECT_MISMATCH, …).
import { Readable } from "node:stream";
import type { AssignerClient } from "../assigner/api/index.js";
import {
  descriptorFor,
  EMPTY_CONFIG,
  emptyConfigBytes,
  isManifestType,
  MAX_MANIFEST_SIZE,
  MediaType,
  parseManifest,
  referrerDescriptor,
  RegistryError,
  verifyBytes,
  verifyStream,
  type AbortOptions,
  type Descriptor,
  type ReadOnlyTarget,
} from "../registry/index.js";
import { MAX_SIGNATURES } from "../signing/index.js";
import { AgentError } from "./errors.js";

/** What the source needs of the assigner: its three artifact reads, with an agent token. */
export type ArtifactReader = Pick<AssignerClient, "manifest" | "signatures" | "binary" | "baseUrl">;

/** One artifact's chain as the assigner serves it; resolves only that artifact's digest. */
export class AssignerSource implements ReadOnlyTarget {
  readonly name: string;
  /** Content read so far, by the digest computed here. */
  private readonly blobs = new Map<string, Buffer>([[EMPTY_CONFIG.digest, emptyConfigBytes()]]);
  private subject: Descriptor | undefined;
  private signatureList: Descriptor[] | undefined;

  /** `signal`: cancels every request (the agent stopping, or the pull's deadline), beside any a read is given. */
  constructor(
    private readonly client: ArtifactReader,
    readonly id: string,
    private readonly signal?: AbortSignal,
  ) {
    this.name = `assigner ${client.baseUrl}`;
  }

  private signalFor(options: AbortOptions): { signal?: AbortSignal } {
    const signals = [this.signal, options.signal].filter((s): s is AbortSignal => s !== undefined);
    return signals.length === 0 ? {} : { signal: signals.length === 1 ? signals[0]! : AbortSignal.any(signals) };
  }

  async resolve(reference: string, options: AbortOptions = {}): Promise<Descriptor> {
    if (reference !== this.id) throw new RegistryError("NOT_FOUND", `${this.name} serves only ${this.id}, not ${reference}`);
    if (this.subject) return this.subject;
    const { mediaType, bytes } = await this.client.manifest(this.id, { limit: MAX_MANIFEST_SIZE, ...this.signalFor(options) });
    options.signal?.throwIfAborted();
    const type = isManifestType(mediaType) ? mediaType : MediaType.ImageManifest;
    // The digest is the id asked for; the bytes must hash to it, whatever the assigner says.
    const desc = { mediaType: type, digest: this.id, size: bytes.byteLength };
    verifyBytes(desc, bytes, `${this.name} (manifest of ${this.id})`);
    this.blobs.set(this.id, bytes);
    this.subject = desc;
    return desc;
  }

  async exists(desc: Descriptor): Promise<boolean> {
    return this.blobs.has(desc.digest) || (await this.layer()) === desc.digest;
  }

  async fetch(desc: Descriptor, options: AbortOptions = {}): Promise<Readable> {
    const { signal } = this.signalFor(options);
    signal?.throwIfAborted();
    const where = `${this.name} (${desc.digest})`;
    const known = this.blobs.get(desc.digest);
    if (known) return verifyStream(desc, Readable.from([known]), where);
    if ((await this.layer()) !== desc.digest) throw new RegistryError("NOT_FOUND", `${this.name} has no ${desc.digest} for ${this.id}`);
    const body = await this.client.binary(this.id, signal ? { signal } : {});
    const verified = verifyStream(desc, body, where);
    if (signal) {
      const stop = () => verified.destroy(signal.reason as Error);
      signal.addEventListener("abort", stop, { once: true });
      verified.once("close", () => signal.removeEventListener("abort", stop));
    }
    return verified;
  }

  async tags(options: AbortOptions = {}): Promise<string[]> {
    this.signalFor(options).signal?.throwIfAborted();
    return [];
  }

  /**
   * The signature manifests the assigner sent, described from their own
   * bytes. Their subjects are not checked here: `verifyArtifact` refuses a
   * signature for another digest (SUBJECT_MISMATCH), as it would a registry's.
   */
  async referrers(subject: Descriptor, artifactType?: string, options: AbortOptions = {}): Promise<Descriptor[]> {
    if (subject.digest !== this.id) return [];
    if (!this.signatureList) {
      const answer = await this.client.signatures(this.id, this.signalFor(options));
      if (!Array.isArray(answer?.signatures)) throw new AgentError("BAD_ASSIGNMENT", `the signatures of ${this.id} from ${this.name} are not a list`);
      this.signatureList = [];
      // No more than a check reads (signing/verify.ts); the answer's size is capped by the client.
      for (const s of answer.signatures.slice(0, MAX_SIGNATURES)) {
        if (typeof s?.manifest !== "string" || typeof s.bundle !== "string") continue; // as a malformed signature: absent
        const manifest = Buffer.from(s.manifest, "base64");
        const bundle = Buffer.from(s.bundle, "base64");
        const desc = descriptorFor(MediaType.ImageManifest, manifest);
        let doc;
        try {
          doc = parseManifest(manifest, desc.mediaType);
        } catch {
          continue; // not a manifest: as if absent (the assigner's own rule for a malformed signature)
        }
        this.blobs.set(desc.digest, manifest);
        this.blobs.set(descriptorFor("application/octet-stream", bundle).digest, bundle);
        this.signatureList.push(referrerDescriptor(desc, doc));
      }
    }
    return this.signatureList.filter((r) => !artifactType || r.artifactType === artifactType);
  }

  /** The digest of the artifact's one layer, from the verified manifest. */
  private async layer(): Promise<string | undefined> {
    const subject = await this.resolve(this.id);
    const doc = parseManifest(this.blobs.get(this.id)!, subject.mediaType);
    return "layers" in doc && doc.layers.length === 1 ? doc.layers[0]!.digest : undefined;
  }
}
