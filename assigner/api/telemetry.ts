// Signed telemetry (README "The agent", message format): an agent seals each
// TelemetryMessage with its registered Ed25519 key; the assigner opens it
// against the key registered for the host before it believes a word of it.
// The signature covers the exact bytes carried (base64 `payload`), so
// neither side re-serializes anything it signs or verifies.
import { createPublicKey, sign, verify, type KeyObject } from "node:crypto";
import { SignedTelemetry, TelemetryMessage } from "./schemas.js";

/** Signs `message` (its JSON text, as sent) with the agent's private key. */
export function sealTelemetry(message: TelemetryMessage, privateKey: KeyObject): SignedTelemetry {
  const payload = Buffer.from(JSON.stringify(message), "utf8");
  return { payload: payload.toString("base64"), signature: sign(null, payload, privateKey).toString("base64") };
}


export interface OpenOptions {
  /** The host the channel speaks for: the NATS subject's, or the agent token's. */
  hostId: string;
  /** The Ed25519 public key registered for that host: base64 of the raw 32 bytes. */
  publicKey: string;
  /** How far the message's time may be from `now`, in ms. */
  maxSkewMs: number;
  now?: number;
}

/** Why a message was not opened, for the assigner's log and counters. */
export type TelemetryRefusal = "signature" | "malformed" | "other-host" | "clock";

/**
 * The message, when the signature verifies over the payload's bytes with the
 * host's key, the payload is a TelemetryMessage about that host, and its time
 * is within maxSkewMs of now. Replays within that window are the store's to
 * refuse (by `seq`).
 */
export function openTelemetry(envelope: SignedTelemetry, options: OpenOptions): { ok: true; message: TelemetryMessage } | { ok: false; reason: TelemetryRefusal; why: string } {
  const payload = Buffer.from(envelope.payload, "base64");
  const signature = Buffer.from(envelope.signature, "base64");
  const key = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(options.publicKey, "base64").toString("base64url") }, format: "jwk" });
  if (signature.length !== 64 || !verify(null, payload, key, signature)) return { ok: false, reason: "signature", why: `signature does not verify with the key registered for host "${options.hostId}"` };
  let json: unknown;
  try {
    json = JSON.parse(payload.toString("utf8"));
  } catch {
    return { ok: false, reason: "malformed", why: "payload is not JSON" };
  }
  const parsed = TelemetryMessage.safeParse(json);
  if (!parsed.success) return { ok: false, reason: "malformed", why: `payload: ${parsed.error.issues[0]?.message ?? "not a telemetry message"}` };
  const message = parsed.data;
  if (message.host_id !== options.hostId) return { ok: false, reason: "other-host", why: `payload speaks for host "${message.host_id}", not "${options.hostId}"` };
  const skew = Math.abs(Date.parse(message.time) - (options.now ?? Date.now()));
  if (!(skew <= options.maxSkewMs)) return { ok: false, reason: "clock", why: `time ${message.time} is more than ${options.maxSkewMs} ms from the assigner's clock` };
  return { ok: true, message };
}
