#!/usr/bin/env bash
# Builds the asynqguard helper commands used by asynq-guard's integration
# tests:
#   bin/signed-enqueue  enqueue (signed or unsigned) tasks through asynq's Client
#   bin/verify-worker   asynq Server behind VerifyMiddleware, counting tasks
# Modules come from the Go module proxy; go.sum pins their hashes.
set -euo pipefail
cd "$(dirname "$0")"

mkdir -p bin
for cmd in signed-enqueue verify-worker; do
	echo "building $cmd" >&2
	go build -o "bin/$cmd" "./cmd/$cmd"
done
