#!/usr/bin/env bash
# RF 3 produce on 3 local release brokers (min.insync 2, acks=all, strom-bench defaults) with the
# brokers' CPU time: prints strom-bench's line and the three brokers' CPU seconds (from /proc).
# Usage: scripts/bench-replication-cpu.sh [BIN_DIR] [RECORDS]   (BIN_DIR: target/release)
set -u
B=${1:-"$(cd "$(dirname "$0")/.." && pwd)/target/release"}
N=${2:-1000000}
D=$(mktemp -d /tmp/bench-rf3-cpu.XXXXXX)
V="1@127.0.0.1:19401,2@127.0.0.1:19402,3@127.0.0.1:19403"
PIDS=()
for i in 1 2 3; do
  "$B/strom-broker" --node-id $i --voters $V --listen 127.0.0.1:1940$i \
    --http-listen 127.0.0.1:1950$i --kafka-listen none --data-dir "$D/d$i" > "$D/n$i.log" 2>&1 &
  PIDS+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 300); do curl -sf http://127.0.0.1:1950$i/ready > /dev/null && break; sleep 0.1; done
done
ticks() { local s=0; for p in "${PIDS[@]}"; do s=$((s + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $s; }
t0=$(ticks)
"$B/strom-bench" produce --bootstrap 127.0.0.1:19401 --topic rf3 --create-topic --partitions 1 \
  --replication-factor 3 --config min.insync.replicas=2 --num-records "$N" --record-size 1024 \
  2>&1 | tail -1
t1=$(ticks)
echo "brokers CPU: $(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }') s"
kill "${PIDS[@]}"; wait 2> /dev/null
rm -rf "$D"
