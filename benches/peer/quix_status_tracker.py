"""keyflow's status-tracker workload on Quix Streams, a peer of the benchmark in benches/peer/main.rs.

The same per-key state machine as keyflow's built-in status-tracker (count, last valid status,
running total, invalid transitions) over JSON events {"status", "amount"}, one JSON output per
input: {"id", "count", "status", "valid", "total"}. It runs until SIGTERM (Quix commits its
checkpoint on the way out); the benchmark starts it, feeds it and measures it from outside, the
same way as every other system.

    pip install quixstreams==3.28.1
    python3 benches/peer/quix_status_tracker.py serve --bootstrap HOST:PORT --input events \\
        --output statuses --group peer --state-dir /tmp/quix [--guarantee exactly-once] [--commit-interval 0.1]
"""

import argparse
import logging

from quixstreams import Application

VALID = {(None, "uploaded"), ("uploaded", "scanned"), ("scanned", "classified"), ("classified", "approved"), ("classified", "rejected")}


def step(value, key, timestamp, headers, state):
    status, before = value["status"], state.get("status")
    valid = (before, status) in VALID
    count, total = state.get("count", 0) + 1, state.get("total", 0.0) + value.get("amount", 0)
    state.set("count", count)
    state.set("total", total)
    if valid:
        state.set("status", status)
    else:
        state.set("invalid", state.get("invalid", 0) + 1)
    return {"id": key, "count": count, "status": status if valid else before, "valid": valid, "total": total}


def serve(args):
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee=args.guarantee,
        commit_interval=args.commit_interval,
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    topic_in = app.topic(args.input, key_deserializer="str", value_deserializer="json")
    topic_out = app.topic(args.output, key_serializer="str", value_serializer="json")
    sdf = app.dataframe(topic_in)
    sdf = sdf.apply(step, stateful=True, metadata=True)
    sdf.to_topic(topic_out)
    app.run()


def main():
    a = argparse.ArgumentParser()
    a.add_argument("mode", choices=["serve"])
    a.add_argument("--bootstrap", required=True)
    a.add_argument("--input", required=True)
    a.add_argument("--output", required=True)
    a.add_argument("--group", required=True)
    a.add_argument("--state-dir", required=True)
    a.add_argument("--guarantee", default="exactly-once", choices=["exactly-once", "at-least-once"])
    a.add_argument("--commit-interval", type=float, default=0.1)
    args = a.parse_args()
    logging.getLogger("quixstreams").setLevel(logging.WARNING)
    serve(args)


if __name__ == "__main__":
    main()
