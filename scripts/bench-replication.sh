#!/usr/bin/env bash
# RF 1 vs RF 3 (acks=all, min.insync 2) on 3 local release brokers; prints strom-bench lines.
set -u
B="$(cd "$(dirname "$0")/.." && pwd)/target/release"
D=/tmp/bench-rf; rm -rf $D; mkdir -p $D
V="1@127.0.0.1:19201,2@127.0.0.1:19202,3@127.0.0.1:19203"
for i in 1 2 3; do
  $B/strom-broker --node-id $i --voters $V --listen 127.0.0.1:1920$i --kafka-listen none --data-dir $D/d$i > $D/n$i.log 2>&1 &
  echo $! > $D/n$i.pid
done
sleep 5
BS=127.0.0.1:19201
N=${N:-300000}
for round in 1 2 3; do
  for rf in 1 3; do
    $B/strom-bench produce --bootstrap $BS --topic "rf$rf-$round" --create-topic --partitions 1 \
      --replication-factor $rf --config min.insync.replicas=$(( rf == 3 ? 2 : 1 )) \
      --num-records $N --record-size 1024 2>&1 | tail -1 | sed "s/^/rf=$rf round=$round: /"
  done
done
$B/strom-admin --bootstrap $BS cluster describe
for i in 1 2 3; do kill $(cat $D/n$i.pid); done
wait
