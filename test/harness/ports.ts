import { createServer } from "node:net";
import type { AddressInfo } from "node:net";

/**
 * Asks the OS for a free loopback port (bind port 0, read it, close).
 * Another process may grab it before the caller binds it, so callers that
 * spawn servers retry on "address already in use".
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo;
      server.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}
