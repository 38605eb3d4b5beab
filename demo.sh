#!/usr/bin/env bash
# The main job on embedded defaults (no registry server, no Redis, no NATS):
# build the example policies into reproducible bundles, push them as OCI
# artifacts into a local OCI image layout, mirror one to an "air-gapped"
# layout, and pull it back out verified — the digest never changes.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh

aegis() { node dist/cli/aegis.js "$@"; }
out=.aegis/demo
rm -rf "$out" && mkdir -p "$out/bundles"
step() { printf '\n== %s\n' "$*"; }

step "Build each example policy twice: the bundles are byte-identical"
for dir in policies/*/; do
  name=$(basename "$dir")
  aegis policy build "$dir" -o "$out/bundles/$name.tar.zst"
  aegis policy build "$dir" -o "$out/bundles/$name.again.tar.zst" >/dev/null
  cmp "$out/bundles/$name.tar.zst" "$out/bundles/$name.again.tar.zst" && echo "   rebuilt: identical bytes"
done

step "Make a signing key (offline, ECDSA P-256)"
aegis keygen -o "$out/ci"

step "Push them as signed OCI artifacts into the local store oci:$out/store"
for dir in policies/*/; do
  name=$(basename "$dir")
  printf '%-28s %s\n' "$name" "$(aegis push "$out/bundles/$name.tar.zst" "oci:$out/store:$name" --sign-key "$out/ci.key")"
done

step "Inspect one"
aegis inspect "oci:$out/store:block-icmp-8888"

step "Mirror it, by digest and with its signature, into an air-gapped layout"
digest=$(aegis inspect "oci:$out/store:block-icmp-8888" --json | node -e 'process.stdin.on("data",d=>console.log(JSON.parse(d).descriptor.digest))')
aegis copy -r "oci:$out/store@$digest" "oci:$out/airgap:block-icmp-8888"

step "Verify the mirrored copy against the pinned public key"
aegis verify "oci:$out/airgap@$digest" --key "$out/ci.pub"

step "Pull it from the mirror: verified against the same digest, files extracted"
AEGIS_CACHE_DIR="$out/cache" aegis pull "oci:$out/airgap@$digest" -o "$out/host"
cat "$out/host/policy.json"
ls -l "$out/host"

printf '\nDone. Everything is under %s; run ./test.sh for the test suite.\n' "$out"
