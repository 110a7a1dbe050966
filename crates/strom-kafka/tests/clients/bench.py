"""Produce/consume throughput through the Kafka listener with confluent-kafka (librdkafka).

python bench.py BOOTSTRAP TOPIC NUM_RECORDS RECORD_SIZE PARTITIONS
Settings match strom-bench's producer defaults: acks=all, batch.size 16 KiB, linger 5 ms,
no compression. The topic is created first; prints one line per phase.
"""
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, topic = sys.argv[1], sys.argv[2]
n, size, partitions = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])

admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the topic exists
admin.create_topics(
    [NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(timeout=30)

p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "batch.size": 16384,
              "linger.ms": 5, "queue.buffering.max.kbytes": 32768})
value = b"x" * size
start = time.time()
for i in range(n):
    while True:
        try:
            p.produce(topic, value)
            break
        except BufferError:
            p.poll(0.01)
    if i % 1000 == 0:
        p.poll(0)
p.flush(120)
secs = time.time() - start
print(f"produce: {n} records x {size} B in {secs:.2f} s = {n / secs:,.0f} records/s, "
      f"{n * size / secs / 1e6:.1f} MB/s", flush=True)

c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False,
              "fetch.max.bytes": 52428800, "max.partition.fetch.bytes": 1048576})
c.assign([TopicPartition(topic, i, 0) for i in range(partitions)])
got, start = 0, time.time()
while got < n and time.time() - start < 120:
    for m in c.consume(num_messages=10000, timeout=1.0):
        if not m.error():
            got += 1
secs = time.time() - start
c.close()
print(f"consume: {got} records x {size} B in {secs:.2f} s = {got / secs:,.0f} records/s, "
      f"{got * size / secs / 1e6:.1f} MB/s", flush=True)
