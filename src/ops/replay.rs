//! Replay for recovery, in the manner of `kafka-streams-application-reset`: move the group's
//! offsets back (to the earliest, an offset, a time, or a duration ago) and, with `wipe_state`,
//! void the state so it is rebuilt from the replayed source.
//!
//! Wiping writes a reset marker to every changelog partition (and deletes this machine's local
//! state directory). Every instance that restores a changelog, whatever local state it kept,
//! empties the store at the marker, so no other machine's disk needs cleaning. Without a wipe,
//! replayed inputs the state already holds are skipped by the applied-offset guard, and outputs
//! of newer inputs are produced again with the same idempotency keys.
//!
//! It refuses while the group has members, and when it cannot tell (a broker without
//! DescribeGroups, like librdkafka's mock) unless `force` says the operator has stopped them all.

use crate::kafka::Role;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::state::{changelog_topic, MARKER_HEADER, RESET_FORMAT, RESET_KEY};
use crate::Topology;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Where to move the offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Earliest,
    /// The same offset in every partition (clamped to what the partition holds).
    Offset(i64),
    /// The first record at or after this time, ms since the epoch.
    Time(i64),
}

/// One source partition's move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset now, if any.
    pub from: Option<i64>,
    pub to: i64,
}

/// What a replay changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub moves: Vec<Move>,
    /// Changelog partitions that get a reset marker (with `wipe_state`).
    pub resets: Vec<(String, i32)>,
    /// The local state directory that is deleted (with `wipe_state`), if it exists.
    pub local_state: Option<std::path::PathBuf>,
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for m in &self.moves {
            let from = m.from.map_or_else(|| "none".to_owned(), |o| o.to_string());
            writeln!(f, "  offsets  {}[{}]: {from} -> {}", m.topic, m.partition, m.to)?;
        }
        for (t, p) in &self.resets {
            writeln!(f, "  reset    {t}[{p}]: state before the marker is void")?;
        }
        if let Some(d) = &self.local_state {
            writeln!(f, "  delete   {}", d.display())?;
        }
        Ok(())
    }
}

/// Works out the plan without changing anything.
///
/// # Errors
/// The cluster cannot be read.
pub fn plan(config: &Config, topology: &Topology, target: Target, wipe_state: bool) -> anyhow::Result<Plan> {
    let consumer = group_consumer(config)?;
    let mut moves = Vec::new();
    let mut committed = TopicPartitionList::new();
    let mut partitions = Vec::new();
    for topic in topology.source_topics() {
        let md = consumer.fetch_metadata(Some(&topic), TIMEOUT)?;
        let ids: Vec<i32> = md.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
        anyhow::ensure!(!ids.is_empty(), "source topic `{topic}` does not exist");
        for p in ids {
            committed.add_partition(&topic, p);
            partitions.push((topic.clone(), p));
        }
    }
    let committed = consumer.committed_offsets(committed, TIMEOUT)?;
    for (topic, p) in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, *p, TIMEOUT)?;
        let from = committed.find_partition(topic, *p).and_then(|e| if let Offset::Offset(o) = e.offset() { Some(o) } else { None });
        let to = match target {
            Target::Earliest => low,
            Target::Offset(o) => o.clamp(low, high),
            Target::Time(ms) => {
                let mut q = TopicPartitionList::new();
                q.add_partition_offset(topic, *p, Offset::Offset(ms))?;
                let found = consumer.offsets_for_times(q, TIMEOUT)?;
                match found.find_partition(topic, *p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => high, // nothing at or after that time
                }
            }
        };
        moves.push(Move { topic: topic.clone(), partition: *p, from, to });
    }
    let mut resets = Vec::new();
    if wipe_state {
        for store in topology.stores() {
            let t = changelog_topic(&config.application_id, &store.name);
            let md = consumer.fetch_metadata(Some(&t), TIMEOUT)?;
            resets.extend(md.topics().iter().flat_map(|x| x.partitions().iter().map(|p| (t.clone(), p.id()))));
        }
        // The timer store's changelog too: timers belong to the state being rebuilt.
        let t = changelog_topic(&config.application_id, crate::state::TIMER_STORE);
        let md = consumer.fetch_metadata(Some(&t), TIMEOUT)?;
        resets.extend(md.topics().iter().flat_map(|x| x.partitions().iter().map(|p| (t.clone(), p.id()))));
        resets.sort();
        resets.dedup();
    }
    let dir = config.app_state_dir();
    Ok(Plan { moves, resets, local_state: (wipe_state && dir.exists()).then_some(dir) })
}

/// Refuses while the group has live members, or when that cannot be known and `force` is off.
///
/// # Errors
/// Members are alive, or liveness cannot be checked without `force`.
pub fn check_no_members(config: &Config, force: bool) -> anyhow::Result<()> {
    let consumer = group_consumer(config)?;
    match consumer.fetch_group_list(Some(&config.application_id), Duration::from_secs(10)) {
        Ok(list) => {
            let members: Vec<String> =
                list.groups().iter().flat_map(|g| g.members().iter().map(|m| format!("{} ({})", m.client_id(), m.client_host()))).collect();
            anyhow::ensure!(
                members.is_empty(),
                "instances of `{}` are alive: {}; stop them all first",
                config.application_id,
                members.join(", ")
            );
            Ok(())
        }
        Err(e) if force => {
            tracing::warn!(error = %e, "cannot list the group's members; going on because of --force");
            Ok(())
        }
        Err(e) => anyhow::bail!(
            "cannot tell whether instances of `{}` are alive (the broker did not describe the group: {e}); stop them all and pass --force",
            config.application_id
        ),
    }
}

/// Carries out `plan`: the offsets first, then the reset markers, then the local state. In
/// that order a failure part-way is harmless: offsets moved back over intact state only make the
/// guard skip the replayed inputs (run the replay again); reset markers without moved offsets
/// would lose the state of every input before the committed offsets.
///
/// # Errors
/// Kafka refused a step; the message says which. A group that still has members refuses the
/// offset commit (its sessions have not expired yet).
pub fn execute(config: &Config, topology: &Topology, plan: &Plan) -> anyhow::Result<()> {
    let mut tpl = TopicPartitionList::new();
    for m in &plan.moves {
        tpl.add_partition_offset(&m.topic, m.partition, Offset::Offset(m.to))?;
    }
    commit_as_member(config, topology, &tpl).map_err(|e| anyhow::anyhow!("committing the new offsets: {e}; nothing changed"))?;
    if !plan.resets.is_empty() {
        let producer: BaseProducer = config.clients().producer().create()?;
        for (topic, p) in &plan.resets {
            let headers = OwnedHeaders::new().insert(Header { key: MARKER_HEADER, value: Some(RESET_FORMAT) });
            // With a value, never a tombstone: the log cleaner deletes tombstones after
            // `delete.retention.ms`, and every key older than a deleted marker would come back.
            let record: BaseRecord<'_, [u8], [u8]> =
                BaseRecord::to(topic).partition(*p).key(RESET_KEY).payload(RESET_FORMAT.as_bytes()).headers(headers);
            crate::kafka::send_waiting(&producer, record)?;
        }
        producer
            .flush(TIMEOUT)
            .map_err(|e| anyhow::anyhow!("writing reset markers (the offsets are already moved; run the replay again): {e}"))?;
    }
    if let Some(dir) = &plan.local_state {
        std::fs::remove_dir_all(dir).map_err(|e| anyhow::anyhow!("deleting {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Commits `offsets` as the group's only member: joins it (without the static identity, which
/// would fence a real instance), waits to be assigned every partition, commits, leaves. Brokers
/// differ on commits from outside a group (Kafka accepts them for an empty group, librdkafka's
/// mock never does); a member's commit is accepted by both.
fn commit_as_member(config: &Config, topology: &Topology, offsets: &TopicPartitionList) -> anyhow::Result<()> {
    let mut c = crate::kafka::group_consumer_config(config, topology);
    c.remove("group.instance.id");
    let consumer: BaseConsumer = c.create()?;
    let topics = topology.source_topics();
    consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while consumer.assignment()?.count() < offsets.count() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "not assigned every partition within 60 s: is another member still in the group?"
        );
        // Records polled here are not processed and their positions are never committed.
        let _ = consumer.poll(Duration::from_millis(100));
    }
    consumer.commit(offsets, CommitMode::Sync)?;
    consumer.unsubscribe();
    Ok(())
}

fn group_consumer(config: &Config) -> anyhow::Result<BaseConsumer> {
    Ok(config.clients().config(Role::Consumer).set("group.id", &config.application_id).set("enable.auto.commit", "false").create()?)
}
