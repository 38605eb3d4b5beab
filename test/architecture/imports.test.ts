// The architecture as a test (issue 7): no folder cycles, and the agent and
// the CLI reach the assigner only through its wire contract, assigner/api/.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { folderCycles, importEdges, type ImportEdge } from "./imports.js";

const FOLDERS = ["util", "policy", "registry", "bundle", "signing", "mirror", "ebpf", "assigner", "agent", "cli", "bench"] as const;
const root = process.cwd();

/** Imports of the assigner's server from agent/ or cli/. `aegis assigner serve` may load it on demand, nothing else. */
function serverImports(edges: readonly ImportEdge[]): string[] {
  return edges
    .filter((e) => /^(agent|cli)\//.test(e.from) && e.to.startsWith("assigner/") && !e.to.startsWith("assigner/api/"))
    .filter((e) => !(e.dynamic && e.from === "cli/commands/assigner.ts"))
    .map((e) => `${e.from} → ${e.to}${e.dynamic ? " (dynamic)" : ""}`);
}

describe("import boundaries", () => {
  const edges = importEdges(root, FOLDERS);

  it("reads the project's imports", () => {
    // Guards the checker itself: a regex that matched nothing would pass everything below.
    expect(edges.length, "imports found in the source tree").toBeGreaterThan(100);
    expect(edges.some((e) => e.from.startsWith("cli/") && e.to.startsWith("registry/")), "cli → registry is seen").toBe(true);
  });

  it("has no folder cycles", () => {
    expect(folderCycles(edges), "folder cycles (static imports)").toEqual([]);
  });

  it("keeps the assigner's server out of agent/ and cli/", () => {
    expect(serverImports(edges), "agent/cli files importing the assigner outside assigner/api/").toEqual([]);
  });

  it("imports nothing into the root files and policy/ but util/ and errors.ts", () => {
    const low = edges.filter((e) => /^(policy|util)\//.test(e.from) || !e.from.includes("/"));
    const outward = low.filter((e) => !/^(policy|util)\//.test(e.to) && e.to.includes("/"));
    expect(outward.map((e) => `${e.from} → ${e.to}`), "bottom layers importing upward").toEqual([]);
  });
});

describe("the checker fails on what it guards against", () => {
  const tree = mkdtempSync(join(tmpdir(), "aegis-imports-"));
  afterAll(() => rmSync(tree, { recursive: true, force: true }));
  const write = (file: string, text: string) => {
    mkdirSync(dirname(join(tree, file)), { recursive: true });
    writeFileSync(join(tree, file), text);
  };
  write("bundle/build.ts", 'import { compileProgram } from "../ebpf/compile.js";\n');
  write("ebpf/rules.ts", 'import type { Rule } from "../bundle/policy.js";\n');
  write("cli/commands/pull.ts", 'export { startAssigner } from "../../assigner/server.js";\n');
  write("cli/commands/assigner.ts", 'const { startAssigner } = await import("../../assigner/index.js");\nimport { AssignerClient } from "../../assigner/api/index.js";\n');
  write("agent/run.ts", 'const s = await import("../assigner/server.js");\n');
  const edges = importEdges(tree, FOLDERS);

  it("finds a folder cycle", () => {
    expect(folderCycles(edges)).toEqual(["bundle → ebpf → bundle"]);
  });

  it("finds server imports from cli/ and agent/, static or dynamic, but allows the serve command's", () => {
    expect(serverImports(edges).sort()).toEqual(["agent/run.ts → assigner/server.ts (dynamic)", "cli/commands/pull.ts → assigner/server.ts"]);
  });
});
