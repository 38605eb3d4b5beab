// Starting real TCP servers (redis-server, nats-server) on free loopback
// ports, waiting until they accept connections, and restarting them on the
// same port and data directory; and a port that drops every connection.
import { writeFileSync } from "node:fs";
import { connect, createServer, type AddressInfo } from "node:net";
import { join } from "node:path";
import { freePort } from "./ports.js";
import { makeTempDir, removeTempDir, requireBinary, spawnManaged, waitUntilReady, type ManagedProcess } from "./process.js";

export interface TcpServer {
  host: string;
  port: number;
  url: string;
  dataDir: string;
  /** Stops the process; the data directory stays until `stop`. */
  kill(): Promise<void>;
  /** Starts it again on the same port and data directory. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

const START_TIMEOUT_MS = 10_000;

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

async function startTcpServer(
  name: string,
  binary: string,
  debianPackage: string,
  scheme: string,
  args: (port: number, dataDir: string) => string[],
): Promise<TcpServer> {
  const file = requireBinary(binary, debianPackage);
  const port = await freePort();
  const dataDir = makeTempDir(`aegis-${name}-`);
  let proc: ManagedProcess | undefined;
  const server: TcpServer = {
    host: `127.0.0.1:${port}`,
    port,
    url: `${scheme}://127.0.0.1:${port}`,
    dataDir,
    async start() {
      proc = spawnManaged(file, args(port, dataDir));
      await waitUntilReady(proc, () => accepts(port), `${name} on 127.0.0.1:${port}`, START_TIMEOUT_MS);
    },
    async kill() {
      await proc?.stop();
      proc = undefined;
    },
    async stop() {
      await server.kill();
      await removeTempDir(dataDir);
    },
  };
  await server.start();
  return server;
}

/** A real redis-server with an append-only file, so a restart keeps the data. */
export function startRedis(): Promise<TcpServer> {
  return startTcpServer("redis", "redis-server", "redis-server", "redis", (port, dir) => [
    "--port", String(port), "--bind", "127.0.0.1", "--dir", dir,
    "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no", "--loglevel", "warning",
  ]);
}

/**
 * A nats-server that denies what a client may publish or subscribe to:
 * Aegis does not authenticate to NATS, so a client without credentials is
 * its one user, with `deny` as its permissions.
 */
export function startStrictNats(deny: { publish?: string; subscribe?: string }): Promise<TcpServer> {
  const permissions = Object.entries(deny).map(([operation, subject]) => `${operation}: { deny: [${JSON.stringify(subject)}] }`);
  return startNats(`authorization { users = [ { user: "aegis", password: "unused", permissions: { ${permissions.join(", ")} } } ] }\nno_auth_user: aegis\n`);
}

/** A real nats-server (no JetStream needed: core publish/subscribe); `config`, a configuration file's text (users, permissions). */
export function startNats(config?: string): Promise<TcpServer> {
  return startTcpServer("nats", "nats-server", "nats-server", "nats", (port, dir) => {
    const listen = ["-a", "127.0.0.1", "-p", String(port)];
    if (config === undefined) return listen;
    writeFileSync(join(dir, "nats.conf"), config);
    return [...listen, "-c", join(dir, "nats.conf")];
  });
}

export interface DroppingPort {
  /** nats://127.0.0.1:<port>. */
  url: string;
  /** Connections taken so far: each client's attempt to reach a server there. */
  dials(): number;
  close(): Promise<void>;
}

/** A loopback port that takes each connection and drops it at once, counting them: a server that is up and never answers. */
export async function startDroppingPort(): Promise<DroppingPort> {
  let dials = 0;
  const server = createServer((socket) => {
    dials++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `nats://127.0.0.1:${(server.address() as AddressInfo).port}`,
    dials: () => dials,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
