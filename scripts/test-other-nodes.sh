#!/usr/bin/env bash
# Runs the test suite again on Node 22 and 24 (the project targets 20 first
# and must keep working on both). The Node builds come from the npm registry
# (node-linux-<arch> packages), cached under node_modules/.cache.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=$(node -p 'process.arch')
for major in 22 24; do
  dir="node_modules/.cache/aegis-node-$major"
  if [ ! -x "$dir/package/bin/node" ]; then
    mkdir -p "$dir"
    version=$(npm view "node-linux-$arch@$major" version | tail -n 1 | sed "s/.* '\(.*\)'/\1/")
    (cd "$dir" && npm pack --silent "node-linux-$arch@$version" >/dev/null && tar xzf node-linux-"$arch"-*.tgz)
  fi
  echo "== tests on $("$dir/package/bin/node" --version)"
  PATH="$PWD/$dir/package/bin:$PATH" npx vitest run --reporter=dot
done
