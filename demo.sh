#!/usr/bin/env bash
# The main job on embedded defaults (no registry server, no Redis, no NATS):
# build the example policies into reproducible bundles, sign and push them as
# OCI artifacts into a local OCI image layout, mirror one with its signature
# to an "air-gapped" layout, verify and pull it — the digest never changes —
# then serve it from the assigner to a host that registers and polls as the
# seed's agent does. It ends with the real thing: as root where BPF loads, an
# `aegis agent run` enforces a signed policy on a veth into a namespace of the
# demo's own (ping fails, the drop counter rises, `aegis status` shows the host
# attached), then unassigning lets ping through; elsewhere the agent runs with
# --dry-run and says that nothing is enforced. Nothing is left running or attached.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh

aegis() { node dist/cli/aegis.cjs "$@"; }
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
aegis keygen -o "$out/ci" --allow-in-repo   # .aegis/ is git-ignored

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
node dist/cli/aegis.cjs assigner serve --port "$port" --data-dir "$out/assigner" --trust "$out/ci.pub" --enroll-secret demo --log-level warn &
assigner_pid=$!
trap 'kill $assigner_pid 2>/dev/null' EXIT
until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.2; done
export AEGIS_ASSIGNER_URL="http://127.0.0.1:$port" AEGIS_ADMIN_TOKEN="$(cat "$out/assigner/admin-token")"
aegis artifact add "oci:$out/airgap@$digest" >/dev/null
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

# ---------------------------------------------------------------------------
# The real thing: `aegis agent run` enforcing a signed policy on a veth whose
# near end is in this namespace and whose peer is in a namespace of its own.
# Only the demo's own addresses (10.123.0.1 and .2, inside that pair) get traffic.
near=aegdemo$$ far=aegpeer$$ ns=aegis-demo-$$
near_ip=10.123.0.1 far_ip=10.123.0.2
pin_root=/sys/fs/bpf/aegis-demo-$$
agent_pid=""
cleanup() {
  # Deleting the veth removes the agent's clsact filters; then nothing holds the pins.
  for pid in $agent_pid $assigner_pid; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip link del "$near" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$pin_root" 2>/dev/null || true
}
trap cleanup EXIT
# Runs a check until it passes, at most $1 seconds; the demo fails (with its log) rather than hang.
wait_for() {
  local limit=$1; shift
  for _ in $(seq $((limit * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "demo: gave up after ${limit}s waiting for: $*" >&2
  tail -n 20 "$out/agent.log" >&2 2>/dev/null || true
  exit 1
}
status_is() { aegis status "$peer_digest" | grep -Eq "^demo-host +(yes|no) +$1 "; }
host_listed() { aegis hosts | grep -q '^demo-host'; }
counters() { node --input-type=module -e 'const { BpftoolDatapath } = await import(process.cwd() + "/dist/ebpf/index.js"); console.log((await new BpftoolDatapath({ pinRoot: process.argv[1] }).counters(process.argv[2])).join(" "))' "$pin_root" "$1"; }
pings() { ping -c1 -W1 -I "$near" "$far_ip" >/dev/null 2>&1; }

enforce=no why=""
if [ "$(id -u)" != 0 ]; then why="not root"
elif ! mountpoint -q /sys/fs/bpf; then why="no bpffs at /sys/fs/bpf"
elif ip -4 addr show | grep -q "inet 10\.123\.0\."; then why="10.123.0.0/24 is already in use on this host"
elif ! command -v bpftool >/dev/null || ! command -v tc >/dev/null; then why="bpftool or tc missing"
elif ! ip netns add "$ns" 2>/dev/null; then why="cannot create a network namespace"
else
  # A real load of the pulled program is the only honest test of "BPF loads here".
  mkdir -p "$pin_root"
  if bpftool prog loadall "$out/host/program.o" "$pin_root/probe" >/dev/null 2>&1; then enforce=yes; else why="the kernel refused to load the program"; fi
  rm -rf "$pin_root/probe"
fi

if [ "$enforce" = yes ]; then
  step "Two network namespaces' worth of link: $near ($near_ip, here) <-> $far ($far_ip, in netns $ns)"
  ip link add "$near" type veth peer name "$far" netns "$ns"
  ip addr add "$near_ip/24" dev "$near" && ip link set "$near" up
  ip -n "$ns" addr add "$far_ip/24" dev "$far" && ip -n "$ns" link set "$far" up && ip -n "$ns" link set lo up
  wait_for 30 pings
  echo "   ping $far_ip: passes"
else
  step "BPF cannot load here ($why): the agent runs with --dry-run, it fetches and verifies but NOTHING WILL BE ENFORCED"
fi

step "A policy for the demo's peer: no ICMP to $far_ip; built, signed, pushed, registered"
mkdir -p "$out/block-peer"
cat >"$out/block-peer/policy.yaml" <<EOF_POLICY
name: block-demo-peer
version: 1.0.0
description: no ping to the demo's peer namespace
program: aegis_net
attach: { hook: tc, direction: egress }
rules:
  - { action: drop, dst: $far_ip/32, protocol: icmp }
EOF_POLICY
aegis policy build "$out/block-peer" -o "$out/bundles/block-peer.tar.zst"
peer_digest=$(aegis push "$out/bundles/block-peer.tar.zst" "oci:$out/store:block-demo-peer" --sign-key "$out/ci.key")
aegis artifact add "oci:$out/store@$peer_digest" >/dev/null
echo "   $peer_digest"

step "Run the agent for host demo-host (log in $out/agent.log)"
agent_args=(agent run --host-id demo-host --enroll-secret demo --trust "$out/ci.pub" --state-dir "$out/agent" --poll-interval 2s --pin-root "$pin_root")
if [ "$enforce" = yes ]; then agent_args+=(--iface "$near"); else agent_args+=(--dry-run); fi
node dist/cli/aegis.cjs "${agent_args[@]}" >"$out/agent.log" 2>&1 &
agent_pid=$!
wait_for 30 host_listed
aegis hosts

step "Assign the policy to demo-host"
aegis assign "$peer_digest" demo-host
if [ "$enforce" = yes ]; then
  wait_for 30 status_is attached
else
  wait_for 30 grep -q "verified .*$peer_digest" "$out/agent.log"
fi
sed 's/^/   agent: /' "$out/agent.log" | grep -v '^   agent: *$'

if [ "$enforce" = yes ]; then
  step "Ping the peer: dropped at TC egress, and the rule's drop counter rises"
  echo "   drops before: $(counters "$peer_digest")"
  if pings; then echo "   ping $far_ip: PASSED (not enforced?)"; exit 1; fi
  ping -c3 -W1 -i0.2 -I "$near" "$far_ip" >/dev/null 2>&1 || true
  echo "   ping $far_ip: fails"
  echo "   drops after pinging: $(counters "$peer_digest")"
  step "aegis status: what the assigner heard from the host"
  aegis status "$peer_digest"

  step "Unassign: the agent detaches and unpins, ping passes again"
  aegis unassign "$peer_digest" demo-host
  wait_for 30 pings
  echo "   ping $far_ip: passes"
  wait_for 30 status_is detached
  aegis status "$peer_digest"
  if [ -z "$(ls "$pin_root" 2>/dev/null)" ]; then echo "   nothing pinned under $pin_root"; fi
else
  step "aegis status (dry run: the host verified the policy; NOTHING WAS ENFORCED)"
  aegis status "$peer_digest"
  aegis unassign "$peer_digest" demo-host
fi

step "Stop the agent (SIGTERM leaves whatever is attached in force; here nothing is) and the assigner; delete the link and namespace"
kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true; agent_pid=""
tail -n1 "$out/agent.log" | sed 's/^/   agent: /'
cleanup
trap - EXIT

printf '\nDone. Everything is under %s; run ./test.sh for the test suite.\n' "$out"
