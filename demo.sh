#!/usr/bin/env bash
# The main job on embedded defaults (no registry server, no Redis, no NATS):
# build the example policies into reproducible bundles, sign and push them as
# OCI artifacts into a local OCI image layout, mirror one with its signature
# to an "air-gapped" layout, verify and pull it — the digest never changes —
# then serve it from the assigner to a host that registers and polls as the
# seed's agent does.
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

step "Serve it: the assigner on embedded defaults (a store file, no Redis, no NATS)"
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
node dist/cli/aegis.js assigner serve --port "$port" --data-dir "$out/assigner" --trust "$out/ci.pub" --enroll-secret demo &
assigner_pid=$!
trap 'kill $assigner_pid 2>/dev/null' EXIT
until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.2; done
export AEGIS_ASSIGNER_URL="http://127.0.0.1:$port" AEGIS_ADMIN_TOKEN="$(cat "$out/assigner/admin-token")"
curl -sf -X POST "$AEGIS_ASSIGNER_URL/artifacts" -H "authorization: Bearer $AEGIS_ADMIN_TOKEN" \
  -H 'content-type: application/json' -d "{\"reference\":\"oci:$PWD/$out/airgap@$digest\"}" >/dev/null
aegis assign "$digest" web-01

step "Be the seed's agent for web-01: register (Ed25519), poll, download, check the checksum"
node --input-type=module - "$AEGIS_ASSIGNER_URL" <<'EOF_AGENT'
import { generateKeyPairSync, sign, createHash } from "node:crypto";
const base = process.argv[2];
const post = (path, body) => fetch(base + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) }).then((r) => r.json());
const { publicKey, privateKey } = generateKeyPairSync("ed25519");
const init = await post("/agents/register/init", { host_id: "web-01", enroll_secret: "demo", public_key: Buffer.from(publicKey.export({ format: "jwk" }).x, "base64url").toString("base64") });
const { token } = await post("/agents/register/complete", { registration_id: init.registration_id, signature: sign(null, Buffer.from(init.nonce, "base64"), privateKey).toString("base64") });
const auth = { authorization: `Bearer ${token}` };
const poll = await fetch(`${base}/artifacts/for-host/web-01`, { headers: auth });
const { artifacts, total } = await poll.json();
console.log(`GET /artifacts/for-host/web-01 → ${total} artifact(s), ETag ${poll.headers.get("etag")}`);
console.log(JSON.stringify(artifacts[0], null, 2));
const again = await fetch(`${base}/artifacts/for-host/web-01`, { headers: { ...auth, "if-none-match": poll.headers.get("etag") } });
console.log(`same poll with If-None-Match → ${again.status}`);
const binary = Buffer.from(await (await fetch(`${base}/artifacts/${artifacts[0].id}/binary`, { headers: auth })).arrayBuffer());
const checksum = `sha256-${createHash("sha256").update(binary).digest("hex")}`;
console.log(`binary: ${binary.length} bytes, ${checksum === artifacts[0].checksum ? "checksum matches" : "CHECKSUM MISMATCH"}`);
if (checksum !== artifacts[0].checksum) process.exit(1);
EOF_AGENT
aegis hosts

printf '\nDone. Everything is under %s; run ./test.sh for the test suite.\n' "$out"
