#!/usr/bin/env bash
# Builds the asynq harness once per pinned asynq version:
#   bin/harness-v0.26.0  from go.mod
#   bin/harness-v0.25.1  from go.v0.25.1.mod
#   bin/harness-v0.24.1  from go.v0.24.1.mod
# Modules come from the Go module proxy; go.sum files pin their hashes.
set -euo pipefail
cd "$(dirname "$0")"

mkdir -p bin
build() {
	local version=$1 modfile=$2
	echo "building harness with asynq $version" >&2
	go build -modfile="$modfile" -o "bin/harness-$version" .
}

build v0.26.0 go.mod
build v0.25.1 go.v0.25.1.mod
build v0.24.1 go.v0.24.1.mod
