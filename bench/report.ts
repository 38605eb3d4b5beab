// Shared shape of every benchmark's result (README "Benchmarks"): a table
// printed for people and bench/results/<name>.json for tools.
import { mkdir, writeFile } from "node:fs/promises";

export type Row = Record<string, string | number>;

export interface BenchResult {
  name: string;
  rows: Row[];
  /** The headline comparison the issue names (ours / baseline, same run). */
  ratio: number;
  /** What the ratio compares, in words. */
  ratioOf: string;
  /** More headline comparisons, printed beside the first. */
  headlines?: { ratio: number; ratioOf: string }[];
  /** Under what conditions the commands ran, when that is not obvious; printed under the table. */
  conditions?: string;
  [extra: string]: unknown;
}

/** The middle value (the upper one of the two for an even count); NaN for none. */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

export function printTable(rows: Row[]): void {
  if (rows.length === 0) return;
  const columns = Object.keys(rows[0]!);
  const cell = (v: string | number | undefined) =>
    typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(3)) : (v ?? "");
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (values: string[]) => values.map((v, i) => v.padStart(widths[i]!)).join("  ");
  console.log(line(columns));
  for (const row of rows) console.log(line(columns.map((c) => cell(row[c]))));
}

export async function writeResult(result: BenchResult): Promise<string> {
  const dir = new URL("./results/", import.meta.url);
  await mkdir(dir, { recursive: true });
  const file = new URL(`${result.name}.json`, dir);
  await writeFile(file, JSON.stringify(result, null, 2) + "\n");
  return file.pathname;
}
