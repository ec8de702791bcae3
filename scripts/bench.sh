#!/usr/bin/env bash
# What asynq-guard costs, against direct Redis and against HAProxy in TCP
# mode (an L4 proxy), in one run:
#
#   scripts/bench.sh            full run: 5 repetitions (BENCH_REPS=N to change)
#   scripts/bench.sh --smoke    1 repetition, tiny sizes (tests/bench_smoke.rs)
#
# Starts a redis-server (with a password), HAProxy (mode tcp, one frontend,
# one backend) and the release build of asynq-guard (authentication, grants
# for the asynq producer and worker identities, a raw grant for
# redis-benchmark, a rate limit too high to refuse, task signing in `add`
# mode on the benchmark's queue), all on free ports of 127.0.0.1, and runs
# every workload against each of the three in turn, rotating the order in
# every repetition: redis-benchmark, the asynq workloads of scripts/bench
# (real asynq Client and Server), and idle connections for memory. Writes
# the figures and a markdown report to $BENCH_OUT (default
# $CARGO_TARGET_DIR/bench or target/bench) and prints the report.
#
# Installs what it needs (scripts/install-deps.sh: redis-server,
# redis-tools, haproxy from apt; Go modules).
set -euo pipefail
# A relative BENCH_OUT is taken from where the script was started.
case "${BENCH_OUT:-}" in
"" | /*) ;;
*) BENCH_OUT=$PWD/$BENCH_OUT ;;
esac
cd "$(dirname "$0")/.."
root=$PWD

smoke=0
case "${1:-}" in
"") ;;
--smoke) smoke=1 ;;
*)
    echo "usage: scripts/bench.sh [--smoke]" >&2
    exit 2
    ;;
esac

[[ ${BENCH_REPS:-5} =~ ^[1-9][0-9]*$ ]] || {
    echo "error: BENCH_REPS must be a whole number of repetitions, at least 1 (got '$BENCH_REPS')" >&2
    exit 2
}

scripts/install-deps.sh
haproxy_bin=$(command -v haproxy || echo /usr/sbin/haproxy)

# Sizes. Full: the sizes of issue 8. Smoke: enough to exercise every path.
if ((smoke)); then
    reps=1
    rb_1c=1000 rb_50c=2000 rb_p16=5000 rb_64k=200 rb_1000c=2000
    tasks=500 e2e_rate=100 e2e_for=2s
else
    reps=${BENCH_REPS:-5}
    rb_1c=20000 rb_50c=100000 rb_p16=400000 rb_64k=10000 rb_1000c=100000
    tasks=50000 e2e_rate=500 e2e_for=10s
fi

# File descriptors: 1,000 connections through a proxy take 2,000 of its
# descriptors. Each proxy holds two per idle connection, so the idle
# connections are capped by the hard limit.
ulimit -n "$(ulimit -Hn)"
fd_limit=$(ulimit -n)
idle_asked=10000
idle_n=$(((fd_limit - 400) / 2 / 100 * 100))
((idle_n <= idle_asked)) || idle_n=$idle_asked
((smoke)) && idle_n=1200
if ((idle_n < 1000)); then
    echo "error: ulimit -n is $fd_limit; the benchmark needs at least 2,400 file descriptors" >&2
    exit 1
fi

target_dir=${CARGO_TARGET_DIR:-$root/target}
out=${BENCH_OUT:-$target_dir/bench}
# Logs, secrets and programs of this run. The directory is emptied first,
# but only if an earlier run made it (it holds a marker file).
run=$out/bench-run
marker=.asynq-guard-bench-run
if [ -e "$run" ] && [ ! -e "$run/$marker" ]; then
    echo "error: $run exists and was not made by scripts/bench.sh; remove it or choose another BENCH_OUT" >&2
    exit 1
fi
rm -rf "$run"
mkdir -p "$run"
: >"$run/$marker"
results=$out/results.tsv
meta=$out/meta.tsv
: >"$results"
: >"$meta"

echo "==> cargo build --release"
cargo build --release --locked
guard_bin=$target_dir/release/asynq-guard
echo "==> go build scripts/bench"
(cd scripts/bench && go build -o "$run/asynqbench" .)
bench=$run/asynqbench

# === processes ===

# Every process this script started, however deep: the servers, the idle
# opener, and a workload cut short by a signal (its subshell and program).
descendants() {
    local f line
    for f in /proc/[0-9]*/stat; do
        read -r line <"$f" 2>/dev/null || continue
        f=${f#/proc/}
        echo "${f%/stat} ${line##*) }"
    done | awk -v root="$$" '{ parent[$1] = $3 }
        END {
            mine[root] = 1
            do {
                grew = 0
                for (p in parent) if (!(p in mine) && (parent[p] in mine)) { mine[p] = 1; grew = 1 }
            } while (grew)
            for (p in mine) if (p != root) print p
        }'
}
pids=()
cleanup() {
    local pid
    # shellcheck disable=SC2046 # one pid per word
    kill "${pids[@]}" $(descendants) 2>/dev/null || true
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'echo "==> interrupted" >&2; exit 130' INT
trap 'echo "==> terminated" >&2; exit 143' TERM

secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
# Waits until `redis-cli <args> ping` answers PONG.
wait_ping() {
    local what=$1
    shift
    for _ in $(seq 1 200); do
        [ "$(redis-cli --no-auth-warning "$@" ping 2>/dev/null)" = PONG ] && return 0
        sleep 0.05
    done
    echo "error: $what does not answer PING; its log:" >&2
    cat "$run/$what.log" >&2 || true
    exit 1
}

mapfile -t ports < <("$bench" ports 4)
redis_port=${ports[0]} haproxy_port=${ports[1]} guard_port=${ports[2]} admin_port=${ports[3]}
redis_pass=$(secret)
producer_secret=$(secret) worker_secret=$(secret) raw_secret=$(secret)
printf '%s\n' "$redis_pass" >"$run/redis.pass"
secret >"$run/signing.key"

echo "==> redis-server on 127.0.0.1:$redis_port"
redis-server --bind 127.0.0.1 --port "$redis_port" --requirepass "$redis_pass" \
    --save "" --appendonly no --maxclients 20000 --dir "$run" \
    --logfile "$run/redis.log" &
redis_pid=$!
pids+=("$redis_pid")
wait_ping redis -p "$redis_port" -a "$redis_pass"
# PING answers PONG even when AUTH failed: make sure the port is ours.
[ "$(redis-cli --no-auth-warning -p "$redis_port" -a "$redis_pass" info server |
    tr -d '\r' | sed -n 's/^process_id://p')" = "$redis_pid" ] || {
    echo "error: 127.0.0.1:$redis_port is not the redis-server this run started" >&2
    exit 1
}

echo "==> haproxy (mode tcp) on 127.0.0.1:$haproxy_port"
haproxy_maxconn=$(((fd_limit - 200) / 2))
cat >"$run/haproxy.cfg" <<EOF
global
    maxconn $haproxy_maxconn

defaults
    mode tcp
    maxconn $haproxy_maxconn
    timeout connect 5s
    timeout client 1h
    timeout server 1h

frontend redis_in
    bind 127.0.0.1:$haproxy_port
    default_backend redis

backend redis
    server redis 127.0.0.1:$redis_port
EOF
"$haproxy_bin" -f "$run/haproxy.cfg" -db >"$run/haproxy.log" 2>&1 &
haproxy_pid=$!
pids+=("$haproxy_pid")
wait_ping haproxy -p "$haproxy_port" -a "$redis_pass"

echo "==> asynq-guard on 127.0.0.1:$guard_port"
hash() { printf '%s' "$1" | "$guard_bin" hash-secret; }
cat >"$run/policy.toml" <<EOF
# The benchmark's policy: each asynq program under its own identity with
# only the grants its job needs, redis-benchmark under a raw identity (a
# raw grant takes no queues and no key patterns: it cannot be restricted
# to redis-benchmark's "key:" prefix), a rate limit on the producer too
# high to refuse, and every task of the benchmark's queue signed.
[[listener]]
name = "bench"
address = "127.0.0.1:$guard_port"

[upstream]
address = "127.0.0.1:$redis_port"
password_file = "$run/redis.pass"

[admin]
address = "127.0.0.1:$admin_port"

[[identity]]
name = "producer"
secret_sha256 = ["$(hash "$producer_secret")"]

[[identity]]
name = "worker"
secret_sha256 = ["$(hash "$worker_secret")"]

[[identity]]
name = "redis-benchmark"
secret_sha256 = ["$(hash "$raw_secret")"]

[[grant]]
identity = "producer"
operations = ["enqueue"]
queues = ["bench"]
task_types = ["bench:*"]

[[grant]]
identity = "worker"
operations = ["consume"]
queues = ["bench"]

[[grant]]
identity = "redis-benchmark"
operations = ["raw"]

[[rate_limit]]
name = "producer"
scope = "identity"
identities = ["producer"]
rate_per_second = 10000000
burst = 10000000

[integrity]
sign_with = "bench"

[[integrity.key]]
id = "bench"
file = "$run/signing.key"

[[integrity.queues]]
queues = ["bench"]
mode = "add"
EOF
"$guard_bin" check --config "$run/policy.toml" >/dev/null
"$guard_bin" serve --config "$run/policy.toml" >"$run/guard.log" 2>&1 &
guard_pid=$!
pids+=("$guard_pid")
wait_ping guard -p "$guard_port" --user producer --pass "$producer_secret"

# === measuring ===

clk_tck=$(getconf CLK_TCK)
# utime+stime of a process in clock ticks (every thread).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$results"; }

# The process between the clients and Redis, and the login of each role,
# for each target.
mid_pid() {
    case $1 in
    direct) echo "" ;;
    haproxy) echo "$haproxy_pid" ;;
    guard) echo "$guard_pid" ;;
    esac
}
port_of() {
    case $1 in
    direct) echo "$redis_port" ;;
    haproxy) echo "$haproxy_port" ;;
    guard) echo "$guard_port" ;;
    esac
}
# login TARGET ROLE: asynqbench flags (-user, -pass).
login() {
    case $1/$2 in
    guard/producer) echo "-user producer -pass $producer_secret" ;;
    guard/worker) echo "-user worker -pass $worker_secret" ;;
    guard/raw) echo "-user redis-benchmark -pass $raw_secret" ;;
    *) echo "-pass $redis_pass" ;;
    esac
}

flush() { redis-cli --no-auth-warning -p "$redis_port" -a "$redis_pass" flushall >/dev/null; }

# measure REP TARGET WORKLOAD OPS COMMAND...: runs COMMAND, records the
# "metric<TAB>value" lines it prints and the CPU time per operation of
# the proxy and of Redis.
measure() {
    local rep=$1 target=$2 workload=$3 ops=$4
    shift 4
    local mid r0 r1 m0=0 m1=0 output
    mid=$(mid_pid "$target")
    r0=$(cpu_ticks "$redis_pid")
    [ -z "$mid" ] || m0=$(cpu_ticks "$mid")
    # In the background and waited for, so that a signal is handled at once.
    "$@" >"$run/last.out" 2>"$run/last.err" &
    if ! wait $!; then
        echo "error: $workload against $target failed: $*" >&2
        cat "$run/last.err" >&2
        exit 1
    fi
    output=$(<"$run/last.out")
    r1=$(cpu_ticks "$redis_pid")
    [ -z "$mid" ] || m1=$(cpu_ticks "$mid")
    while IFS=$'\t' read -r metric value; do
        [ -n "$metric" ] && record "$rep" "$target" "$workload" "$metric" "$value"
    done <<<"$output"
    record "$rep" "$target" "$workload" redis_cpu_us \
        "$(awk -v t="$((r1 - r0))" -v hz="$clk_tck" -v n="$ops" 'BEGIN { print t * 1e6 / hz / n }')"
    [ -z "$mid" ] || record "$rep" "$target" "$workload" mid_cpu_us \
        "$(awk -v t="$((m1 - m0))" -v hz="$clk_tck" -v n="$ops" 'BEGIN { print t * 1e6 / hz / n }')"
}

# redis-benchmark GET and SET; prints rps and percentiles in µs.
rb() {
    local target=$1
    shift
    local auth=(-a "$redis_pass")
    [ "$target" = guard ] && auth=(--user redis-benchmark -a "$raw_secret")
    redis-benchmark -h 127.0.0.1 -p "$(port_of "$target")" "${auth[@]}" --csv -t set,get "$@" |
        tr -d '"' | awk -F, '$1 == "SET" || $1 == "GET" {
            c = tolower($1)
            printf "%s_rps\t%s\n%s_p50_us\t%s\n%s_p99_us\t%s\n", c, $2, c, $5 * 1000, c, $7 * 1000
        }'
}

asynqbench() {
    local target=$1 role=$2 mode=$3
    shift 3
    # shellcheck disable=SC2046 # login prints flags
    "$bench" "$mode" -addr "127.0.0.1:$(port_of "$target")" $(login "$target" "$role") "$@"
}

# The targets of repetition REP, rotated.
order() {
    local all=(direct haproxy guard) k=$(($1 % 3))
    echo "${all[@]:k}" "${all[@]:0:k}"
}

# === what was run, for the report ===

note() { printf '%s\t%s\n' "$1" "$2" >>"$meta"; }
note date "$(date -u '+%Y-%m-%d %H:%M UTC') (start)"
note commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
note machine "$(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) CPUs ($(uname -sr)); everything on this one machine"
note versions "$(redis-server --version | awk '{ print $1, $2, $3 }'), $("$haproxy_bin" -v | head -n 1 | awk '{ print $1, $2, $3 }'), asynq v0.26.0, $(go version | awk '{ print $3 }')"
note run "$([ "$smoke" = 1 ] && echo "SMOKE (tiny sizes: exercises the paths, figures mean little)" || echo full), $reps repetition(s); in each the order of the targets rotates (direct, HAProxy, asynq-guard)"
note redis-benchmark "GET and SET; requests per run: 1 conn $rb_1c, 50 conns $rb_50c, pipeline 16 $rb_p16, 64 KiB values $rb_64k (keyspace 1,000), 1,000 conns $rb_1000c; random keys key:N (-r 100000); direct and HAProxy log in with Redis's password, asynq-guard with a raw identity"
note asynq "$tasks tasks of 256 B to queue bench; enqueue: asynq.Client.Enqueue from 16 goroutines; batch enqueue: 16 goroutines each sending go-redis pipelines of 100 calls of asynq's enqueue script (EVALSHA, asynq's message encoding) and waiting for the replies; drain: an asynq.Server with a no-op handler, from Start to the last task; enqueue to handler: $e2e_rate/s for $e2e_for, a Server at Concurrency 10 polling every 1 ms when idle, the time from Enqueue to the handler's start"
note asynq-guard "producer and worker identities with enqueue and consume grants on queue bench, a rate limit of 10^7/s on the producer, tasks signed (integrity add mode) on queue bench, audit and info logs to a file"
note "idle connections" "1,000, then $idle_n ($idle_asked asked; the proxies hold 2 descriptors per connection and ulimit -n is $fd_limit), each after AUTH and PING; RSS per connection = (RSS with all open - RSS idle) / $idle_n"

# === memory with idle connections (fresh processes, before the workloads) ===

echo "==> idle connections: 1,000 and $idle_n per target"
for target in direct haproxy guard; do
    pid=$(mid_pid "$target")
    [ -n "$pid" ] || pid=$redis_pid
    sleep 1
    record 0 "$target" mem rss_idle_kib "$(rss_kib "$pid")"
    # Started directly (not through a function) so that $! is the opener.
    # shellcheck disable=SC2046 # login prints flags
    # A fresh file per target: a stage line of the last one must not count.
    idle_out=$run/idle-$target.out
    rm -f "$idle_out"
    "$bench" idle -addr "127.0.0.1:$(port_of "$target")" $(login "$target" producer) \
        -stages "1000,$idle_n" >"$idle_out" 2>"$run/idle.err" &
    opener=$!
    pids+=("$opener")
    for stage in 1000 "$idle_n"; do
        for _ in $(seq 1 1200); do
            grep -qsx "stage $stage" "$idle_out" && break
            kill -0 "$opener" 2>/dev/null || {
                echo "error: idle opener against $target failed:" >&2
                cat "$run/idle.err" >&2
                exit 1
            }
            sleep 0.1
        done
        grep -qsx "stage $stage" "$idle_out" || {
            echo "error: $stage idle connections to $target not open within 2 minutes" >&2
            exit 1
        }
        sleep 1
        if [ "$stage" = 1000 ]; then
            record 0 "$target" mem rss_1000_kib "$(rss_kib "$pid")"
            kill -USR1 "$opener"
        else
            record 0 "$target" mem rss_n_kib "$(rss_kib "$pid")"
            record 0 "$target" mem n "$idle_n"
        fi
    done
    kill "$opener" 2>/dev/null || true
    wait "$opener" || true
done
sleep 1

# === workloads ===

rb_sets=(
    "rb-1c $rb_1c -c 1 -r 100000"
    "rb-50c $rb_50c -c 50 -r 100000"
    "rb-p16 $rb_p16 -c 50 -P 16 -r 100000"
    "rb-64k $rb_64k -c 50 -d 65536 -r 1000"
    "rb-1000c $rb_1000c -c 1000 -r 100000"
)
for rep in $(seq 1 "$reps"); do
    read -ra targets <<<"$(order "$rep")"
    echo "==> repetition $rep of $reps (order: ${targets[*]})"
    for set in "${rb_sets[@]}"; do
        read -r workload n args <<<"$set"
        for target in "${targets[@]}"; do
            echo "    $workload -> $target"
            flush
            # shellcheck disable=SC2086 # args are words
            measure "$rep" "$target" "$workload" $((2 * n)) rb "$target" -n "$n" $args
        done
    done
    for target in "${targets[@]}"; do
        echo "    asynq enqueue, drain at Concurrency 10 -> $target"
        flush
        measure "$rep" "$target" enqueue "$tasks" asynqbench "$target" producer enqueue -n "$tasks" -c 16
        measure "$rep" "$target" drain10 "$tasks" asynqbench "$target" worker drain -n "$tasks" -c 10
    done
    for target in "${targets[@]}"; do
        echo "    asynq batch enqueue, drain at Concurrency 50 -> $target"
        flush
        measure "$rep" "$target" batch "$tasks" asynqbench "$target" producer batch -n "$tasks" -c 16 -batch 100
        measure "$rep" "$target" drain50 "$tasks" asynqbench "$target" worker drain -n "$tasks" -c 50
    done
    for target in "${targets[@]}"; do
        echo "    asynq enqueue to handler at $e2e_rate/s for $e2e_for -> $target"
        flush
        # shellcheck disable=SC2046 # login prints flags
        measure "$rep" "$target" e2e "$(awk -v r="$e2e_rate" -v d="${e2e_for%s}" 'BEGIN { print r * d }')" \
            asynqbench "$target" producer latency -rate "$e2e_rate" -for "$e2e_for" -c 10 \
            $(login "$target" worker | sed 's/^-user /-worker-user /; s/ -pass / -worker-pass /; s/^-pass /-worker-pass /')
    done
    # A report so far, in case the run is cut short.
    "$bench" report -results "$results" -meta "$meta" -out "$out/report.md" >/dev/null
done

record 0 direct mem hwm_kib "$(hwm_kib "$redis_pid")"
record 0 haproxy mem hwm_kib "$(hwm_kib "$haproxy_pid")"
record 0 guard mem hwm_kib "$(hwm_kib "$guard_pid")"

# === report ===

"$bench" report -results "$results" -meta "$meta" -out "$out/report.md"
echo "==> report written to $out/report.md"
