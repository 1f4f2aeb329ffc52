"""The peer workload on Quix Streams, for a same-session comparison with benches/throughput.rs.

The same events (JSON {"status", "amount"} keyed doc-<i % keys>, statuses cycling per round), the
same per-key state machine (count, last status, validity of the transition, running total), one
output per input, the same measure: from the first input processed to every input processed and
the offsets committed (Quix commits its checkpoint when the application stops).

    pip install quixstreams==3.28.1
    python3 benches/peer/quix_status_tracker.py --bootstrap 127.0.0.1:19092 --events 2000000

Each case gets its own topics and consumer group. tansu returns topic configs only when set, and
Quix reads retention from them: the topics are created with retention.ms/bytes = -1.
"""

import argparse
import logging
import tempfile
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from quixstreams import Application

STATUSES = ["uploaded", "scanned", "classified", "approved"]
VALID = {(None, "uploaded"), ("uploaded", "scanned"), ("scanned", "classified"), ("classified", "approved"), ("classified", "rejected")}


def create_topics(bootstrap, names, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    config = {"retention.ms": "-1", "retention.bytes": "-1"}
    for f in admin.create_topics([NewTopic(n, partitions, 1, config=config) for n in names]).values():
        f.result(30)


def load(bootstrap, topic, events, keys):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000, "partitioner": "murmur2_random"})
    for i in range(events):
        value = '{"status":"%s","amount":%d}' % (STATUSES[(i // keys) % len(STATUSES)], i % 100)
        while True:
            try:
                p.produce(topic, key="doc-%d" % (i % keys), value=value)
                break
            except BufferError:
                p.poll(0.005)
        p.poll(0)
    p.flush(120)


def committed(bootstrap, group, topic, partitions):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    c.close()
    return sum(max(tp.offset, 0) for tp in got)


def run(args, guarantee, commit_interval):
    tag = uuid.uuid4().hex[:8]
    src, dst, group = "quix-events-" + tag, "quix-statuses-" + tag, "quix-bench-" + tag
    create_topics(args.bootstrap, [src, dst], args.partitions)
    load(args.bootstrap, src, args.events, args.keys)

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee=guarantee,
        commit_interval=commit_interval,
        state_dir=tempfile.mkdtemp(prefix="quix-state-"),
        consumer_extra_config={"session.timeout.ms": 6000},
        loglevel="WARNING",
    )
    topic_in = app.topic(src, key_deserializer="str", value_deserializer="json")
    topic_out = app.topic(dst, key_serializer="str", value_serializer="json")
    seen = {"n": 0, "first": None}

    def step(value, key, timestamp, headers, state):
        if seen["first"] is None:
            seen["first"] = time.perf_counter()
        status, before = value["status"], state.get("status")
        valid = (before, status) in VALID
        count, total = state.get("count", 0) + 1, state.get("total", 0.0) + value["amount"]
        state.set("count", count)
        state.set("total", total)
        if valid:
            state.set("status", status)
        else:
            state.set("invalid", state.get("invalid", 0) + 1)
        seen["n"] += 1
        if seen["n"] >= args.events:
            app.stop()  # Quix commits its checkpoint on the way out
        return {"id": key, "count": count, "status": status if valid else before, "valid": valid, "total": total}

    sdf = app.dataframe(topic_in)
    sdf = sdf.apply(step, stateful=True, metadata=True)
    sdf.to_topic(topic_out)
    app.run()
    end = time.perf_counter()
    done = committed(args.bootstrap, group, src, args.partitions)
    return args.events / (end - seen["first"]), done


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--bootstrap", default="127.0.0.1:19092")
    a.add_argument("--events", type=int, default=200_000)
    a.add_argument("--keys", type=int, default=10_000)
    a.add_argument("--partitions", type=int, default=4)
    a.add_argument("--cases", default="at-least-once:0.1,at-least-once:1,exactly-once:0.1,exactly-once:1")
    args = a.parse_args()
    logging.getLogger("quixstreams").setLevel(logging.WARNING)
    print("Quix Streams status-tracker: %d events, %d keys, %d partitions, broker at %s" % (args.events, args.keys, args.partitions, args.bootstrap))
    for case in args.cases.split(","):
        guarantee, interval = case.split(":")
        eps, done = run(args, guarantee, float(interval))
        note = "" if done == args.events else "  (only %d offsets committed!)" % done
        print("%-44s %10.0f events/s%s" % ("quix %s, commit %d ms" % (guarantee, float(interval) * 1000), eps, note), flush=True)


if __name__ == "__main__":
    main()
