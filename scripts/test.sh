#!/usr/bin/env bash
# quorate's whole test suite, from a fresh clone: builds or reuses the real parts (control plane,
# ZooKeeper 3.9.5 and 3.8.6, the kazoo judge, the S3 server versitygw, helm and promtool) in
# $QUORATE_CACHE (default ~/.cache/quorate), then runs every tier: unit, property, simulation,
# real API server, real ZooKeeper, real S3 server.
#
# Needs: cargo, go, java + mvn, python3 (with venv). Knobs: PROPTEST_CASES (default 10000).
set -euo pipefail
cd "$(dirname "$0")/.."

export PROPTEST_CASES="${PROPTEST_CASES:-10000}"
started=$SECONDS
step() { printf '\n==> %s  [%ds]\n' "$1" "$((SECONDS - started))"; }

for tool in cargo go java mvn python3; do
  command -v "$tool" >/dev/null || { echo "quorate tests need $tool on PATH (see README: Requirements)" >&2; exit 1; }
done

# Tests build the operator with its named failpoints (the end-to-end tier SIGKILLs it inside a
# step); both cargo commands take the same features, so nothing is built twice.
features=(--features quorate/failpoints)

step "build (cargo, all targets, ${features[*]})"
cargo build --workspace --all-targets "${features[@]}"

step "prepare real parts (cached in ${QUORATE_CACHE:-$HOME/.cache/quorate})"
cargo run -q -p quorate-testbed --bin testbed -- prepare

step "tests (PROPTEST_CASES=$PROPTEST_CASES)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! cargo test --workspace --no-fail-fast "${features[@]}" 2>&1 | tee "$log"; then
  # Said again at the very end, where a log cut short keeps it: why each test failed.
  step "failed"
  grep -E -A12 "^[a-z0-9_]+ FAILED: |panicked at|^---- .* stdout ----" "$log" | cut -c1-1500 | tail -n 300
  exit 1
fi

step "done"
