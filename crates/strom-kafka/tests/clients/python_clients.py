"""Scenarios of real Python Kafka clients against a Strom broker's Kafka listener.

Run by tests/kafka_clients.rs with the venv's python: `python_clients.py BOOTSTRAP SCENARIO`.
Prints one line per check and exits non-zero on the first failure.
"""
import asyncio
import sys
import threading
import time
import uuid

BOOTSTRAP = sys.argv[1]
SCENARIO = sys.argv[2]
DEADLINE = 40.0


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def confluent_admin_produce_consume():
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    topic = unique("ck")
    fs = admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])
    fs[topic].result(timeout=10)
    md = admin.list_topics(timeout=10)
    check(topic in md.topics and len(md.topics[topic].partitions) == 6, "created topic has 6 partitions")

    sent = {}
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        p = Producer({"bootstrap.servers": BOOTSTRAP, "compression.type": codec,
                      "partitioner": "murmur2_random", "linger.ms": 5})
        delivered = []
        for i in range(20):
            key = f"key-{codec}-{i}".encode()
            p.produce(topic, key=key, value=f"v{i}".encode(), headers=[("h", codec.encode())],
                      on_delivery=lambda err, msg: delivered.append((err, msg)))
            sent[key] = None
        p.flush(10)
        check(len(delivered) == 20 and all(e is None for e, _ in delivered), f"20 records acked with {codec}")
        for _, m in delivered:
            sent[m.key()] = m.partition()
    big = b"x" * (900 * 1024)
    p = Producer({"bootstrap.servers": BOOTSTRAP, "message.max.bytes": 2_000_000})
    p.produce(topic, key=b"big", value=big, partition=0)
    check(p.flush(10) == 0, "900 KiB record acked")

    # Keyed records land where Java's murmur2 partitioner puts them.
    from kafka.partitioner.default import murmur2
    wrong = [k for k, part in sent.items() if part != (murmur2(k) & 0x7FFFFFFF) % 6]
    check(not wrong, "every key on its murmur2 partition")

    group = unique("g")
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "fetch.message.max.bytes": 2_000_000})
    c.subscribe([topic])
    got, headers_ok, big_seen = 0, True, False
    end = time.time() + DEADLINE
    while got < 101 and time.time() < end:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        got += 1
        if m.key() == b"big":
            big_seen = len(m.value()) == len(big)
        elif not m.headers() or m.headers()[0][0] != "h":
            headers_ok = False
    check(got == 101, f"consumed all 101 records (got {got})")
    check(big_seen and headers_ok, "900 KiB record and headers came back intact")
    c.commit(asynchronous=False)
    committed = c.committed([TopicPartition(topic, p) for p in range(6)], timeout=10)
    check(sum(tp.offset for tp in committed if tp.offset > 0) == 101, "commit stored every position")
    c.close()

    # Resume: a new consumer of the group starts at the committed offsets, sees only new records.
    p = Producer({"bootstrap.servers": BOOTSTRAP})
    p.produce(topic, key=b"after", value=b"after-commit", partition=3)
    p.flush(10)
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    seen = []
    end = time.time() + DEADLINE
    while not seen and time.time() < end:
        m = c.poll(0.5)
        if m is not None and not m.error():
            seen.append(m.value())
    c.close()
    check(seen == [b"after-commit"], f"resumed from the committed offset (saw {seen[:3]})")
    admin.delete_consumer_groups([group])[group].result(timeout=10)
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group})
    left = c.committed([TopicPartition(topic, p) for p in range(6)], timeout=10)
    c.close()
    check(all(tp.offset < 0 for tp in left), "deleted group has no committed offsets")

    fs = admin.delete_topics([topic])
    fs[topic].result(timeout=10)
    check(topic not in admin.list_topics(timeout=10).topics, "deleted topic is gone")


def confluent_group_split():
    import os
    import signal
    import subprocess
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    topic = unique("split")
    admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])[topic].result(timeout=10)
    group = unique("g")
    conf = {"bootstrap.servers": BOOTSTRAP, "group.id": group, "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500, "partition.assignment.strategy": "range"}
    assignments = {}
    stops = {n: threading.Event() for n in ("a", "b")}

    def member(name):
        c = Consumer(conf)
        c.subscribe([topic])
        while not stops[name].is_set():
            c.poll(0.2)
            assignments[name] = sorted(tp.partition for tp in c.assignment())
        c.close()  # LeaveGroup

    def wait_for(cond, what):
        end = time.time() + DEADLINE
        while time.time() < end and not cond():
            time.sleep(0.2)
        check(cond(), f"{what} ({assignments})")

    threads = {n: threading.Thread(target=member, args=(n,)) for n in ("a", "b")}
    for t in threads.values():
        t.start()
    wait_for(lambda: len(assignments.get("a", [])) == 3 and len(assignments.get("b", [])) == 3
             and sorted(assignments["a"] + assignments["b"]) == list(range(6)),
             "2 members split 6 partitions 3/3")
    stops["b"].set()
    threads["b"].join()
    wait_for(lambda: assignments.get("a") == list(range(6)), "after b left, a owns all 6")

    # A member in another process, killed with SIGKILL: its partitions return to a once its
    # session times out.
    code = ("import sys, time\nfrom confluent_kafka import Consumer\n"
            f"c = Consumer({conf!r})\nc.subscribe([{topic!r}])\n"
            "while True:\n    c.poll(0.2)\n")
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        wait_for(lambda: len(assignments.get("a", [])) == 3, "a third member process takes 3 of a's 6")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    wait_for(lambda: assignments.get("a") == list(range(6)), "after the member was killed, a owns all 6 again")
    stops["a"].set()
    threads["a"].join()


def kafka_python():
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import NewTopic
    from kafka.partitioner.default import murmur2

    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    topic = unique("kp")
    admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    check(topic in admin.list_topics(), "kafka-python admin created the topic")
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, compression_type="gzip")
    placed = []
    for i in range(20):
        key = f"kp-{i}".encode()
        md = producer.send(topic, key=key, value=b"v", headers=[("h", b"1")]).get(timeout=10)
        placed.append((key, md.partition))
    producer.flush()
    check(all(p == (murmur2(k) & 0x7FFFFFFF) % 4 for k, p in placed), "kafka-python keys on murmur2 partitions")
    consumer = KafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=unique("g"),
                             auto_offset_reset="earliest", consumer_timeout_ms=15000)
    got = 0
    for _ in consumer:
        got += 1
        if got == 20:
            break
    consumer.commit()
    consumer.close()
    check(got == 20, f"kafka-python consumed 20 records in a group (got {got})")
    admin.delete_topics([topic])
    admin.close()


def aiokafka_roundtrip():
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = unique("aio")

    async def run():
        from kafka.admin import KafkaAdminClient, NewTopic
        admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
        admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, compression_type="gzip")
        await producer.start()
        for i in range(10):
            await producer.send_and_wait(topic, key=f"a{i}".encode(), value=b"v", headers=[("h", b"1")])
        await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=unique("g"),
                                    auto_offset_reset="earliest")
        await consumer.start()
        got = 0
        try:
            end = time.time() + DEADLINE
            while got < 10 and time.time() < end:
                batch = await consumer.getmany(timeout_ms=500)
                got += sum(len(v) for v in batch.values())
            await consumer.commit()
        finally:
            await consumer.stop()
        return got

    got = asyncio.run(run())
    check(got == 10, f"aiokafka produced and consumed 10 records (got {got})")


def confluent_create_partitions():
    """AdminClient.create_partitions grows a topic; a subscribed group member picks the new
    partitions up after its metadata refresh (librdkafka rejoins when a subscribed topic's
    partition count changes) and reads what a producer writes to them."""
    from confluent_kafka import Consumer, KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    topic = unique("cp")
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(timeout=10)
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": unique("g"), "auto.offset.reset": "earliest",
                  "topic.metadata.refresh.interval.ms": 500})
    c.subscribe([topic])
    end = time.time() + DEADLINE
    while time.time() < end and len(c.assignment()) != 2:
        c.poll(0.2)
    check(len(c.assignment()) == 2, "the member owns both partitions")

    admin.create_partitions([NewPartitions(topic, 4)])[topic].result(timeout=10)
    check(len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 4, "topic grew to 4 partitions")
    for count, what in [(4, "same count"), (3, "fewer partitions")]:
        try:
            admin.create_partitions([NewPartitions(topic, count)])[topic].result(timeout=10)
            check(False, f"{what} refused")
        except KafkaException as e:
            check(e.args[0].name() == "INVALID_PARTITIONS", f"{what} refused with INVALID_PARTITIONS ({e.args[0].name()})")
    try:
        admin.create_partitions([NewPartitions("no-such-topic", 3)])["no-such-topic"].result(timeout=10)
        check(False, "unknown topic refused")
    except KafkaException as e:
        check(e.args[0].name() == "UNKNOWN_TOPIC_OR_PART", f"unknown topic refused ({e.args[0].name()})")
    admin.create_partitions([NewPartitions(topic, 8)], validate_only=True)[topic].result(timeout=10)
    check(len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 4, "validate_only changed nothing")

    p = Producer({"bootstrap.servers": BOOTSTRAP, "topic.metadata.refresh.interval.ms": 500})
    delivered = []
    p.produce(topic, value=b"on-new-partition", partition=3, on_delivery=lambda err, msg: delivered.append(err))
    check(p.flush(10) == 0 and delivered == [None], "produced to new partition 3")
    got = None
    end = time.time() + DEADLINE
    while time.time() < end and got is None:
        m = c.poll(0.2)
        if m is not None and not m.error():
            got = (m.partition(), m.value())
    check(len(c.assignment()) == 4, f"the member rebalanced onto 4 partitions ({len(c.assignment())})")
    check(got == (3, b"on-new-partition"), f"the member read the new partition's record ({got})")
    c.close()
    admin.delete_topics([topic])[topic].result(timeout=10)


def kafka_python_create_partitions():
    """kafka-python's admin adds partitions; its producer and group consumer (which fetch with
    KIP-227 sessions) see them after a metadata refresh."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import NewPartitions, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    topic = unique("kpp")
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    consumer = KafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=unique("g"),
                             auto_offset_reset="earliest", metadata_max_age_ms=500)
    end = time.time() + DEADLINE
    while time.time() < end and len(consumer.assignment()) != 1:
        consumer.poll(timeout_ms=200)
    check(len(consumer.assignment()) == 1, "the member owns the one partition")
    admin.create_partitions({topic: NewPartitions(total_count=3)})
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, metadata_max_age_ms=500)
    md = producer.send(topic, value=b"third", partition=2).get(timeout=10)
    check(md.partition == 2, "kafka-python produced to new partition 2")
    got = []
    end = time.time() + DEADLINE
    while time.time() < end and not got:
        for records in consumer.poll(timeout_ms=200).values():
            got.extend((r.partition, r.value) for r in records)
    check(len(consumer.assignment()) == 3, f"the member rebalanced onto 3 partitions ({consumer.assignment()})")
    check(got == [(2, b"third")], f"kafka-python read the new partition ({got})")
    consumer.close()
    producer.close()
    admin.delete_topics([topic])
    admin.close()
def confluent_idempotent_restart():
    """enable.idempotence=True while the harness SIGKILLs and restarts the broker: produce
    until the harness says "restarted" on stdin (records pile up and retry meanwhile), then
    every record must be stored exactly once. The topic (3 partitions) is argv[3]."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    topic = sys.argv[3]
    restarted = threading.Event()

    def wait_for_restart():
        for line in sys.stdin:
            if line.strip() == "restarted":
                restarted.set()
                return

    threading.Thread(target=wait_for_restart, daemon=True).start()
    p = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True, "linger.ms": 5,
                  "message.timeout.ms": 60000, "queue.buffering.max.messages": 50000})
    delivered, errors = [0], []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            delivered[0] += 1

    def produce(i):
        while True:
            try:
                p.produce(topic, key=f"k{i % 101}".encode(), value=f"v{i}".encode(), on_delivery=on_delivery)
                p.poll(0)
                return
            except BufferError:
                p.poll(0.05)

    sent, announced_at, after_restart = 0, None, 0
    end = time.time() + 120
    while after_restart < 5000 and time.time() < end:
        produce(sent)
        sent += 1
        if announced_at is None and delivered[0] >= 5000:
            print("kill-now", flush=True)
            announced_at = sent
        if restarted.is_set():
            after_restart += 1
    check(restarted.is_set(), "the broker was killed and restarted while producing")
    left = p.flush(60)
    check(left == 0 and not errors, f"every record acknowledged (left {left}, errors {errors[:3]})")
    check(delivered[0] == sent, f"{sent} records delivered ({sent - announced_at} after the kill signal)")

    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": unique("g"), "enable.auto.commit": False})
    parts = [TopicPartition(topic, i, 0) for i in range(3)]
    ends = {i: c.get_watermark_offsets(TopicPartition(topic, i), timeout=10)[1] for i in range(3)}
    c.assign(parts)
    counts, pos = {}, {i: 0 for i in range(3)}
    deadline = time.time() + DEADLINE
    while any(pos[i] < ends[i] for i in range(3)) and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        pos[m.partition()] = m.offset() + 1
        counts[m.value()] = counts.get(m.value(), 0) + 1
    c.close()
    duplicates = sum(n - 1 for n in counts.values())
    print(f"confluent-kafka idempotent producer across a broker kill: {sent} sent, {len(counts)} distinct read, {duplicates} duplicates", flush=True)
    check(duplicates == 0, "no record stored twice")
    check(len(counts) == sent, f"every record stored ({len(counts)} of {sent})")


def confluent_static_membership():
    """KIP-345: two members with group.instance.id; one closes (a static member sends no
    LeaveGroup) and a new consumer with the same instance id takes its partitions back without
    the other member seeing a rebalance."""
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    topic = unique("static")
    admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])[topic].result(timeout=10)
    group = unique("g")

    def conf(instance):
        return {"bootstrap.servers": BOOTSTRAP, "group.id": group, "group.instance.id": instance,
                "session.timeout.ms": 30000, "heartbeat.interval.ms": 500,
                "partition.assignment.strategy": "range"}

    assignments = {}
    callbacks = {"a": 0}
    stops = {n: threading.Event() for n in ("a", "b", "b2")}

    def member(name, instance):
        c = Consumer(conf(instance))

        def on_assign(consumer, partitions):
            callbacks[name] = callbacks.get(name, 0) + 1

        def on_revoke(consumer, partitions):
            callbacks[name] = callbacks.get(name, 0) + 1

        c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
        while not stops[name].is_set():
            c.poll(0.2)
            assignments[name] = sorted(tp.partition for tp in c.assignment())
        c.close()  # static: no LeaveGroup

    def wait_for(cond, what):
        end = time.time() + DEADLINE
        while time.time() < end and not cond():
            time.sleep(0.2)
        check(cond(), f"{what} ({assignments}, callbacks {callbacks})")

    threads = {"a": threading.Thread(target=member, args=("a", "inst-a")),
               "b": threading.Thread(target=member, args=("b", "inst-b"))}
    for t in threads.values():
        t.start()
    wait_for(lambda: len(assignments.get("a", [])) == 2 and len(assignments.get("b", [])) == 2
             and sorted(assignments["a"] + assignments["b"]) == list(range(4)),
             "2 static members split 4 partitions 2/2")
    # Let a settle: its callbacks so far belong to forming the group.
    time.sleep(1.0)
    a_callbacks = callbacks["a"]
    a_partitions = assignments["a"]
    b_partitions = assignments["b"]
    stops["b"].set()
    threads["b"].join()
    # The restarted instance: same group.instance.id, new consumer.
    threads["b2"] = threading.Thread(target=member, args=("b2", "inst-b"))
    threads["b2"].start()
    wait_for(lambda: assignments.get("b2") == b_partitions,
             "the restarted static member got its partitions back")
    time.sleep(1.0)
    check(callbacks["a"] == a_callbacks and assignments["a"] == a_partitions,
          f"the other member saw no rebalance (callbacks {a_callbacks} -> {callbacks['a']})")
    desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
    instances = sorted(m.group_instance_id or "" for m in desc.members)
    check(instances == ["inst-a", "inst-b"], f"DescribeGroups shows the instance ids {instances}")
    # Now the other one restarts: between the two, the group's leader has restarted (a
    # static leader's rejoin must not reassign either, KIP-814).
    b2_callbacks = callbacks["b2"]
    stops["a"].set()
    threads["a"].join()
    threads["a2"] = threading.Thread(target=member, args=("a2", "inst-a"))
    stops["a2"] = threading.Event()
    threads["a2"].start()
    wait_for(lambda: assignments.get("a2") == a_partitions,
             "the other restarted static member got its partitions back")
    time.sleep(1.0)
    check(callbacks["b2"] == b2_callbacks and assignments["b2"] == b_partitions,
          f"the first restarted member saw no rebalance (callbacks {b2_callbacks} -> {callbacks['b2']})")
    for n in ("a2", "b2"):
        stops[n].set()
        threads[n].join()


def confluent_delete_records():
    """AdminClient.delete_records moves the low watermark inside a batch; a consumer reading
    from the earliest offset starts exactly there; above the high watermark is refused.
    kafka-python's admin deletes more, describes the log dirs and asks for a preferred
    election (not needed on one node)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    topic = unique("dr")
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(timeout=10)
    p = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 5})
    for i in range(20):
        p.produce(topic, value=f"v{i}".encode(), partition=0)
        if i % 5 == 4:
            p.flush(10)  # batches of five: offset 7 lies inside the second one
    check(p.flush(10) == 0, "produced 20 records")

    result = admin.delete_records([TopicPartition(topic, 0, 7)])
    deleted = next(iter(result.values())).result(timeout=30)
    check(deleted.low_watermark == 7, f"delete_records answered low watermark 7 ({deleted.low_watermark})")
    try:
        next(iter(admin.delete_records([TopicPartition(topic, 0, 100)]).values())).result(timeout=30)
        check(False, "deleting above the high watermark is refused")
    except KafkaException as e:
        check(e.args[0].name() == "OFFSET_OUT_OF_RANGE",
              f"deleting above the high watermark is OFFSET_OUT_OF_RANGE ({e.args[0].name()})")

    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": unique("g"), "enable.auto.commit": False})
    low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    check((low, high) == (7, 20), f"watermarks (7, 20) ({low}, {high})")
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got = []
    end = time.time() + DEADLINE
    while time.time() < end and len(got) < 13:
        m = c.poll(0.2)
        if m is not None and not m.error():
            got.append((m.offset(), m.value()))
    c.close()
    check(got[:1] == [(7, b"v7")], f"a consumer from earliest starts at offset 7 ({got[:1]})")
    check(got == [(i, f"v{i}".encode()) for i in range(7, 20)], f"and reads 7..19 in order ({len(got)})")

    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka import TopicPartition as KTopicPartition
    kadmin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    tp = KTopicPartition(topic, 0)
    answer = kadmin.delete_records({tp: 12})
    check(answer[tp]["low_watermark"] == 12, f"kafka-python delete_records: low watermark 12 ({answer[tp]})")
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP)
    check(consumer.beginning_offsets([tp])[tp] == 12, "kafka-python sees the earliest offset 12")
    consumer.close()
    dirs = kadmin.describe_log_dirs()
    replicas = [
        (t["name"], part["partition_index"], part["partition_size"])
        for broker in dirs for d in broker["log_dirs"] for t in d["topics"] for part in t["partitions"]
    ]
    mine = [r for r in replicas if r[0] == topic]
    check(len(mine) == 1 and mine[0][2] > 0, f"describe_log_dirs lists the partition with its size ({mine})")
    kadmin.elect_leaders(0, {topic: [0]})
    check(True, "a preferred election where the leader is preferred already is not an error")
    kadmin.close()
    admin.delete_topics([topic])[topic].result(timeout=10)


SCENARIOS = {
    "static-membership": confluent_static_membership,
    "idempotent-restart": confluent_idempotent_restart,
    "confluent": confluent_admin_produce_consume,
    "group-split": confluent_group_split,
    "kafka-python": kafka_python,
    "aiokafka": aiokafka_roundtrip,
    "confluent-create-partitions": confluent_create_partitions,
    "kafka-python-create-partitions": kafka_python_create_partitions,
    "delete-records": confluent_delete_records,
}

if __name__ == "__main__":
    SCENARIOS[SCENARIO]()
