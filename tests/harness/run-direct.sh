#!/usr/bin/env bash
# run-direct.sh [harness flags...]
# Builds the harness for every pinned asynq version, runs each against its
# own fresh redis-server on a free loopback port, and checks with
# compare.sh that all summaries pass and agree. Summaries and harness
# stderr go to bin/direct/. Needs redis-server, redis-cli and python3.
set -euo pipefail
cd "$(dirname "$0")"

versions=(v0.26.0 v0.25.1 v0.24.1)
out=bin/direct
redis_pid=""

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

stop_redis() {
	if [ -n "$redis_pid" ]; then
		kill "$redis_pid" 2>/dev/null || true
		wait "$redis_pid" 2>/dev/null || true
		redis_pid=""
	fi
}
trap stop_redis EXIT

# start_redis PORT: a throwaway server with no persistence, so every run
# starts from an empty database.
start_redis() {
	redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no \
		--logfile "$out/redis-$1.log" &
	redis_pid=$!
	for _ in $(seq 50); do
		redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "redis-server on port $1 did not come up" >&2
	return 1
}

./build.sh
mkdir -p "$out"
failed=0
for v in "${versions[@]}"; do
	port=$(free_port)
	start_redis "$port"
	start=$(date +%s)
	status=0
	"bin/harness-$v" -redis "127.0.0.1:$port" -quiet -out "$out/$v.json" "$@" \
		2>"$out/$v.err" || status=$?
	echo "asynq $v: exit $status in $(($(date +%s) - start))s" >&2
	[ "$status" -eq 0 ] || { failed=1; cat "$out/$v.err" >&2; }
	stop_redis
done

summaries=()
for v in "${versions[@]}"; do summaries+=("$out/$v.json"); done
./compare.sh "${summaries[@]}" || failed=1
[ "$failed" -eq 0 ] && echo "all asynq versions passed with identical summaries" >&2
exit "$failed"
