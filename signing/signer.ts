// A sigstore `Signer` holding a private key: no Fulcio, no network.
// https://github.com/sigstore/sigstore-js/blob/main/packages/sign/src/signer/signer.ts
import { createPublicKey, sign, type KeyObject } from "node:crypto";
import type { Signature, Signer } from "@sigstore/sign";
import { digestAlgorithm, keyHint } from "./keys.js";

export class KeySigner implements Signer {
  readonly hint: string;
  private readonly publicKeyPem: string;

  constructor(private readonly privateKey: KeyObject) {
    const publicKey = createPublicKey(privateKey);
    this.hint = keyHint(publicKey);
    this.publicKeyPem = publicKey.export({ type: "spki", format: "pem" }).toString();
  }

  async sign(data: Buffer): Promise<Signature> {
    // ECDSA signatures are ASN.1 DER, as sigstore and cosign write them.
    return {
      signature: sign(digestAlgorithm(this.privateKey), data, this.privateKey),
      key: { $case: "publicKey", publicKey: this.publicKeyPem, hint: this.hint },
    };
  }
}
