//! Layer (c): the runtime against Apache Kafka: group membership, rebalancing, restoration from
//! changelogs; and, on librdkafka's mock cluster (the one broker that can be told to fail
//! requests), injected broker errors.

mod common;

use std::time::Duration;

use common::*;
use keyflow::runtime::Guarantee;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn partitions_move_when_an_instance_leaves_and_state_is_restored_with_nothing_lost_or_doubled() {
    let s = setup(Guarantee::AtLeastOnce, Duration::from_millis(200));
    let w = workload(200, 4_000, 1);
    let half = w.events.len() / 2;
    produce(&s.bootstrap, &s.input, &w.events[..half]);
    let a = s.start("a");
    let b = s.start("b");
    let group = s.config.application_id.clone();
    wait_until("both instances to own partitions", MINUTE, || {
        !a.status().snapshot().assignment.is_empty() && !b.status().snapshot().assignment.is_empty()
    });
    wait_until("the first half to be committed", MINUTE, || committed(&s.bootstrap, &group, &s.input) >= half as i64);
    let moved = b.status().snapshot().assignment;
    b.stop();
    b.join().unwrap();
    let c = s.start("c");
    produce(&s.bootstrap, &s.input, &w.events[half..]);
    wait_until("everything to be committed", MINUTE, || committed(&s.bootstrap, &group, &s.input) >= w.events.len() as i64);
    let (sa, sc) = (a.status().snapshot(), c.status().snapshot());
    a.stop();
    c.stop();
    a.join().unwrap();
    c.join().unwrap();

    assert!(!moved.is_empty());
    assert!(sa.restored_records + sc.restored_records > 0, "the moved partitions were restored from their changelogs");
    assert_exact(&w.expected, &final_states(&s.bootstrap, &s.output));
    assert_eq!(read_all(&s.bootstrap, &s.config.dlq_topic()).len(), w.malformed, "one dead letter per malformed record");
}

#[test]
fn a_killed_instance_loses_no_update_and_none_is_applied_twice() {
    let s = setup(Guarantee::AtLeastOnce, Duration::from_millis(300));
    let w = workload(100, 3_000, 2);
    let a = s.start("a");
    let b = s.start("b");
    wait_until("both instances to own partitions", MINUTE, || {
        !a.status().snapshot().assignment.is_empty() && !b.status().snapshot().assignment.is_empty()
    });
    produce(&s.bootstrap, &s.input, &w.events);
    // Kill a while it holds processed but uncommitted work.
    wait_until("a to process", MINUTE, || a.status().snapshot().processed > 300);
    a.kill();
    a.join().unwrap();
    let group = s.config.application_id.clone();
    wait_until("b to take over and commit everything", Duration::from_secs(90), || {
        committed(&s.bootstrap, &group, &s.input) >= w.events.len() as i64
    });
    b.stop();
    b.join().unwrap();
    assert_exact(&w.expected, &final_states(&s.bootstrap, &s.output));
}

#[test]
fn exactly_once_restart_on_an_empty_disk_restores_the_state_and_applies_nothing_twice() {
    let s = setup(Guarantee::ExactlyOnceV2, Duration::from_millis(100));
    let w = workload(100, 2_000, 3);
    produce(&s.bootstrap, &s.input, &w.events);
    s.run_until_committed("a", w.events.len() as i64);
    // A fresh state directory: everything comes from the changelogs, and the group's committed
    // offsets (stored with the transactions) say nothing is left to process.
    let b = s.start("b");
    wait_running("b to restore and run every task", &b);
    // One more input, for a document the state already holds: applied on the restored state.
    let (ts, doc, _) = w.events.iter().find(|(_, d, _)| w.expected.contains_key(d)).cloned().unwrap();
    produce(&s.bootstrap, &s.input, &[(ts + 1_000_000, doc.clone(), br#"{"status":"approved","amount":5}"#.to_vec())]);
    wait_until("b to process it", MINUTE, || b.status().snapshot().processed >= 1);
    let sb = b.status().snapshot();
    b.stop();
    b.join().unwrap();
    assert!(sb.restored_records > 0);
    assert_eq!(sb.processed, 1, "nothing was applied a second time");
    let mut expected = w.expected.clone();
    let e = expected.get_mut(&doc).unwrap();
    e.0 += 1;
    e.1 += 5.0;
    assert_exact(&expected, &final_states(&s.bootstrap, &s.output));
}

#[test]
fn injected_broker_errors_are_recovered_without_losing_or_doubling_updates() {
    let s = setup_on_mock(Guarantee::AtLeastOnce, Duration::from_millis(100));
    let w = workload(100, 3_000, 4);
    let a = s.start("a");
    wait_until("a to own partitions", MINUTE, || a.status().snapshot().assignment.len() == PARTITIONS as usize);
    // Produce requests fail and are retried by librdkafka; one offset commit is rejected with a
    // stale generation, which keyflow treats as task-migrated: drop the tasks and rejoin.
    s.broker.mock().request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 3]);
    s.broker.mock().request_errors(RDKafkaApiKey::OffsetCommit, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION]);
    produce(&s.bootstrap, &s.input, &w.events);
    let group = s.config.application_id.clone();
    wait_until("everything to be committed", Duration::from_secs(90), || {
        committed(&s.bootstrap, &group, &s.input) >= w.events.len() as i64
    });
    let sa = a.status().snapshot();
    a.stop();
    a.join().unwrap();
    assert_eq!(sa.migrations, 1, "the stale-generation commit made the instance rejoin");
    assert_exact(&w.expected, &final_states(&s.bootstrap, &s.output));
}
