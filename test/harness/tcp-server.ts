// Starting real TCP servers (redis-server, nats-server) on free loopback
// ports, waiting until they accept connections, and restarting them on the
// same port and data directory; a nats-server whose permissions a test
// changes while it runs; a port that drops every connection, and one that
// takes connections and never answers.
import { writeFileSync } from "node:fs";
import { connect, createServer, type AddressInfo, type Socket } from "node:net";
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
  /** The running process, if any. */
  process(): ManagedProcess | undefined;
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
    process: () => proc,
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

export type NatsDenial = { publish?: string | string[]; subscribe?: string | string[] };

export interface StrictNats extends TcpServer {
  /** Denies its user `deny` from now on (nothing, given {}): a configuration reload, as an operator fixing permissions does, resolved once the server says it reloaded; or, while it is stopped, its configuration at the next start. */
  deny(deny: NatsDenial): Promise<void>;
}

/** How long a nats-server may take to reload its configuration. */
const RELOAD_TIMEOUT_MS = 10_000;

/**
 * A nats-server that denies what a client may publish or subscribe to:
 * Aegis does not authenticate to NATS, so a client without credentials is
 * its one user, with `deny` as its permissions.
 */
export async function startStrictNats(deny: NatsDenial): Promise<StrictNats> {
  let config = strictConfig(deny);
  // A restart (kill, start) keeps the permissions last set.
  const server = await startNats(() => config);
  return {
    ...server,
    async deny(next) {
      config = strictConfig(next);
      const proc = server.process();
      if (!proc) return; // applied at the next start
      writeFileSync(join(server.dataDir, "nats.conf"), config);
      let seen = "";
      const reloaded = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => done(new Error(`nats-server on ${server.host} did not reload within ${RELOAD_TIMEOUT_MS} ms: ${proc.output()}`)), RELOAD_TIMEOUT_MS);
        const watch = (chunk: Buffer) => {
          seen += chunk.toString("utf8");
          if (seen.includes("Reloaded server configuration")) done();
        };
        const done = (err?: Error) => {
          clearTimeout(timer);
          proc.child.stdout?.off("data", watch);
          proc.child.stderr?.off("data", watch);
          if (err) reject(err);
          else resolve();
        };
        proc.child.stdout?.on("data", watch);
        proc.child.stderr?.on("data", watch);
      });
      // nats-server reloads its configuration file on SIGHUP.
      proc.child.kill("SIGHUP");
      await reloaded;
    },
  };
}

function strictConfig(deny: NatsDenial): string {
  const permissions = Object.entries(deny).map(([operation, subjects]) => `${operation}: { deny: ${JSON.stringify([subjects].flat())} }`);
  return `authorization { users = [ { user: "aegis", password: "unused", permissions: { ${permissions.join(", ")} } } ] }\nno_auth_user: aegis\n`;
}

/** A real nats-server (no JetStream needed: core publish/subscribe); `config`, a configuration file's text (users, permissions), read at each start. */
export function startNats(config?: string | (() => string)): Promise<TcpServer> {
  return startTcpServer("nats", "nats-server", "nats-server", "nats", (port, dir) => {
    const listen = ["-a", "127.0.0.1", "-p", String(port)];
    if (config === undefined) return listen;
    writeFileSync(join(dir, "nats.conf"), typeof config === "string" ? config : config());
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

export interface SilentPort {
  /** 127.0.0.1:<port>, a registry host. */
  host: string;
  /** Connections taken so far. */
  dials(): number;
  /** Connections taken and still open. */
  open(): number;
  close(): Promise<void>;
}

/** A loopback port that takes each connection and never answers on it (a firewall that blackholes, a hung server), counting them. */
export async function startSilentPort(): Promise<SilentPort> {
  let dials = 0;
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    dials++;
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
    // Reads (and drops) what comes, so a client's close is seen.
    socket.resume();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    dials: () => dials,
    open: () => sockets.size,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
