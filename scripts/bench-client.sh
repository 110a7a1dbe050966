#!/usr/bin/env bash
# Before/after comparison of two strom-bench builds (the client side of the performance issue),
# both against the same strom-broker binary, interleaved: each round runs every scenario with
# the "before" bench, then with the "after" one, each on a fresh broker (empty data directory,
# ports picked by the OS). Prints one line per run; BENCHMARKS.md takes the medians.
#
# Client CPU is the bench process's user+system time (bash's `time`), broker CPU comes from
# `process_cpu_seconds_total` on its /metrics page before and after each run, so both work with
# a bench binary that predates `--broker-metrics`.
#
#   scripts/bench-client.sh BROKER BENCH_BEFORE BENCH_AFTER [ROUNDS] [RECORDS]
set -euo pipefail

broker_bin=$1
before=$2
after=$3
rounds=${4:-3}
records=${5:-1000000}
work=$(mktemp -d /tmp/bench-client.XXXXXX)
broker_pid=

cleanup() {
    [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

start_broker() {
    rm -rf "$work/data"
    "$broker_bin" --data-dir "$work/data" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
        --kafka-listen none >"$work/broker.out" 2>"$work/broker.err" &
    broker_pid=$!
    for _ in $(seq 1 300); do
        grep -q 'listening on' "$work/broker.out" 2>/dev/null && break
        sleep 0.1
    done
    grpc=$(sed -n 's/^strom-broker listening on //p' "$work/broker.out")
    http=$(sed -n 's/^strom-broker http on //p' "$work/broker.out")
    [ -n "$grpc" ] || { echo "broker did not start" >&2; exit 1; }
}

stop_broker() {
    kill "$broker_pid"
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=
}

broker_cpu() {
    curl -s "http://$http/metrics" | awk '$1 == "process_cpu_seconds_total" { print $2 }'
}

# run LABEL SCENARIO BENCH ARGS...: one strom-bench run, one result line.
run() {
    local label=$1 scenario=$2 bench=$3
    shift 3
    local b0 b1 out cpu
    b0=$(broker_cpu)
    TIMEFORMAT='%U %S'
    { time "$bench" "$@" --bootstrap "$grpc" >"$work/out" 2>"$work/err"; } 2>"$work/time" \
        || { echo "$label $scenario FAILED: $(tail -1 "$work/err")"; return; }
    b1=$(broker_cpu)
    out=$(tail -1 "$work/out")
    cpu=$(awk '{ print $1 + $2 }' "$work/time")
    echo "$label | $scenario | $out | client_cpu_s $cpu | broker_cpu_s $(echo "$b1 - $b0" | bc -l)"
}

for round in $(seq 1 "$rounds"); do
    for variant in before after; do
        bench=$before
        [ "$variant" = after ] && bench=$after
        start_broker
        run "$variant r$round" "produce 1p defaults" "$bench" produce --topic a1 --create-topic \
            --partitions 1 --num-records "$records" --record-size 1024
        run "$variant r$round" "produce 1p 1MiB acks=1" "$bench" produce --topic b1 --create-topic \
            --partitions 1 --num-records "$records" --record-size 1024 --batch-size 1048576 \
            --acks 1 --enable-idempotence false
        run "$variant r$round" "consume 1p" "$bench" consume --topic a1 --num-records "$records"
        run "$variant r$round" "produce 6p defaults" "$bench" produce --topic c6 --create-topic \
            --partitions 6 --num-records "$records" --record-size 1024
        run "$variant r$round" "consume 6p" "$bench" consume --topic c6 --num-records "$records"
        stop_broker
    done
done
