//! The Kafka edge: client settings keyflow owns, and topic provisioning through one abstraction
//! (the admin API on a real broker, `create_topic` on librdkafka's mock cluster, whose admin API
//! does not answer CreateTopics).

pub mod clients;
pub mod read;

pub use clients::{Clients, Role};

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::ClientConfig;

use crate::config::Config;
use crate::runtime::Guarantee;
use crate::state::{changelog_topic, TIMER_STORE};
use crate::topology::Topology;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create Kafka client: {0}")]
    Client(rdkafka::error::KafkaError),
    #[error("cannot read metadata of topic `{topic}`: {detail}")]
    Metadata { topic: String, detail: String },
    #[error("cannot create topic `{topic}`: {detail}")]
    CreateTopic { topic: String, detail: String },
    #[error("source topics are not co-partitioned: {0}")]
    CoPartitioning(String),
}

/// Sends `record`, waiting (serving delivery reports) while librdkafka's queue is full.
///
/// # Errors
/// Any other send error.
pub fn send_waiting<C, K, P>(
    producer: &rdkafka::producer::BaseProducer<C>,
    mut record: rdkafka::producer::BaseRecord<'_, K, P>,
) -> Result<(), rdkafka::error::KafkaError>
where
    C: rdkafka::producer::ProducerContext<DeliveryOpaque = ()>,
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                producer.poll(Duration::from_millis(5));
                record = back;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// A client context that does not log end-of-partition as an error: restore consumers and
/// readers ask for those events on purpose.
pub struct QuietEof;

impl rdkafka::ClientContext for QuietEof {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        if !matches!(error, KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)) {
            tracing::error!(%error, reason, "librdkafka error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for QuietEof {}

/// A topic keyflow needs to exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// Compacted (changelogs) or deleted by retention.
    pub compacted: bool,
}

/// Creates topics that do not exist yet; existing ones are left as they are.
pub trait Provisioner {
    /// # Errors
    /// [`Error::CreateTopic`].
    fn ensure(&self, topics: &[TopicSpec]) -> Result<(), Error>;
}

/// How long the log cleaner leaves a changelog record alone under at-least-once
/// (`min.compaction.lag.ms` of the changelogs keyflow creates). Without a transaction to hide
/// them, a crashed attempt's changelog writes stay visible until the next commit repairs them;
/// a cleaner run before that could drop the committed value they supersede. Fifteen minutes
/// outlasts a crash, a restart and the next commit by far.
pub const AT_LEAST_ONCE_COMPACTION_LAG_MS: &str = "900000";

/// Provisioning through the admin API (real Kafka, tansu).
pub struct AdminProvisioner {
    admin: AdminClient<DefaultClientContext>,
    replication: i32,
    timeout: Duration,
    /// `min.compaction.lag.ms` of created changelogs, under at-least-once.
    compaction_lag: Option<&'static str>,
}

impl AdminProvisioner {
    /// # Errors
    /// [`Error::Client`].
    pub fn new(config: &Config) -> Result<Self, Error> {
        let admin = config.clients().config(Role::Admin).create().map_err(Error::Client)?;
        let compaction_lag = (config.processing_guarantee == Guarantee::AtLeastOnce).then_some(AT_LEAST_ONCE_COMPACTION_LAG_MS);
        Ok(Self { admin, replication: config.replication_factor, timeout: config.call_timeout(), compaction_lag })
    }
}

impl AdminProvisioner {
    /// The largest record each of `topics` takes: the producer's `message.max.bytes`, lowered to a topic's `max.message.bytes` where that is smaller, as
    /// the broker describes it. A topic the broker cannot describe keeps the producer's limit
    /// (logged): the broker may then still refuse a record, which aborts and is retried.
    ///
    /// With a compression codec only the producer's limit is checked: the broker compares a
    /// topic's `max.message.bytes` with the compressed batch, which the task cannot know.
    pub fn record_limits(&self, config: &Config, topics: &[String]) -> crate::runtime::RecordLimits {
        use rdkafka::admin::ResourceSpecifier;
        let mut limits = crate::runtime::RecordLimits::new(config.producer_max_bytes());
        let codec = config.producer.0.get("compression.type").or(config.producer.0.get("compression.codec"));
        if codec.is_some_and(|c| c != "none") {
            return limits;
        }
        let specs: Vec<ResourceSpecifier<'_>> = topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
        let opts = AdminOptions::new().request_timeout(Some(self.timeout));
        let described = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(self.admin.describe_configs(specs.iter(), &opts)).map_err(|e| e.to_string()));
        let results = match described {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot describe the topics' max.message.bytes; records are checked against message.max.bytes only");
                return limits;
            }
        };
        for (topic, result) in topics.iter().zip(results) {
            let max = result.ok().and_then(|r| r.get("max.message.bytes")?.value.as_deref()?.parse::<usize>().ok());
            match max {
                Some(max) => limits = limits.with_topic(topic, max),
                None => tracing::warn!(
                    topic,
                    "cannot read the topic's max.message.bytes; its records are checked against message.max.bytes only"
                ),
            }
        }
        limits
    }
}

impl Provisioner for AdminProvisioner {
    fn ensure(&self, topics: &[TopicSpec]) -> Result<(), Error> {
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| {
                let n = NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(self.replication));
                match (t.compacted, self.compaction_lag) {
                    (false, _) => n,
                    (true, None) => n.set("cleanup.policy", "compact"),
                    (true, Some(lag)) => n.set("cleanup.policy", "compact").set("min.compaction.lag.ms", lag),
                }
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(self.timeout));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::CreateTopic { topic: "*".into(), detail: e.to_string() })?;
        let results = rt
            .block_on(self.admin.create_topics(new.iter(), &opts))
            .map_err(|e| Error::CreateTopic { topic: "*".into(), detail: e.to_string() })?;
        for r in results {
            match r {
                Ok(_) => {}
                Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(Error::CreateTopic { topic, detail: code.to_string() }),
            }
        }
        Ok(())
    }
}

/// Provisioning on librdkafka's in-process mock cluster.
pub struct MockProvisioner<'a, C: rdkafka::ClientContext>(pub &'a MockCluster<'a, C>);

impl<C: rdkafka::ClientContext> Provisioner for MockProvisioner<'_, C> {
    fn ensure(&self, topics: &[TopicSpec]) -> Result<(), Error> {
        for t in topics {
            // The mock has no compaction; it keeps every changelog record, which restores the same state.
            self.0
                .create_topic(&t.name, t.partitions, 1)
                .map_err(|e| Error::CreateTopic { topic: t.name.clone(), detail: e.to_string() })?;
        }
        Ok(())
    }
}

/// Partition count of each source topic, checked to be equal (tasks span partition `p` of every
/// source topic, so the topics must be co-partitioned, as in Kafka Streams).
///
/// # Errors
/// [`Error::Metadata`] when a topic is missing, [`Error::CoPartitioning`] when counts differ.
pub fn source_partitions(config: &Config, topology: &Topology) -> Result<i32, Error> {
    let consumer: BaseConsumer = config.clients().config(Role::Consumer).create().map_err(Error::Client)?;
    let mut counts = Vec::new();
    for topic in topology.source_topics() {
        let md = consumer
            .fetch_metadata(Some(&topic), config.call_timeout())
            .map_err(|e| Error::Metadata { topic: topic.clone(), detail: e.to_string() })?;
        let n = md.topics().first().filter(|t| t.error().is_none()).map_or(0, |t| t.partitions().len() as i32);
        if n == 0 {
            return Err(Error::Metadata { topic, detail: "topic does not exist (create it before starting keyflow)".into() });
        }
        counts.push((topic, n));
    }
    let first = counts[0].1;
    if counts.iter().any(|(_, n)| *n != first) {
        return Err(Error::CoPartitioning(counts.iter().map(|(t, n)| format!("{t}: {n}")).collect::<Vec<_>>().join(", ")));
    }
    Ok(first)
}

/// The internal topics of an application: one compacted changelog per store (timers included),
/// partitioned like the sources, and the dead-letter topic.
pub fn internal_topics(config: &Config, topology: &Topology, partitions: i32) -> Vec<TopicSpec> {
    let mut t: Vec<TopicSpec> = topology
        .stores()
        .iter()
        .map(|s| s.name.as_str())
        .chain([TIMER_STORE])
        .map(|s| TopicSpec { name: changelog_topic(&config.application_id, s), partitions, compacted: true })
        .collect();
    t.push(TopicSpec { name: config.dlq_topic(), partitions, compacted: false });
    // Where redrives and purges are recorded (`ops::dlq`): compacted, or the markers would expire
    // with the retention and handled letters become redrivable again.
    t.push(TopicSpec { name: crate::ops::dlq::handled_topic(&config.dlq_topic()), partitions: 1, compacted: true });
    t
}

/// `bootstrap.servers` and `[kafka]`: the base of the stream thread's clients, under keyflow's
/// own settings and the user's of the role.
fn base_client_config(config: &Config) -> ClientConfig {
    config.clients().base()
}

/// How long librdkafka waits before fetching a partition again once its pre-fetch queue passed
/// `queued.min.messages` (librdkafka's default: 1 s). Changelog and event records are small, so
/// one fetch fills that queue, and a consumer that drains it in less than a second then sat idle
/// for the rest: a restore of 3M records spent 8 of its 11 s waiting (3 s with this value).
const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// The group consumer. Offsets are committed only by the commit protocol.
pub fn group_consumer_config(config: &Config, topology: &Topology) -> ClientConfig {
    let mut c = base_client_config(config);
    // Cooperative-sticky does not keep partition p of several topics together; range does, so a
    // topology with several source topics (a task spans all of them) uses range.
    let strategy = if topology.source_topics().len() > 1 { "range" } else { "cooperative-sticky" };
    c.set("group.id", &config.application_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", strategy)
        .set("isolation.level", isolation(config))
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
        // Consumer lag for the metrics (`ClientContext::stats`).
        .set("statistics.interval.ms", "5000");
    if let Some(id) = &config.instance_id {
        c.set("group.instance.id", id);
    }
    config.clients().apply_role(&mut c, Role::Consumer);
    c
}

/// A consumer that reads changelogs by assignment, without a group.
pub fn restore_consumer_config(config: &Config) -> ClientConfig {
    let mut c = base_client_config(config);
    c.set("group.id", format!("{}-restore", config.application_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        // A checkpoint no longer in the changelog is an error the restorer handles by wiping the
        // store (task-corrupted), never a silent jump to the start onto state that is not empty.
        .set("auto.offset.reset", "error")
        .set("isolation.level", isolation(config))
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
    for (k, v) in &config.consumer.0 {
        if k != "partition.assignment.strategy" {
            c.set(k, v);
        }
    }
    c
}

/// keyflow's `transaction.timeout.ms` unless `[producer]` sets one.
pub const TRANSACTION_TIMEOUT_MS: u64 = 10_000;

/// The instance's producer: transactional under exactly-once, idempotent always.
/// `process_id` is `instance.id` or the id kept in the state directory (`state::claim`), so
/// a restarted instance's transactional id fences its dead predecessor at once.
pub fn producer_config(config: &Config, process_id: &str) -> ClientConfig {
    let mut c = base_client_config(config);
    c.set("enable.idempotence", "true")
        // Java's default partitioner, so keyflow and Java producers agree on a key's partition.
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5");
    if config.processing_guarantee == Guarantee::ExactlyOnceV2 {
        c.set("transactional.id", format!("{}-{process_id}", config.application_id))
            // Kafka Streams' exactly-once default (librdkafka's is 60 s): a transaction left open
            // by a process that hung (not died: a restart fences that at once) blocks
            // read_committed readers of its partitions for at most this long.
            .set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS.to_string());
    }
    config.clients().apply_role(&mut c, Role::Producer);
    c
}

fn isolation(config: &Config) -> &'static str {
    match config.processing_guarantee {
        Guarantee::ExactlyOnceV2 => "read_committed",
        Guarantee::AtLeastOnce => "read_uncommitted",
    }
}
