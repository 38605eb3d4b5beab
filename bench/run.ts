// `npm run bench -- <name>` runs one benchmark, `npm run bench` runs all.
// Each bench/<name>.ts default-exports a function returning a BenchResult.
import { printTable, writeResult, type BenchResult } from "./report.js";

const ALL = ["cli", "netfilter", "pull", "datapath", "assigner", "fleet-reads", "propagation"];

// The aegis processes the benches start (servers, agents, set-up steps) keep no compile cache in the
// home directory (cli/compile-cache.ts); the cli bench gives the commands it times one of their own.
process.env.AEGIS_COMPILE_CACHE ??= "off";

const names = process.argv.slice(2);
for (const name of names.length > 0 ? names : ALL) {
  if (!ALL.includes(name)) {
    console.error(`unknown benchmark "${name}"; known: ${ALL.join(", ")}`);
    process.exit(2);
  }
  const bench = (await import(`./${name}.js`)) as { default: () => Promise<BenchResult> };
  console.log(`# ${name}`);
  const result = await bench.default();
  printTable(result.rows);
  if (result.conditions) console.log(result.conditions);
  for (const { ratio, ratioOf } of [result, ...(result.headlines ?? [])]) console.log(`ratio (${ratioOf}): ${ratio.toFixed(3)}`);
  console.log(`wrote ${await writeResult(result)}\n`);
}
