// Plain HTTP calls to an assigner, as the seed's agent and an attacker make
// them: no client library between the test and the wire.
import { generateKeyPairSync, sign, type KeyObject } from "node:crypto";
import { once } from "node:events";
import { connect, type Socket } from "node:net";
import { sealTelemetry, TELEMETRY_PAYLOAD_TYPE, type SignedTelemetry, type TelemetryMessage } from "../../assigner/api/index.js";

export interface HttpAnswer {
  status: number;
  headers: Headers;
  bytes: Buffer;
  json: Record<string, unknown> & { error?: string; code?: string };
}

export interface HttpOptions {
  token?: string;
  body?: unknown;
  raw?: string;
  headers?: Record<string, string>;
}

export async function http(base: string, method: string, path: string, options: HttpOptions = {}): Promise<HttpAnswer> {
  const res = await fetch(new URL(path, base), {
    method,
    headers: {
      ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
      ...(options.body !== undefined || options.raw !== undefined ? { "content-type": "application/json" } : {}),
      ...options.headers,
    },
    ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : options.raw !== undefined ? { body: options.raw } : {}),
  });
  const bytes = Buffer.from(await res.arrayBuffer());
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString("utf8"));
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, bytes, json: (json ?? {}) as HttpAnswer["json"] };
}

export interface AgentKeys {
  publicKey: KeyObject;
  privateKey: KeyObject;
}

/** base64 of the raw 32-byte Ed25519 public key, as /agents/register/init takes it. */
export function rawPublicKey(keys: AgentKeys): string {
  return Buffer.from(keys.publicKey.export({ format: "jwk" }).x!, "base64url").toString("base64");
}

/** /agents/register/init alone: the registration id and the nonce, or the error answer. */
export async function beginRegistration(base: string, hostId: string, keys: AgentKeys, extra: Record<string, unknown> = {}) {
  const init = await http(base, "POST", "/agents/register/init", { body: { host_id: hostId, public_key: rawPublicKey(keys), ...extra } });
  return {
    answer: init,
    complete: () =>
      http(base, "POST", "/agents/register/complete", {
        body: { registration_id: init.json.registration_id, signature: sign(null, Buffer.from(init.json.nonce as string, "base64"), keys.privateKey).toString("base64") },
      }),
  };
}

/** The whole registration; throws with the assigner's answer when a step fails. */
export async function registerAgent(base: string, hostId: string, keys: AgentKeys = generateKeyPairSync("ed25519")): Promise<{ token: string; uid: string }> {
  const started = await beginRegistration(base, hostId, keys, { hostname: `${hostId}.example`, kernel: "6.1.0", labels: { role: "web" } });
  if (started.answer.status !== 200) throw new Error(`register/init for ${hostId}: ${started.answer.status} ${JSON.stringify(started.answer.json)}`);
  const complete = await started.complete();
  if (complete.status !== 200) throw new Error(`register/complete for ${hostId}: ${complete.status} ${JSON.stringify(complete.json)}`);
  return { token: complete.json.token as string, uid: complete.json.agent_uid as string };
}

let lastSeq = 0;

/** A telemetry payload for `hostId` (an attached receipt unless `fields` say otherwise), with a fresh seq and the current time. */
export function telemetry(hostId: string, artifactId: string, fields: Partial<TelemetryMessage> = {}): TelemetryMessage {
  lastSeq = Math.max(lastSeq + 1, Date.now() * 1000);
  const event = fields.event ?? "attached";
  return {
    type: TELEMETRY_PAYLOAD_TYPE,
    host_id: hostId,
    artifact_id: artifactId,
    event,
    ...(event === "attached" ? { counters: { rule0: 7 }, receipt: { program_id: 42, interfaces: [{ iface: "eth0", direction: "egress", pref: 4660 }], since: "2026-01-01T00:00:00.000Z" } } : {}),
    time: new Date().toISOString(),
    seq: lastSeq,
    ...fields,
  };
}

/** The message signed with `keys` (the agent's, or anyone's), as agents send it. */
export function signed(message: TelemetryMessage, keys: AgentKeys): SignedTelemetry {
  return sealTelemetry(message, keys.privateKey);
}

export interface RawConnection {
  socket: Socket;
  /** Everything the server sent so far, as text. */
  received(): string;
  /** Bytes this side has written. */
  written(): number;
  /** Resolves when the server closes (or resets) the connection. */
  closed: Promise<void>;
  /** Writes, waiting for the socket to drain; false once the connection is gone. */
  write(bytes: Buffer | string): Promise<boolean>;
}

/** A plain TCP connection to an assigner, for what no HTTP client sends: half a request, a body at a trickle. */
export async function rawConnection(base: string): Promise<RawConnection> {
  const url = new URL(base);
  const socket = connect({ host: url.hostname, port: Number(url.port) });
  await once(socket, "connect");
  let text = "";
  let written = 0;
  let gone = false;
  socket.setEncoding("latin1");
  socket.on("data", (chunk: string) => (text += chunk));
  const closed = new Promise<void>((resolve) => {
    socket.once("close", () => {
      gone = true;
      resolve();
    });
    // A reset while writing is the server closing: the close event follows.
    socket.on("error", () => undefined);
  });
  return {
    socket,
    received: () => text,
    written: () => written,
    closed,
    async write(bytes) {
      if (gone || socket.destroyed) return false;
      written += typeof bytes === "string" ? Buffer.byteLength(bytes) : bytes.length;
      // Not events.once: it rejects on the socket's error, which is the server closing.
      if (!socket.write(bytes)) await new Promise<void>((resolve) => {
        socket.once("drain", resolve);
        void closed.then(resolve);
      });
      return !gone;
    },
  };
}
