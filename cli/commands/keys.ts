// `aegis keygen`. The signing code loads when the command runs (cli/main.ts).
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import type { Command } from "commander";
import { InputError } from "../../errors.js";
import { report, type OutputOptions } from "../output.js";

/** The git work tree holding `path`, if any: the nearest parent directory with a `.git` (a directory, or a worktree's file). */
function gitWorkTree(path: string): string | undefined {
  // Bounded: a path has at most as many parents as it has components.
  for (let dir = dirname(resolve(path)), depth = 0; depth < 256; depth++) {
    if (existsSync(join(dir, ".git"))) return dir;
    const parent = dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
  return undefined;
}

export function registerKeygen(program: Command): void {
  program
    .command("keygen")
    .description("create a signing key pair: <prefix>.key (PKCS#8 PEM, mode 0600) and <prefix>.pub (SPKI PEM)")
    .requiredOption("-o, --output <prefix>", "path prefix of the two files")
    .option("--ed25519", "an Ed25519 key instead of ECDSA P-256")
    .option("--encrypt", "encrypt the private key with the passphrase in AEGIS_KEY_PASSPHRASE")
    .option("--allow-in-repo", "write the private key even inside a git work tree")
    .option("--json", "print JSON for scripts")
    .action(async (options: OutputOptions & { output: string; ed25519?: boolean; encrypt?: boolean; allowInRepo?: boolean }) => {
      // A private key in a work tree is one `git add .` away from being published.
      const repo = options.allowInRepo ? undefined : gitWorkTree(`${options.output}.key`);
      if (repo) {
        throw new InputError("INVALID_ARGUMENT", `${options.output}.key would be inside the git work tree ${repo}, where a private key is easily committed: write it elsewhere, or pass --allow-in-repo`);
      }
      const { generateKeyPair, keyHint, loadPublicKey, writeKeyPair } = await import("../../signing/index.js");
      const passphrase = process.env.AEGIS_KEY_PASSPHRASE;
      if (options.encrypt && !passphrase) throw new InputError("INVALID_ARGUMENT", "--encrypt needs the passphrase in AEGIS_KEY_PASSPHRASE");
      const algorithm = options.ed25519 ? "ed25519" : "ecdsa-p256";
      const paths = await writeKeyPair(options.output, generateKeyPair(algorithm, options.encrypt ? passphrase : undefined));
      const hint = keyHint(await loadPublicKey(paths.publicKeyPath));
      report(options, `wrote ${paths.privateKeyPath} and ${paths.publicKeyPath} (${algorithm}, key hint ${hint})`, {
        ...paths,
        algorithm,
        encrypted: Boolean(options.encrypt),
        hint,
      });
    });
}
