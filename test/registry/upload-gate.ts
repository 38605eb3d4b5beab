// A pass-through proxy in front of a real registry that counts the upload
// bytes it has read from the client and can stop reading them (a registry
// that cannot keep up), so a test can see how much a client reads from its
// source ahead of what the registry has taken: its bytes in flight.
import { readFileSync } from "node:fs";
import { createServer, request, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";

export interface UploadGate {
  /** "127.0.0.1:PORT" */
  host: string;
  /** Body bytes of PUT/PATCH requests read from clients so far. */
  readonly received: number;
  /** True while reading is stopped (see holdAfter). */
  readonly holding: boolean;
  /** Stop reading upload bodies once `received` reaches `bytes`, until release(). */
  holdAfter(bytes: number): void;
  /**
   * Bytes the kernel holds on the connections to the gate: sent by a client
   * but not yet acknowledged (its send queue) plus received but not read by
   * the gate (its receive queue). Loopback receive buffers grow to
   * net.ipv4.tcp_rmem's maximum (32 MiB here) on their own, so what a client
   * holds itself is what it read from its source less `received` less this.
   */
  kernelQueued(): number;
  release(): void;
  stop(): Promise<void>;
}

export async function startUploadGate(upstreamUrl: string): Promise<UploadGate> {
  let received = 0;
  let holdAt = Infinity;
  let held: IncomingMessage[] = [];
  const server = createServer((req, res) => {
    // The Host header goes along unchanged, so the registry's upload Locations point back here.
    const upstream = request(new URL(req.url ?? "/", upstreamUrl), { method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on("error", () => res.destroy());
    req.on("data", (chunk: Buffer) => {
      received += chunk.byteLength;
      if (!upstream.write(chunk)) {
        req.pause();
        upstream.once("drain", () => (held.includes(req) ? undefined : req.resume()));
      }
      if (received >= holdAt && !held.includes(req)) {
        held.push(req);
        req.pause();
      }
    });
    req.on("end", () => upstream.end());
    req.on("error", () => upstream.destroy());
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  return {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    get received() {
      return received;
    },
    get holding() {
      return held.length > 0;
    },
    holdAfter(bytes) {
      holdAt = bytes;
    },
    kernelQueued() {
      return loopbackQueued((server.address() as AddressInfo).port);
    },
    release() {
      holdAt = Infinity;
      const waiting = held;
      held = [];
      for (const req of waiting) req.resume();
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((done) => server.close(() => done()));
    },
  };
}

/**
 * /proc/net/tcp's tx_queue of sockets connected to `port` and rx_queue of
 * those on it, summed (IPv4: the gate listens on 127.0.0.1).
 * https://www.kernel.org/doc/Documentation/networking/proc_net_tcp.txt
 */
function loopbackQueued(port: number): number {
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  let total = 0;
  for (const line of readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1)) {
    const [, local, remote, , queues] = line.trim().split(/\s+/);
    if (!local || !remote || !queues) continue;
    const [tx, rx] = queues.split(":").map((hex) => parseInt(hex, 16)) as [number, number];
    if (remote.endsWith(`:${hexPort}`)) total += tx;
    if (local.endsWith(`:${hexPort}`)) total += rx;
  }
  return total;
}
