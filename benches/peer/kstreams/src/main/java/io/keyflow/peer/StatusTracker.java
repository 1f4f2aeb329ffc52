package io.keyflow.peer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.time.Duration;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * keyflow's status-tracker workload as a Kafka Streams application, the peer of benches/peer.rs.
 *
 * <p>Input: key = document id, JSON value {"status": "...", "amount": n}. State per document in a
 * persistent (RocksDB) key-value store, as JSON: count, last valid status, running total, invalid
 * transitions. Output: one JSON record per input, {"id", "count", "status", "valid", "total"},
 * exactly what keyflow's built-in status-tracker emits. Everything else is Kafka Streams' default
 * (one stream thread, record cache on, RocksDB config as shipped), as a new user would run it.
 *
 * <pre>
 * java -cp 'target/classes:target/lib/*' io.keyflow.peer.StatusTracker --bootstrap HOST:PORT \
 *     --input events --output statuses --application-id peer --state-dir /tmp/ks \
 *     [--guarantee exactly_once_v2|at_least_once] [--commit-ms 100] [--threads 1]
 * </pre>
 */
public final class StatusTracker {
    static final String STORE = "documents";
    static final ObjectMapper JSON = new ObjectMapper();
    static final Set<String> VALID = Set.of("|uploaded", "uploaded|scanned", "scanned|classified", "classified|approved", "classified|rejected");

    /** The transition; mirrors keyflow's status_tracker::apply. */
    static final class Tracker implements Processor<String, String, String, String> {
        private ProcessorContext<String, String> context;
        private KeyValueStore<String, String> store;

        @Override
        public void init(ProcessorContext<String, String> context) {
            this.context = context;
            this.store = context.getStateStore(STORE);
        }

        @Override
        public void process(Record<String, String> record) {
            try {
                JsonNode event = JSON.readTree(record.value());
                String status = event.get("status").asText();
                double amount = event.path("amount").asDouble(0.0);
                String before = store.get(record.key());
                ObjectNode state = before == null ? JSON.createObjectNode() : (ObjectNode) JSON.readTree(before);
                String from = state.hasNonNull("status") ? state.get("status").asText() : "";
                boolean valid = VALID.contains(from + "|" + status);
                long count = state.path("count").asLong(0) + 1;
                double total = state.path("total").asDouble(0.0) + amount;
                state.put("count", count);
                state.put("total", total);
                if (valid) {
                    state.put("status", status);
                } else {
                    state.put("invalid", state.path("invalid").asLong(0) + 1);
                }
                store.put(record.key(), JSON.writeValueAsString(state));
                ObjectNode out = JSON.createObjectNode();
                out.put("id", record.key());
                out.put("count", count);
                out.set("status", state.get("status"));
                out.put("valid", valid);
                out.put("total", total);
                context.forward(record.withValue(JSON.writeValueAsString(out)));
            } catch (Exception e) {
                throw new RuntimeException("bad event " + record.key() + ": " + record.value(), e);
            }
        }
    }

    public static void main(String[] argv) {
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        Map<String, String> args = new HashMap<>();
        for (int i = 0; i + 1 < argv.length; i += 2) {
            args.put(argv[i].replaceFirst("^--", ""), argv[i + 1]);
        }
        Properties props = new Properties();
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, required(args, "bootstrap"));
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, required(args, "application-id"));
        props.put(StreamsConfig.STATE_DIR_CONFIG, required(args, "state-dir"));
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, args.getOrDefault("guarantee", StreamsConfig.EXACTLY_ONCE_V2));
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, args.getOrDefault("commit-ms", "100"));
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, args.getOrDefault("threads", "1"));
        props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, "1");
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        // Static membership, so that close() can take the member out of the group (Kafka Streams
        // leaves a group on close only as a static member); a restart then joins at once
        // instead of waiting out session.timeout.ms (45 s) for its old member to expire.
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG), required(args, "application-id") + "-1");

        StreamsBuilder builder = new StreamsBuilder();
        builder.addStateStore(Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore(STORE), Serdes.String(), Serdes.String()));
        builder.stream(required(args, "input"), Consumed.with(Serdes.String(), Serdes.String()))
            .process(Tracker::new, STORE)
            .to(required(args, "output"), Produced.with(Serdes.String(), Serdes.String()));

        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        streams.setUncaughtExceptionHandler(e -> {
            e.printStackTrace();
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        // Leave the group on the way out, as keyflow and the pipe do.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> streams.close(new KafkaStreams.CloseOptions().leaveGroup(true).timeout(Duration.ofSeconds(30)))));
        streams.start();
    }

    private static String required(Map<String, String> args, String name) {
        String v = args.get(name);
        if (v == null) {
            System.err.println("missing --" + name);
            System.exit(2);
        }
        return v;
    }
}
