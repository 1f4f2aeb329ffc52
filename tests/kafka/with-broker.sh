#!/usr/bin/env bash
# Runs a command with a real Apache Kafka broker beside it, then stops the broker:
#
#   tests/kafka/with-broker.sh cargo nextest run
#
# The broker (tests/kafka/broker.sh, a fresh data directory, a free port) is the one every broker
# test uses: they read its address from TEST_KAFKA_BOOTSTRAP. Tests that need a cluster of their
# own (three nodes, a node killed) start it themselves through the same script.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="$(mktemp -d "${TMPDIR:-/tmp}/keyflow-kafka.XXXXXX")"
port=$(python3 -c 'import socket
for _ in range(50):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    c = socket.socket()
    try: c.bind(("127.0.0.1", p + 1)); c.close(); print(p); break
    except OSError: c.close()')
"$here/broker.sh" "$dir" "$port" > "$dir/broker.log" 2>&1 &
broker=$!
stop() { kill "$broker" 2>/dev/null && wait "$broker" 2>/dev/null; rm -rf "$dir"; }
trap stop EXIT
for _ in $(seq 1 120); do
  if ! kill -0 "$broker" 2>/dev/null; then
    echo "with-broker.sh: the Kafka broker exited:" >&2; cat "$dir/broker.log" >&2; exit 1
  fi
  (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.5
done
echo "with-broker.sh: Apache Kafka on 127.0.0.1:$port (log: $dir/broker.log)" >&2
export TEST_KAFKA_BOOTSTRAP="127.0.0.1:$port"
set +e
"$@"
rc=$?
exit $rc
