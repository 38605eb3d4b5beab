#!/usr/bin/env bash
# Runs every test on a fresh machine: set-up, type check, lint, then vitest,
# whose harness starts the servers the tests need. Needs root (eBPF, netns).
set -euo pipefail
cd "$(dirname "$0")"
if [ "$(id -u)" != 0 ]; then
  echo "test.sh: run as root: the eBPF tests load programs and create network namespaces" >&2
  exit 1
fi
bash scripts/setup.sh
npm run --silent typecheck
npm run --silent lint
report=$(mktemp)
trap 'rm -f "$report"' EXIT
status=0
npx vitest run --reporter=default --reporter=json --outputFile="$report" "$@" || status=$?
# One plain closing line that any CI can read.
node -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed`);' "$report" || true
exit "$status"
