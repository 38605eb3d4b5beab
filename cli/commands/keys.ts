// `aegis keygen`. The signing code loads when the command runs (cli/aegis.ts).
import type { Command } from "commander";
import { InputError } from "../../errors.js";
import { report, type OutputOptions } from "../output.js";

export function registerKeygen(program: Command): void {
  program
    .command("keygen")
    .description("create a signing key pair: <prefix>.key (PKCS#8 PEM, mode 0600) and <prefix>.pub (SPKI PEM)")
    .requiredOption("-o, --output <prefix>", "path prefix of the two files")
    .option("--ed25519", "an Ed25519 key instead of ECDSA P-256")
    .option("--encrypt", "encrypt the private key with the passphrase in AEGIS_KEY_PASSPHRASE")
    .option("--json", "print JSON for scripts")
    .action(async (options: OutputOptions & { output: string; ed25519?: boolean; encrypt?: boolean }) => {
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
