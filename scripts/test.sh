#!/usr/bin/env bash
# Runs every test of asynq-guard: formatting, lints, unit tests and the
# integration tests (a real redis-server, the real proxy binary, and real
# asynq programs at every pinned asynq version). Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "==> scripts/lint-deploy.sh (Dockerfiles, compose, Kubernetes, Grafana dashboard)"
scripts/lint-deploy.sh

echo "==> cargo fmt --check"
cargo fmt --check
echo "==> cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "==> go vet (asynq harness, every pinned version)"
(
    cd tests/harness
    test -z "$(gofmt -l .)" || { gofmt -l .; echo "gofmt: files above need formatting" >&2; exit 1; }
    for modfile in go.mod go.v*.mod; do
        go vet -modfile="$modfile" ./...
    done
)
echo "==> benchmark workloads (scripts/bench): gofmt, vet"
(
    cd scripts/bench
    test -z "$(gofmt -l .)" || { gofmt -l .; echo "gofmt: files above need formatting" >&2; exit 1; }
    go vet ./...
)
echo "==> Go signing package (sdk/go/asynqguard): gofmt, vet, tests against a real redis-server"
(
    cd sdk/go/asynqguard
    test -z "$(gofmt -l .)" || { gofmt -l .; echo "gofmt: files above need formatting" >&2; exit 1; }
    go vet ./...
    go test -count=1 ./...
)
echo "==> cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
