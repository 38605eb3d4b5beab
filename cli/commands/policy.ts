// `aegis policy build`. The bundle code loads when the command runs (cli/main.ts).
import type { Command } from "commander";
import { report, warn, type OutputOptions } from "../output.js";
import { duringStep } from "../progress.js";

export function registerPolicy(program: Command): void {
  const policy = program.command("policy").description("work with policy sources");
  policy
    .command("build")
    .description("validate a policy, compile its eBPF program and write the deterministic bundle (tar.zst)")
    .argument("<dir>", "policy directory holding policy.yaml or policy.yml (or the YAML file itself)")
    .requiredOption("-o, --output <file>", "bundle file to write")
    .option("--json", "print JSON for scripts")
    .action(async (dir: string, options: OutputOptions & { output: string }) => {
      const [{ buildBundle }, { sha256 }, { atomicWrite }] = await Promise.all([import("../../bundle/index.js"), import("../../registry/index.js"), import("../../util/index.js")]);
      const { policy: built, bytes, warnings } = await duringStep(`building ${dir}`, options, () => buildBundle(dir));
      warn(warnings);
      // A failed build or write leaves any old bundle intact.
      await atomicWrite(options.output, bytes);
      const checksum = sha256(bytes);
      report(options, `built ${built.name} ${built.version} → ${options.output} (${built.rules.length} rules, ${bytes.byteLength} bytes, ${checksum})`, {
        name: built.name,
        version: built.version,
        output: options.output,
        size: bytes.byteLength,
        digest: checksum,
        rules: built.rules.length,
        warnings,
      });
    });
}
