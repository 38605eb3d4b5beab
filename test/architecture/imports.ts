// Reads the project's import graph from source text, folder by folder, so a
// test can hold the architecture of docs/architecture.md: folders never import
// each other in a circle, and what runs on a host (agent/, cli/) never loads
// the assigner's server. Text, not the TypeScript compiler: an import is a
// line in our own style (`import … from "…"`, `export … from "…"`, `import("…")`).
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";

export interface ImportEdge {
  /** The importing file, relative to the root ("cli/commands/pull.ts"). */
  from: string;
  /** The imported file, relative to the root ("assigner/api/index.ts"). */
  to: string;
  /** `import("…")`: loaded only when that code runs. */
  dynamic: boolean;
}

const STATIC = /^\s*(?:import|export)\s[^;]*?\sfrom\s+"(\.[^"]+)"/gm;
const SIDE_EFFECT = /^\s*import\s+"(\.[^"]+)"/gm;
const DYNAMIC = /\bimport\(\s*"(\.[^"]+)"\s*\)/g;

/** Every relative import between the .ts files below `root`, in the given top-level folders (and root files). */
export function importEdges(root: string, folders: readonly string[]): ImportEdge[] {
  const edges: ImportEdge[] = [];
  for (const file of sourceFiles(root, folders)) {
    const text = readFileSync(join(root, file), "utf8");
    const add = (spec: string, dynamic: boolean) => {
      const target = relative(root, resolve(root, dirname(file), spec)).replace(/\.js$/, ".ts");
      edges.push({ from: file, to: target.split(sep).join("/"), dynamic });
    };
    for (const m of text.matchAll(STATIC)) add(m[1]!, false);
    for (const m of text.matchAll(SIDE_EFFECT)) add(m[1]!, false);
    for (const m of text.matchAll(DYNAMIC)) add(m[1]!, true);
  }
  return edges;
}

function sourceFiles(root: string, folders: readonly string[]): string[] {
  const files = readdirSync(root).filter((name) => name.endsWith(".ts") && !name.endsWith(".config.ts"));
  for (const folder of folders) {
    const walk = (dir: string) => {
      let entries;
      try {
        entries = readdirSync(join(root, dir), { withFileTypes: true });
      } catch {
        return; // A folder that does not exist yet (agent/ before the agent).
      }
      for (const entry of entries) {
        const path = `${dir}/${entry.name}`;
        if (entry.isDirectory()) walk(path);
        else if (entry.name.endsWith(".ts") && !entry.name.endsWith(".test.ts")) files.push(path);
      }
    };
    walk(folder);
  }
  return files;
}

/** The top-level folder of a file ("." for a file at the root). */
export function folderOf(file: string): string {
  const slash = file.indexOf("/");
  return slash < 0 ? "." : file.slice(0, slash);
}

/** Folder cycles among the static imports, each as a path "a → b → a"; empty when there are none. */
export function folderCycles(edges: readonly ImportEdge[]): string[] {
  const next = new Map<string, Set<string>>();
  for (const edge of edges) {
    const [a, b] = [folderOf(edge.from), folderOf(edge.to)];
    if (a === b || edge.dynamic) continue;
    if (!next.has(a)) next.set(a, new Set());
    next.get(a)!.add(b);
  }
  const cycles: string[] = [];
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const visit = (node: string) => {
    state.set(node, "open");
    stack.push(node);
    for (const to of next.get(node) ?? []) {
      if (state.get(to) === "open") cycles.push([...stack.slice(stack.indexOf(to)), to].join(" → "));
      else if (!state.has(to)) visit(to);
    }
    stack.pop();
    state.set(node, "done");
  };
  for (const node of [...next.keys()].sort()) if (!state.has(node)) visit(node);
  return cycles;
}
