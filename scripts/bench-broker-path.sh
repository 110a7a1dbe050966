#!/usr/bin/env bash
# Before/after comparison of two strom-broker builds on the produce and consume paths:
# 1 and 6 partitions, 1 KiB records, ROUNDS interleaved rounds (before, after, before, ...),
# each on a fresh data directory. The same strom-bench client drives both brokers.
#
#   scripts/bench-broker-path.sh BEFORE_BROKER AFTER_BROKER STROM_BENCH [ROUNDS] [RECORDS]
#
# Prints one line per run: round, variant, scenario, the bench's summary line.
set -euo pipefail
before=$1 after=$2 bench=$3 rounds=${4:-3} records=${5:-1000000}
port=${PORT:-19395}
work=${WORK:-/tmp/strom-bench-broker-path}
rm -rf "$work"
mkdir -p "$work"

run_variant() {
    local round=$1 name=$2 broker=$3
    local dir=$work/$name-$round
    "$broker" --data-dir "$dir" --listen "127.0.0.1:$port" --kafka-listen none \
        --http-listen none >"$dir.log" 2>&1 &
    local pid=$!
    # Polls for the listening port (a start-up wait, not a test).
    for _ in $(seq 1 300); do
        if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
        sleep 0.1
    done
    for p in 1 6; do
        local out
        out=$("$bench" produce --bootstrap "127.0.0.1:$port" --topic "p$p" --create-topic \
            --partitions "$p" --num-records "$records" --record-size 1024 2>&1 | tail -n 3)
        echo "round $round $name produce-$p: $(echo "$out" | tr '\n' ' ')"
        out=$("$bench" consume --bootstrap "127.0.0.1:$port" --topic "p$p" \
            --num-records "$records" 2>&1 | tail -n 3)
        echo "round $round $name consume-$p: $(echo "$out" | tr '\n' ' ')"
    done
    kill "$pid"
    wait "$pid" || true
    rm -rf "$dir"
}

for round in $(seq 1 "$rounds"); do
    run_variant "$round" before "$before"
    run_variant "$round" after "$after"
done
