import { availableParallelism } from "node:os";
import { defineConfig } from "vitest/config";

// Test files start their own servers (registry, proxy, token server) in
// beforeAll on free loopback ports, so files can run in parallel.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/global-setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // One process per worker, so each harness 'exit' handler kills its own children.
    pool: "forks",
    fileParallelism: true,
    // vitest defaults to cores - 1 (a single worker on 2-core CI); tests mostly wait on I/O.
    maxWorkers: Math.max(2, availableParallelism() - 1),
    retry: 0,
  },
});
