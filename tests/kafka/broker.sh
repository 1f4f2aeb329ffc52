#!/usr/bin/env bash
# Runs one node of a real Apache Kafka (KRaft, broker and controller in one JVM) in the
# foreground, from the jars `.ci/setup` copies from Maven Central. The tests start their brokers
# through this script, and so can you:
#
#   tests/kafka/broker.sh /tmp/kafka 9092          # a single node on 127.0.0.1:9092
#
# Arguments: a data directory (formatted on first use, reused after) and the client port; the
# controller listens on the next port. For a cluster, run it once per node with
# KAFKA_NODE_ID=<n> and KAFKA_VOTERS=1@127.0.0.1:<cport1>,2@... (the same on every node).
# KAFKA_SERVER_PROPS appends broker settings (one `key=value` per line). For a secured client
# listener: KAFKA_LISTENER_PROTOCOL (SASL_SSL, SSL, SASL_PLAINTEXT; default PLAINTEXT) with its
# settings in KAFKA_SERVER_PROPS, and KAFKA_SCRAM: SCRAM credentials created when the node is
# formatted (space-separated `SCRAM-SHA-512=[name=<user>,password=<password>]`).
set -euo pipefail
dir=${1:?usage: broker.sh <data dir> <port>}
port=${2:?usage: broker.sh <data dir> <port>}
here="$(cd "$(dirname "$0")" && pwd)"
libs="${KAFKA_LIBS:-$("$here/libs.sh")}"
[ -d "$libs" ] || { echo "broker.sh: no Kafka jars at $libs: run .ci/setup" >&2; exit 2; }
java="${JAVA:-java}"
node="${KAFKA_NODE_ID:-1}"
cport=$((port + 1))
proto="${KAFKA_LISTENER_PROTOCOL:-PLAINTEXT}"
mkdir -p "$dir"
props="$dir/server.properties"
if [ ! -f "$props" ]; then
  {
    echo "process.roles=broker,controller"
    echo "node.id=$node"
    if [ -n "${KAFKA_VOTERS:-}" ]; then
      echo "controller.quorum.voters=$KAFKA_VOTERS"
      rf=3
    else
      echo "controller.quorum.bootstrap.servers=127.0.0.1:$cport"
      rf=1
    fi
    cat <<PROPS
listeners=$proto://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=$proto://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=$proto
listener.security.protocol.map=$proto:$proto,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=4
offsets.topic.num.partitions=8
offsets.topic.replication.factor=$rf
transaction.state.log.num.partitions=8
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$(( rf > 1 ? 2 : 1 ))
group.initial.rebalance.delay.ms=0
# Keep records regardless of their timestamps: test workloads carry fixed timestamps from 2023,
# which the default 7-day retention deletes at the first check (30 s after start).
log.retention.ms=-1
# Compaction within seconds on topics that ask for it (segment.ms, min.cleanable.dirty.ratio),
# with a small dedupe buffer (the default is 128 MiB per cleaner thread).
log.cleaner.backoff.ms=1000
log.cleaner.dedupe.buffer.size=4194304
# Look for timed-out transactions every second (default 10 s).
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
PROPS
    printf '%s\n' "${KAFKA_SERVER_PROPS:-}"
  } > "$props"
fi
cat > "$dir/log4j2.properties" <<'LOG'
rootLogger.level=WARN
rootLogger.appenderRef.out.ref=out
appender.out.type=Console
appender.out.name=out
appender.out.layout.type=PatternLayout
appender.out.layout.pattern=[%d] %p %m (%c)%n
LOG
if [ ! -f "$dir/data/meta.properties" ]; then
  # Every node of one cluster shares its cluster id: KAFKA_CLUSTER_ID, else a fixed one.
  id="${KAFKA_CLUSTER_ID:-a2V5Zmxvdy10ZXN0LWthZg}"
  if [ -n "${KAFKA_VOTERS:-}" ]; then standalone=(); else standalone=(--standalone); fi
  scram=()
  read -r -a creds <<< "${KAFKA_SCRAM:-}"   # split on spaces, never globbed
  for c in "${creds[@]}"; do scram+=(--add-scram "$c"); done
  "$java" -cp "$libs/*" kafka.tools.StorageTool format "${standalone[@]}" "${scram[@]}" -t "$id" -c "$props" >/dev/null
fi
exec "$java" -Xms256m -Xmx${KAFKA_HEAP:-768m} -XX:+UseSerialGC \
  -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$libs/*" kafka.Kafka "$props"
