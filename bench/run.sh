#!/usr/bin/env bash
# Run the benchmarks named as arguments (default: all); append their RESULT lines (with date
# and commit) to bench/results.log.
set -euo pipefail
cd "$(dirname "$0")/.."
APS=${APS:-.venv/bin/aps}
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(risk oracle archive live pipeline)
for name in "${names[@]}"; do
  echo "== aps bench $name"
  "$APS" bench "$name" | tee "/tmp/aps-bench-$name.out"
  result=$(grep '^RESULT' "/tmp/aps-bench-$name.out" | tail -n 1 || true)
  echo "$(date -u +%FT%TZ) $commit $name $result" >> bench/results.log
done
