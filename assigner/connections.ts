// A cap on the connections one client address may hold open
// (--max-connections-per-client), under the server's --max-connections: one
// client cannot take every slot with idle keep-alive connections and lock
// agents and operators out. Off by default: behind a load balancer or NAT,
// every connection comes from a few addresses (docs/operations.md).
import type { Server } from "node:http";
import type { Logger } from "./logging.js";
import { LogThrottle } from "./throttle.js";

export function capConnectionsPerClient(server: Server, max: number, logger: Logger): void {
  // One entry per address with a connection open: never more than --max-connections.
  const open = new Map<string, number>();
  const refusals = new LogThrottle();
  server.on("connection", (socket) => {
    const address = socket.remoteAddress ?? "unknown";
    const count = (open.get(address) ?? 0) + 1;
    if (count > max) {
      socket.destroy();
      const logged = refusals.take(address);
      if (logged) {
        const held = logged.held > 0 ? ` (${logged.held} more refused since the last line)` : "";
        logger.warn({ client: address, limit: max }, `a connection from ${address} was refused: it has ${max} open (--max-connections-per-client)${held}`);
      }
      return;
    }
    open.set(address, count);
    socket.once("close", () => {
      const left = (open.get(address) ?? 1) - 1;
      if (left > 0) open.set(address, left);
      else open.delete(address);
    });
  });
}
