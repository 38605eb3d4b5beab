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
npx vitest run "$@"
