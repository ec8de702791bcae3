#!/usr/bin/env bash
# Installs what building and testing asynq-guard needs on a Debian machine:
# redis-server, redis-tools (redis-cli, redis-benchmark) and haproxy (the
# L4 baseline of scripts/bench.sh), curl and python3 from apt, the rustfmt and clippy
# components, and the Go modules of the asynq harness and of the benchmark.
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v redis-cli >/dev/null && command -v redis-benchmark >/dev/null || need_apt+=(redis-tools)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
command -v curl >/dev/null || need_apt+=(curl)
command -v python3 >/dev/null || need_apt+=(python3) # scripts/demo.sh
scripts/apt-install.sh ${need_apt[@]+"${need_apt[@]}"}

for tool in cargo go; do
    command -v "$tool" >/dev/null || {
        echo "error: $tool is not installed (asynq-guard needs Rust and Go)" >&2
        exit 1
    }
done
if command -v rustup >/dev/null; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

echo "==> go mod download (asynq harness, every pinned asynq version)"
(
    cd tests/harness
    for modfile in go.mod go.v*.mod; do
        go mod download -modfile="$modfile"
    done
)
echo "==> go mod download (sdk/go/asynqguard)"
(cd sdk/go/asynqguard && go mod download)
echo "==> go mod download (scripts/bench)"
(cd scripts/bench && go mod download)
