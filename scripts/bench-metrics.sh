#!/usr/bin/env bash
# Metrics cost: two release builds (before/after) of strom-broker and strom-bench, copied to
# /tmp/broker-{before,after} and /tmp/bench-{before,after}, run interleaved (BENCHMARKS.md).
set -u
run() { # $1 = before|after, $2 = round
  local d=/tmp/mbench-$1-$2; rm -rf $d; mkdir -p $d
  local extra=""; [ "$1" = after ] && extra="--http-listen 127.0.0.1:0"
  /tmp/broker-$1 --listen 127.0.0.1:19500 --data-dir $d/data --kafka-listen none $extra > $d/broker.log 2>&1 &
  local pid=$!
  for i in $(seq 1 100); do grep -q "listening\|serving\|on 127.0.0.1:19500" $d/broker.log 2>/dev/null && break; sleep 0.1; done
  sleep 1
  /tmp/bench-$1 produce --bootstrap 127.0.0.1:19500 --topic m --create-topic --num-records 1000000 --record-size 1024 2>&1 | grep -i "MB/s\|records/s" | head -2 | sed "s/^/$1 round $2: /"
  kill $pid; wait $pid 2>/dev/null; rm -rf $d
}
for r in 1 2 3; do run before $r; run after $r; done
