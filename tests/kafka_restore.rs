//! Restoration on Apache Kafka, where the log cleaner really compacts changelogs: a task restored
//! on an empty disk from a compacted changelog has exactly the state it had.

mod common;

use std::time::{Duration, Instant};

use common::*;
use keyflow::runtime::Guarantee;

const MINUTE: Duration = Duration::from_secs(60);

/// Changelogs the log cleaner compacts within seconds of a write.
const AGGRESSIVE_CLEANING: [(&str, &str); 4] =
    [("segment.ms", "500"), ("min.cleanable.dirty.ratio", "0.01"), ("min.compaction.lag.ms", "0"), ("max.compaction.lag.ms", "1000")];

/// Records in the documents store's changelog (the timer store's is mostly tombstones, which the
/// cleaner keeps for `delete.retention.ms`).
fn changelog_records(s: &Setup) -> usize {
    read_topic(
        &s.bootstrap,
        &keyflow::state::changelog_topic(&s.config.application_id, keyflow::builtin::status_tracker::STORE),
        "read_committed",
    )
    .len()
}

fn restore_from_compacted_changelogs(guarantee: Guarantee) {
    let s = setup_compacted(guarantee, Duration::from_millis(100), &AGGRESSIVE_CLEANING);
    // Every document is updated across many commits, fed over several segments, so the cleaner
    // leaves keys whose last write belongs to a commit whose position marker it removed.
    let w = workload(300, 6_000, 11);
    let a = s.start("a");
    wait_running("a to run every task", &a);
    produce_paced(&s.bootstrap, &s.input, &w.events, Some(1_500));
    let group = s.config.application_id.clone();
    wait_until("a to commit everything", MINUTE, || committed(&s.bootstrap, &group, &s.input) >= w.events.len() as i64);
    a.stop();
    a.join().unwrap();

    // Wait until the cleaner has compacted the changelog to under half of what was written (a
    // few more writes roll the segments it may clean, if it has not yet).
    let written = || -> i64 {
        let topic = keyflow::state::changelog_topic(&s.config.application_id, keyflow::builtin::status_tracker::STORE);
        let c: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", &s.bootstrap).create().unwrap();
        (0..PARTITIONS).map(|p| rdkafka::consumer::Consumer::fetch_watermarks(&c, &topic, p, Duration::from_secs(10)).unwrap().1).sum()
    };
    let (ts, doc, _) = w.events.iter().find(|(_, d, _)| w.expected.contains_key(d)).cloned().unwrap();
    let mut expected = w.expected.clone();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut nudges = 0;
    while changelog_records(&s) as i64 * 2 > written() {
        assert!(
            Instant::now() < deadline,
            "the log cleaner never compacted the changelog: {} records of {} written",
            changelog_records(&s),
            written()
        );
        let b = s.start("nudge");
        produce(&s.bootstrap, &s.input, &[(ts + 1_000_000 + nudges, doc.clone(), br#"{"status":"scanned","amount":1}"#.to_vec())]);
        nudges += 1;
        wait_until("the nudge to be committed", MINUTE, || committed(&s.bootstrap, &group, &s.input) >= w.events.len() as i64 + nudges);
        b.stop();
        b.join().unwrap();
        std::thread::sleep(Duration::from_secs(2));
    }
    let e = expected.get_mut(&doc).unwrap();
    e.0 += nudges as u64;
    e.1 += nudges as f64;
    eprintln!("changelog compacted: {} records of {} written", changelog_records(&s), written());

    // An empty disk: the state comes from the compacted changelogs alone. One more input per
    // document shows, in its output, the count and total the restored state holds.
    let c = s.start("c");
    wait_running("c to restore and run every task", &c);
    let (more, expected) = one_more_per_document(&expected, ts + 2_000_000);
    produce(&s.bootstrap, &s.input, &more);
    let target = w.events.len() as i64 + nudges + more.len() as i64;
    wait_until("c to commit the new inputs", MINUTE, || committed(&s.bootstrap, &group, &s.input) >= target);
    c.stop();
    c.join().unwrap();
    assert_exact(&expected, &final_states(&s.bootstrap, &s.output));
}

#[test]
fn exactly_once_restore_from_a_compacted_changelog_equals_the_state_before() {
    restore_from_compacted_changelogs(Guarantee::ExactlyOnceV2);
}

#[test]
fn at_least_once_restore_from_a_compacted_changelog_equals_the_state_before() {
    restore_from_compacted_changelogs(Guarantee::AtLeastOnce);
}

#[test]
fn a_store_that_cannot_be_opened_is_wiped_and_restored_and_its_partition_waits_meanwhile() {
    let s = setup(Guarantee::ExactlyOnceV2, Duration::from_millis(100));
    let w = workload(100, 2_000, 12);
    produce(&s.bootstrap, &s.input, &w.events);
    let group = s.config.application_id.clone();
    s.run_until_committed("a", w.events.len() as i64);
    // Every task's documents store is unreadable now: a file where its RocksDB directory was.
    let app_dir = s.state_dir("a").join(&s.config.application_id);
    for p in 0..PARTITIONS {
        let store = app_dir.join(format!("0_{p}")).join(keyflow::builtin::status_tracker::STORE);
        std::fs::remove_dir_all(&store).unwrap();
        std::fs::write(&store, b"not a RocksDB directory").unwrap();
    }
    // The same instance comes back on that disk: each task is wiped and restored from its
    // changelog before its partition is read; one more input per document shows the state.
    let a = s.start("a");
    let (ts, _, _) = w.events.last().cloned().unwrap();
    let (more, expected) = one_more_per_document(&w.expected, ts + 1_000);
    produce(&s.bootstrap, &s.input, &more);
    let target = (w.events.len() + more.len()) as i64;
    wait_until("a to commit the new inputs", MINUTE, || committed(&s.bootstrap, &group, &s.input) >= target);
    let snap = a.status().snapshot();
    a.stop();
    a.join().unwrap();
    assert!(snap.restored_records > 0, "the wiped stores were restored from their changelogs");
    assert_exact(&expected, &final_states(&s.bootstrap, &s.output));
}

#[test]
fn a_task_does_not_run_before_its_changelog_is_restored_past_a_transaction_still_open_at_assignment() {
    // The previous owner's last transaction is committed, but its markers have not reached the
    // changelog yet: to a read_committed reader the changelog ends before that transaction's
    // records, while the group already hands out its offsets. A transaction held open on the
    // changelog is the same view, held as long as the test likes: the new owner must wait for it.
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let s = setup(Guarantee::ExactlyOnceV2, Duration::from_millis(100));
    let w = workload(50, 500, 13);
    produce(&s.bootstrap, &s.input, &w.events);
    let group = s.config.application_id.clone();
    s.run_until_committed("a", w.events.len() as i64);

    let changelog = keyflow::state::changelog_topic(&group, keyflow::builtin::status_tracker::STORE);
    let holder: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &s.bootstrap)
        .set("transactional.id", unique("holder"))
        .set("transaction.timeout.ms", "60000")
        .create()
        .unwrap();
    holder.init_transactions(Duration::from_secs(30)).unwrap();
    holder.begin_transaction().unwrap();
    for p in 0..PARTITIONS {
        holder.send(BaseRecord::<[u8], [u8]>::to(&changelog).partition(p).key(&b"pending"[..])).map_err(|(e, _)| e).unwrap();
    }
    holder.flush(Duration::from_secs(30)).unwrap();

    let b = s.start("b");
    wait_until("b to be assigned every task", MINUTE, || b.status().snapshot().assignment.len() == PARTITIONS as usize);
    std::thread::sleep(Duration::from_secs(5));
    assert!(b.status().snapshot().restoring, "b ran its tasks before reading past the open transaction");
    holder.abort_transaction(Duration::from_secs(30)).unwrap();
    wait_until("b to finish restoring once the transaction ended", MINUTE, || !b.status().snapshot().restoring);
    b.stop();
    b.join().unwrap();
}

#[test]
fn at_least_once_changelogs_are_created_with_a_compaction_lag() {
    // See `kafka::AT_LEAST_ONCE_COMPACTION_LAG_MS`: the cleaner must not run between a crash and
    // the commit that repairs the crashed attempt's writes.
    use keyflow::kafka::{internal_topics, AdminProvisioner, Provisioner};
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    let kafka = common::kafka_broker::shared();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &kafka.bootstrap).create().unwrap();
    for (guarantee, lag) in
        [(Guarantee::AtLeastOnce, Some(keyflow::kafka::AT_LEAST_ONCE_COMPACTION_LAG_MS)), (Guarantee::ExactlyOnceV2, None)]
    {
        let dir = tempfile::tempdir().unwrap();
        let mut config = keyflow::config::Config::for_application(&unique("lag"), &kafka.bootstrap, dir.path());
        config.processing_guarantee = guarantee;
        config.replication_factor = 1;
        let topology = keyflow::builtin::status_tracker::topology("in", "out", 1_000);
        let topics = internal_topics(&config, &topology, 1);
        AdminProvisioner::new(&config).unwrap().ensure(&topics).unwrap();
        for t in topics.iter().filter(|t| t.compacted) {
            let described = rt.block_on(admin.describe_configs([&ResourceSpecifier::Topic(&t.name)], &AdminOptions::new())).unwrap();
            let resource = described.into_iter().next().unwrap().unwrap();
            let got = resource.get("min.compaction.lag.ms").and_then(|e| e.value.clone());
            match lag {
                Some(lag) => assert_eq!(got.as_deref(), Some(lag), "{guarantee:?}: {}", t.name),
                None => assert_eq!(got.as_deref(), Some("0"), "{guarantee:?}: {} keeps Kafka's default", t.name),
            }
            assert_eq!(resource.get("cleanup.policy").and_then(|e| e.value.as_deref()), Some("compact"));
        }
    }
}
