#!/usr/bin/env bash
# The main job: a real asynq producer and worker through asynq-guard in
# front of a real Redis. Starts a local redis-server unless REDIS_ADDR is
# set, builds and starts the proxy, runs the asynq harness (Client, a
# Server per queue, Scheduler, Inspector) through it with each component
# under its own identity and grants, then prints what was processed, an
# excerpt of the proxy's /metrics and one refusal.
#
#   REDIS_ADDR=host:port   use this Redis instead of starting one
#   REDIS_PASSWORD=…       that Redis's password (REDIS_USERNAME=… for an ACL
#                          user); only the proxy gets them
#   ASYNQ_VERSION=v0.26.0  asynq version of the harness (v0.24.1, v0.25.1, v0.26.0)
#   TASKS=2000             tasks the producer enqueues
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ASYNQ_VERSION=${ASYNQ_VERSION:-v0.26.0}
TASKS=${TASKS:-2000}

scripts/install-deps.sh

WORK=$(mktemp -d -t asynq-guard-demo.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# Prints N distinct free ports (default 1); all are held while picked, so
# none is handed out twice.
free_port() {
    python3 -c 'import socket,sys
held=[socket.socket() for _ in range(int(sys.argv[1]))]
for s in held: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in held))' "${1:-1}"
}
wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "error: nothing listens on port $1" >&2
    return 1
}

echo "==> building asynq-guard (release)"
cargo build --release --locked --quiet

echo "==> building the asynq harness at asynq $ASYNQ_VERSION"
modfile=go.mod
[ "$ASYNQ_VERSION" = v0.26.0 ] || modfile="go.$ASYNQ_VERSION.mod"
(cd tests/harness && go build -modfile="$modfile" -o "$WORK/harness" .)

if [ -z "${REDIS_ADDR:-}" ]; then
    port=$(free_port)
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK" --logfile "$WORK/redis.log" &
    PIDS+=($!)
    wait_port "$port"
    REDIS_ADDR="127.0.0.1:$port"
    echo "==> started redis-server on $REDIS_ADDR"
fi

read -r proxy_port admin_port <<<"$(free_port 2)"
# Every asynq component gets its own identity, granted only what it needs.
# The secrets are made up for this run; the configuration holds only their
# hashes, the harness gets them in a -logins file.
ROLES="producer scheduler dashboard operator worker-critical worker-default worker-low worker-periodic"
declare -A SECRETS
for role in $ROLES; do
    SECRETS[$role]=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
done
{
cat <<TOML
[[listener]]
name = "demo"
address = "127.0.0.1:$proxy_port"

[upstream]
address = "$REDIS_ADDR"
$( [ -n "${REDIS_PASSWORD:-}" ] && echo 'password_env = "REDIS_PASSWORD"' )
$( [ -n "${REDIS_USERNAME:-}" ] && echo "username = \"$REDIS_USERNAME\"" )

[admin]
address = "127.0.0.1:$admin_port"

TOML
for role in $ROLES; do
    hash=$(printf '%s' "${SECRETS[$role]}" | "$ROOT/target/release/asynq-guard" hash-secret)
    printf '[[identity]]\nname = "%s"\nsecret_sha256 = ["%s"]\n\n' "$role" "$hash"
done
cat <<'TOML'
# The producer enqueues the harness's task types to the three work queues.
[[grant]]
identity = "producer"
operations = ["enqueue"]
queues = ["critical", "default", "low"]
task_types = ["long", "plain", "scheduled", "unique", "unique_scheduled", "grouped",
              "grouped_unique", "custom_id", "retry_once", "retry_hold", "always_fail", "result"]

[[grant]]
identity = "scheduler"
operations = ["schedule", "enqueue"]
queues = ["periodic"]
task_types = ["periodic"]

[[grant]]
identity = "dashboard"
operations = ["inspect"]
queues = ["*"]

[[grant]]
identity = "operator"
operations = ["manage"]
queues = ["*"]

TOML
for q in critical default low periodic; do
    printf '[[grant]]\nidentity = "worker-%s"\noperations = ["consume"]\nqueues = ["%s"]\n\n' "$q" "$q"
    # The group aggregator enqueues the aggregated task into its queue.
    [ "$q" = periodic ] || printf '[[grant]]\nidentity = "worker-%s"\noperations = ["enqueue"]\nqueues = ["%s"]\ntask_types = ["aggregated"]\n\n' "$q" "$q"
done
# Every task is signed on its way into Redis and checked on its way out,
# under a key made for this run.
cat <<TOML
[integrity]
sign_with = "demo"

[[integrity.key]]
id = "demo"
file = "$WORK/signing.key"

[[integrity.queues]]
queues = ["*"]
mode = "add"
TOML
} > "$WORK/asynq-guard.toml"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/signing.key"
chmod 600 "$WORK/signing.key"
python3 - "$WORK/logins.json" $(for role in $ROLES; do echo "$role" "${SECRETS[$role]}"; done) <<'PY'
import json, sys
pairs = dict(zip(sys.argv[2::2], sys.argv[3::2]))
login = lambda n: {"username": n, "password": pairs[n]}
out = {r: login(r) for r in ("producer", "scheduler", "dashboard", "operator")}
out["workers"] = {q: login("worker-" + q) for q in ("critical", "default", "low", "periodic")}
json.dump(out, open(sys.argv[1], "w"))
PY
export REDIS_PASSWORD="${REDIS_PASSWORD:-}"
"$ROOT/target/release/asynq-guard" check "$WORK/asynq-guard.toml" >/dev/null
"$ROOT/target/release/asynq-guard" serve --config "$WORK/asynq-guard.toml" 2>"$WORK/proxy.log" &
PIDS+=($!)
wait_port "$proxy_port"
echo "==> asynq-guard listening on 127.0.0.1:$proxy_port, forwarding to $REDIS_ADDR"

echo "==> running asynq producer, a worker fleet per queue, scheduler, dashboard and operator"
echo "    through the proxy, each under its own identity ($TASKS tasks)"
if ! "$WORK/harness" -redis "127.0.0.1:$proxy_port" -logins "$WORK/logins.json" \
    -tasks "$TASKS" -out "$WORK/summary.json"; then
    echo "error: the asynq run through the proxy failed; proxy log:" >&2
    tail -n 20 "$WORK/proxy.log" >&2
    [ -f "$WORK/summary.json" ] && cat "$WORK/summary.json" >&2
    exit 1
fi

echo
echo "==> what was processed (asynq $ASYNQ_VERSION, through asynq-guard)"
python3 - "$WORK/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
inv = s.get("handler_invocations", {})
print(f"  tasks enqueued          {s['enqueued_total']} across {s['inspector_queues']} queues "
      f"(asynq's uniqueness turned away {s['duplicates_rejected']}/{s['duplicates_tried']} duplicates, as it should)")
print(f"  task ids handled        {s['handled_ids']}, handler runs {sum(inv.values())} "
      f"(grouped tasks are handled as their aggregated batch, so fewer ids than tasks)")
print(f"  retried then succeeded  {inv.get('retry_once', 0) // 2} tasks (2 runs each)")
print(f"  archived after retries  {sum(s['archived'].values())} (tasks made to fail on purpose: "
      f"the 'Retry exhausted' warnings above are theirs)")
print(f"  results read back       {s['results_verified']}")
print(f"  grouped into batches    {s['aggregated_tasks_in']} tasks in {sum(s['aggregated_batches'].values())} aggregated tasks")
print(f"  scheduler ran           {s['scheduler_ran']}, cancel via pub/sub {s['cancelled']}")
print(f"  all checks passed       {s['ok']}")
PY
echo "  (DEMO_VERBOSE=1 prints the harness's full JSON summary)"
[ -n "${DEMO_VERBOSE:-}" ] && cat "$WORK/summary.json"
echo
echo "==> /metrics excerpt (http://127.0.0.1:$admin_port/metrics)"
curl -fsS "http://127.0.0.1:$admin_port/metrics" \
    | grep -E '^asynq_guard_(client_connections_total|commands_total|auth_attempts_total|refusals_total|upstream_latency_seconds_(count|sum))' \
    | sort -t' ' -k2 -rn | head -n 15
echo "==> task signatures: every message signed going in, checked coming out"
curl -fsS "http://127.0.0.1:$admin_port/metrics" \
    | grep -E '^asynq_guard_integrity_(signed|failures|archived)_total' | sed 's/^/  /'
curl -fsS "http://127.0.0.1:$admin_port/metrics" | grep -q '^asynq_guard_integrity_failures_total' \
    || echo "  asynq_guard_integrity_failures_total: none (no task failed its check)"

echo
echo "==> the grants each identity had (the policy this run wrote and removes at exit)"
python3 - "$WORK/asynq-guard.toml" <<'PY'
import sys, tomllib
policy = tomllib.load(open(sys.argv[1], "rb"))
for g in policy.get("grant", []):
    types = f"  task types {', '.join(g['task_types'])}" if g.get("task_types") else ""
    print(f"  {g['identity']:<16} {'+'.join(g['operations']):<17} on {', '.join(g['queues'])}{types}")
PY

refuse() {
    "$WORK/harness" -redis "127.0.0.1:$proxy_port" -probe -probe-queue "$1" -probe-type "$2" \
        -username producer -password "${SECRETS[producer]}" \
        | python3 -c 'import json,sys; r=json.load(sys.stdin); print("  asynq returned:", r.get("error") or "no error (unexpected)"); sys.exit(0 if not r["ok"] else 1)'
}
echo
echo "==> what the grants refuse: the producer enqueuing to a queue it was not given"
refuse payments refund
echo "==> ... and a task type it was not given, to a queue it was"
refuse critical "admin:drop-everything"
curl -fsS "http://127.0.0.1:$admin_port/metrics" | grep -E '^asynq_guard_refusals_total' | sed 's/^/  /'
