// A test Sigstore, offline: a Fulcio-like CA that issues short-lived
// code-signing certificates with an OIDC identity (SAN + Fulcio's issuer and
// source-repository extensions), a Rekor-like log that records DSSE entries
// (signed entry timestamp over the canonical entry, RFC 6962 Merkle tree,
// signed checkpoint note), the matching trusted_root.json, and keyless
// bundles (sigstore bundle v0.3, certificate + tlog entry + DSSE envelope)
// exactly as `cosign sign --new-bundle-format` writes them.
// Certificates are DER built here from node:crypto keys (RFC 5280); the
// formats the verifier checks are in @sigstore/verify's tlog/ and key/.
// https://github.com/sigstore/fulcio/blob/main/docs/oid-info.md
// https://github.com/transparency-dev/formats/blob/main/log/README.md
import { createHash, createPublicKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from "node:crypto";
import { json } from "@sigstore/core";
import type { Descriptor, Target } from "../../registry/index.js";
import { FULCIO_OID, IN_TOTO_PAYLOAD_TYPE, storeSignatureBundle } from "../../signing/index.js";
import { signingStatement } from "../../signing/statement.js";

// --- DER ---------------------------------------------------------------

function tlv(tag: number, content: Buffer): Buffer {
  const n = content.length;
  const len = n < 0x80 ? Buffer.from([n]) : n < 0x100 ? Buffer.from([0x81, n]) : Buffer.from([0x82, n >> 8, n & 0xff]);
  return Buffer.concat([Buffer.from([tag]), len, content]);
}
const seq = (...parts: Buffer[]) => tlv(0x30, Buffer.concat(parts));
const set = (...parts: Buffer[]) => tlv(0x31, Buffer.concat(parts));
const octets = (b: Buffer) => tlv(0x04, b);
const utf8 = (s: string) => tlv(0x0c, Buffer.from(s, "utf8"));
const bool = (v: boolean) => tlv(0x01, Buffer.from([v ? 0xff : 0]));
const bits = (b: Buffer, unused = 0) => tlv(0x03, Buffer.concat([Buffer.from([unused]), b]));
function integer(value: Buffer | number): Buffer {
  let b = typeof value === "number" ? Buffer.from([value]) : value;
  if (b[0]! & 0x80) b = Buffer.concat([Buffer.from([0]), b]);
  return tlv(0x02, b);
}
function oid(text: string): Buffer {
  const [a, b, ...rest] = text.split(".").map(Number);
  const out = [a! * 40 + b!];
  for (const n of rest) {
    const chunk = [n & 0x7f];
    for (let v = n >> 7; v > 0; v >>= 7) chunk.unshift((v & 0x7f) | 0x80);
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}
function time(d: Date): Buffer {
  const iso = d.toISOString().replace(/[-:T]/g, "").slice(0, 14);
  // UTCTime until 2049, GeneralizedTime after (RFC 5280 4.1.2.5).
  return d.getUTCFullYear() < 2050 ? tlv(0x17, Buffer.from(`${iso.slice(2)}Z`)) : tlv(0x18, Buffer.from(`${iso}Z`));
}
const name = (cn: string) => seq(set(seq(oid("2.5.4.10"), utf8("aegis-test"))), set(seq(oid("2.5.4.3"), utf8(cn))));
const extension = (id: string, critical: boolean, value: Buffer) => seq(oid(id), ...(critical ? [bool(true)] : []), octets(value));
const spki = (key: KeyObject) => createPublicKey(key).export({ type: "spki", format: "der" });
/** The key identifier: SHA-1 of the subjectPublicKey bits (RFC 5280 4.2.1.2, method 1). */
const keyId = (key: KeyObject) => createHash("sha1").update(spki(key).subarray(-65)).digest();

interface CertificateSpec {
  subject: Buffer;
  publicKey: KeyObject;
  notBefore: Date;
  notAfter: Date;
  extensions: Buffer[];
}

function certificate(spec: CertificateSpec, issuer: Buffer, issuerKey: KeyObject): Buffer {
  const algorithm = seq(oid("1.2.840.10045.4.3.2")); // ecdsa-with-SHA256
  const tbs = seq(
    tlv(0xa0, integer(2)),
    integer(randomBytes(16)),
    algorithm,
    issuer,
    seq(time(spec.notBefore), time(spec.notAfter)),
    spec.subject,
    spki(spec.publicKey),
    tlv(0xa3, seq(...spec.extensions)),
  );
  return seq(tbs, algorithm, bits(sign("sha256", tbs, issuerKey)));
}

// --- Fulcio ------------------------------------------------------------

export interface Identity {
  /** The OIDC issuer (Fulcio's issuer extension). */
  issuer: string;
  /** The SAN: a URI (CI workflows) or an email address. */
  subject: string;
  repository?: string;
  ref?: string;
}

export class TestFulcio {
  readonly key = generateKeyPairSync("ec", { namedCurve: "prime256v1" }).privateKey;
  readonly cert: Buffer;

  constructor(readonly commonName = "aegis test fulcio", validity = { notBefore: new Date("2020-01-01T00:00:00Z"), notAfter: new Date("2040-01-01T00:00:00Z") }) {
    const subject = name(commonName);
    this.cert = certificate(
      {
        subject,
        publicKey: this.key,
        ...validity,
        extensions: [
          extension("2.5.29.15", true, bits(Buffer.from([0x06]), 1)), // keyCertSign, cRLSign
          extension("2.5.29.19", true, seq(bool(true), integer(0))),
          extension("2.5.29.14", false, octets(keyId(this.key))),
        ],
      },
      subject,
      this.key,
    );
  }

  /** A code-signing leaf for `identity`, valid from `notBefore` for `minutes` (Fulcio gives 10). */
  issue(publicKey: KeyObject, identity: Identity, notBefore: Date, minutes = 10): Buffer {
    const san = identity.subject.includes("@") && !identity.subject.includes("://") ? tlv(0x81, Buffer.from(identity.subject)) : tlv(0x86, Buffer.from(identity.subject));
    const extensions = [
      extension("2.5.29.15", true, bits(Buffer.from([0x80]), 7)), // digitalSignature
      extension("2.5.29.37", false, seq(oid("1.3.6.1.5.5.7.3.3"))), // codeSigning
      extension("2.5.29.35", false, seq(tlv(0x80, keyId(this.key)))),
      extension("2.5.29.17", true, seq(san)),
      extension(FULCIO_OID.IssuerV1, false, Buffer.from(identity.issuer)),
      extension(FULCIO_OID.IssuerV2, false, utf8(identity.issuer)),
      ...(identity.repository ? [extension(FULCIO_OID.SourceRepositoryUri, false, utf8(identity.repository))] : []),
      ...(identity.ref ? [extension(FULCIO_OID.SourceRepositoryRef, false, utf8(identity.ref))] : []),
    ];
    return certificate({ subject: seq(), publicKey, notBefore, notAfter: new Date(notBefore.getTime() + minutes * 60_000), extensions }, name(this.commonName), this.key);
  }
}

// --- Rekor -------------------------------------------------------------

const leafHash = (leaf: Buffer) => createHash("sha256").update(Buffer.from([0])).update(leaf).digest();
const nodeHash = (l: Buffer, r: Buffer) => createHash("sha256").update(Buffer.from([1])).update(l).update(r).digest();
const split = (n: number) => 2 ** Math.floor(Math.log2(n - 1));
function treeHash(leaves: Buffer[]): Buffer {
  if (leaves.length === 1) return leafHash(leaves[0]!);
  const k = split(leaves.length);
  return nodeHash(treeHash(leaves.slice(0, k)), treeHash(leaves.slice(k)));
}
/** RFC 6962 2.1.1 PATH(m, D[n]), lowest level first. */
function auditPath(m: number, leaves: Buffer[]): Buffer[] {
  if (leaves.length <= 1) return [];
  const k = split(leaves.length);
  return m < k ? [...auditPath(m, leaves.slice(0, k)), treeHash(leaves.slice(k))] : [...auditPath(m - k, leaves.slice(k)), treeHash(leaves.slice(0, k))];
}

export class TestRekor {
  readonly key = generateKeyPairSync("ec", { namedCurve: "prime256v1" }).privateKey;
  readonly logId: Buffer;
  readonly origin = "rekor.aegis.test - 1";
  readonly baseUrl = "https://rekor.aegis.test";
  private readonly leaves: Buffer[] = [];

  constructor() {
    this.logId = createHash("sha256").update(spki(this.key)).digest();
    // Entries before ours, so the inclusion proof has hashes to check.
    for (let i = 0; i < 5; i++) this.leaves.push(randomBytes(32));
  }

  /** Records a DSSE entry and returns its bundle form (inclusion promise and proof). */
  record(body: Buffer, integratedTime: Date) {
    const index = this.leaves.length;
    this.leaves.push(body);
    const seconds = Math.floor(integratedTime.getTime() / 1000);
    const promise = json.canonicalize({ body: body.toString("base64"), integratedTime: seconds, logIndex: index, logID: this.logId.toString("hex") });
    const root = treeHash(this.leaves);
    const note = `${this.origin}\n${this.leaves.length}\n${root.toString("base64")}\n`;
    const noteSig = Buffer.concat([this.logId.subarray(0, 4), sign("sha256", Buffer.from(note), this.key)]);
    return {
      logIndex: String(index),
      logId: { keyId: this.logId.toString("base64") },
      kindVersion: { kind: "dsse", version: "0.0.1" },
      integratedTime: String(seconds),
      inclusionPromise: { signedEntryTimestamp: sign("sha256", Buffer.from(promise), this.key).toString("base64") },
      inclusionProof: {
        logIndex: String(index),
        rootHash: root.toString("base64"),
        treeSize: String(this.leaves.length),
        hashes: auditPath(index, this.leaves).map((h) => h.toString("base64")),
        checkpoint: { envelope: `${note}\n\u2014 rekor.aegis.test ${noteSig.toString("base64")}\n` },
      },
      canonicalizedBody: body.toString("base64"),
    };
  }
}

// --- trusted root and bundles ------------------------------------------

export interface TrustedRootOptions {
  fulcio?: TestFulcio[];
  rekor?: TestRekor[];
  /** CT logs listed (their SCTs are then required). */
  ctlogs?: TestRekor[];
}

const TIME_ZERO = "2020-01-01T00:00:00Z";

/** A trusted_root.json (protobuf JSON, as `cosign trusted-root create` writes) for these CAs and logs. */
export function trustedRoot(options: TrustedRootOptions): Record<string, unknown> {
  const log = (r: TestRekor) => ({
    baseUrl: r.baseUrl,
    hashAlgorithm: "SHA2_256",
    publicKey: { rawBytes: spki(r.key).toString("base64"), keyDetails: "PKIX_ECDSA_P256_SHA_256", validFor: { start: TIME_ZERO } },
    logId: { keyId: r.logId.toString("base64") },
  });
  return {
    mediaType: "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
    tlogs: (options.rekor ?? []).map(log),
    certificateAuthorities: (options.fulcio ?? []).map((f) => ({
      subject: { organization: "aegis-test", commonName: f.commonName },
      uri: "https://fulcio.aegis.test",
      certChain: { certificates: [{ rawBytes: f.cert.toString("base64") }] },
      validFor: { start: TIME_ZERO },
    })),
    ctlogs: (options.ctlogs ?? []).map(log),
    timestampAuthorities: [],
  };
}

export interface KeylessOptions {
  fulcio: TestFulcio;
  rekor: TestRekor;
  identity: Identity;
  /** When the certificate was issued; default now. */
  issuedAt?: Date;
  /** When the log integrated the entry; default a minute after issuance. */
  loggedAt?: Date;
  /** Changes the bundle before it is stored (tampering tests). */
  tamper?: (bundle: KeylessBundleJson) => void;
}

export type KeylessBundleJson = {
  mediaType: string;
  verificationMaterial: { certificate: { rawBytes: string }; tlogEntries: ReturnType<TestRekor["record"]>[] };
  dsseEnvelope: { payload: string; payloadType: string; signatures: { sig: string; keyid: string }[] };
};

/** DSSE pre-authentication encoding. https://github.com/secure-systems-lab/dsse/blob/master/protocol.md */
function pae(type: string, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`DSSEv1 ${Buffer.byteLength(type)} ${type} ${body.length} `), body]);
}

/** A keyless sigstore bundle over `statement`: a fresh key, a certificate for `identity`, a log entry. */
export function keylessBundle(statement: Buffer, options: KeylessOptions): KeylessBundleJson {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const issuedAt = options.issuedAt ?? new Date();
  const cert = options.fulcio.issue(privateKey, options.identity, issuedAt);
  const signature = sign("sha256", pae(IN_TOTO_PAYLOAD_TYPE, statement), privateKey);
  const envelope = { payload: statement.toString("base64"), payloadType: IN_TOTO_PAYLOAD_TYPE, signatures: [{ sig: signature.toString("base64"), keyid: "" }] };
  const pem = `-----BEGIN CERTIFICATE-----\n${cert.toString("base64").replace(/.{64}/g, "$&\n")}\n-----END CERTIFICATE-----\n`;
  // Rekor's dsse v0.0.1 entry. https://github.com/sigstore/rekor/blob/main/pkg/types/dsse/v0.0.1/dsse_v0_0_1_schema.json
  const body = Buffer.from(
    json.canonicalize({
      apiVersion: "0.0.1",
      kind: "dsse",
      spec: {
        envelopeHash: { algorithm: "sha256", value: createHash("sha256").update(JSON.stringify(envelope)).digest("hex") },
        payloadHash: { algorithm: "sha256", value: createHash("sha256").update(statement).digest("hex") },
        signatures: [{ signature: signature.toString("base64"), verifier: Buffer.from(pem).toString("base64") }],
      },
    }),
  );
  const entry = options.rekor.record(body, options.loggedAt ?? new Date(issuedAt.getTime() + 60_000));
  const bundle: KeylessBundleJson = {
    mediaType: "application/vnd.dev.sigstore.bundle.v0.3+json",
    verificationMaterial: { certificate: { rawBytes: cert.toString("base64") }, tlogEntries: [entry] },
    dsseEnvelope: envelope,
  };
  options.tamper?.(bundle);
  return bundle;
}

/** Signs `subject` keylessly and stores the bundle as cosign does (an OCI referrer). */
export async function signKeyless(target: Target, subject: Descriptor, options: KeylessOptions): Promise<Descriptor> {
  const bundle = keylessBundle(signingStatement(subject.digest, target.name), options);
  return (await storeSignatureBundle(target, subject, Buffer.from(JSON.stringify(bundle)))).referrer;
}
