//! The commit protocol's `Log` on real Kafka: rdkafka's producer (transactional under
//! exactly-once) and the group consumer's offset commit.
//!
//! Every call here may block for up to `timeout` (librdkafka's transactional calls are
//! synchronous); the instance runs on its own OS thread, never on tokio's workers.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::record::OutputRecord;

use super::log::{Delivered, Log, SourceOffset};
use super::Error;

/// Collects delivery reports: the highest offset per partition (for changelog checkpoints) and
/// the first failure since the last flush.
#[derive(Default)]
pub(crate) struct DeliveryTracker {
    delivered: Mutex<Delivered>,
    failure: Mutex<Option<KafkaError>>,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                let mut d = self.delivered.lock().expect("delivery lock");
                let e = d.entry((m.topic().to_owned(), m.partition())).or_insert(m.offset());
                *e = (*e).max(m.offset());
            }
            Err((e, m)) => {
                tracing::warn!(topic = m.topic(), partition = m.partition(), error = %e, "delivery failed");
                self.failure.lock().expect("delivery lock").get_or_insert(e.clone());
            }
        }
    }
}

pub(crate) type KafkaProducer = BaseProducer<DeliveryTracker>;

/// Waits until every queued record is acknowledged and its delivery report served.
///
/// Not `Producer::flush`: rust-rdkafka's `BaseProducer::poll(t)` always waits out `t`, which
/// made each flush cost at least 100 ms (measured: ~300 ms per at-least-once commit).
pub(crate) fn flush(producer: &KafkaProducer, timeout: Duration) -> Result<(), Error> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        serve_delivery_reports(producer);
        if producer.in_flight_count() == 0 {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::Retriable(format!("flush: {} records still in flight after {timeout:?}", producer.in_flight_count())));
        }
        producer.poll(Duration::from_micros(200));
    }
}

/// Serves the delivery reports waiting now, without blocking.
pub(crate) fn serve_delivery_reports(producer: &KafkaProducer) {
    // Each zero-timeout poll handles at most one event (a batch of reports).
    for _ in 0..64 {
        producer.poll(Duration::ZERO);
    }
}

/// Borrowed view of the producer and the group consumer for one protocol run.
pub(crate) struct KafkaLog<'a, C: ConsumerContext + 'static> {
    pub producer: &'a KafkaProducer,
    pub consumer: &'a BaseConsumer<C>,
    pub timeout: Duration,
}

impl<C: ConsumerContext + 'static> KafkaLog<'_, C> {
    fn tpl(offsets: &[SourceOffset]) -> Result<TopicPartitionList, Error> {
        let mut tpl = TopicPartitionList::new();
        for o in offsets {
            tpl.add_partition_offset(&o.topic, o.partition, Offset::Offset(o.next_offset))
                .map_err(|e| Error::Fatal(format!("offset list: {e}")))?;
        }
        Ok(tpl)
    }
}

impl<C: ConsumerContext + 'static> Log for KafkaLog<'_, C> {
    fn begin_transaction(&mut self) -> Result<(), Error> {
        self.producer.begin_transaction().map_err(|e| Error::from_kafka("begin_transaction", e))
    }

    fn send(&mut self, r: &OutputRecord) -> Result<(), Error> {
        let mut headers = OwnedHeaders::new_with_capacity(r.headers.iter().count());
        for (name, value) in r.headers.iter() {
            headers = headers.insert(Header { key: name, value: Some(value) });
        }
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&r.topic).headers(headers);
        if let Some(k) = &r.key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = &r.value {
            record = record.payload(v.as_slice());
        }
        if let Some(p) = r.partition {
            record = record.partition(p);
        }
        if let Some(t) = r.timestamp {
            record = record.timestamp(t);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), rec)) => {
                    // Back-pressure: serve delivery reports until the queue has room.
                    self.producer.poll(Duration::from_millis(10));
                    record = rec;
                }
                Err((e, _)) => return Err(Error::from_kafka("send", e)),
            }
        }
    }

    fn flush(&mut self) -> Result<(), Error> {
        flush(self.producer, self.timeout)?;
        match self.producer.context().failure.lock().expect("delivery lock").take() {
            None => Ok(()),
            Some(e) => Err(match Error::from_kafka("delivery", e) {
                // A failed delivery inside a transaction always means abort.
                Error::Fatal(m) | Error::Retriable(m) => Error::Abortable(m),
                other => other,
            }),
        }
    }

    fn take_delivered(&mut self) -> Delivered {
        std::mem::take(&mut *self.producer.context().delivered.lock().expect("delivery lock"))
    }

    fn send_offsets_to_transaction(&mut self, offsets: &[SourceOffset]) -> Result<(), Error> {
        let tpl = Self::tpl(offsets)?;
        let metadata = self.consumer.group_metadata().ok_or_else(|| Error::Fatal("the consumer has no group metadata".into()))?;
        self.producer
            .send_offsets_to_transaction(&tpl, &metadata, self.timeout)
            .map_err(|e| Error::from_kafka("send_offsets_to_transaction", e))
    }

    fn commit_transaction(&mut self) -> Result<(), Error> {
        self.producer.commit_transaction(self.timeout).map_err(|e| Error::from_kafka("commit_transaction", e))
    }

    fn abort_transaction(&mut self) -> Result<(), Error> {
        self.producer.abort_transaction(self.timeout).map_err(|e| Error::from_kafka("abort_transaction", e))
    }

    fn commit_offsets(&mut self, offsets: &[SourceOffset]) -> Result<(), Error> {
        let tpl = Self::tpl(offsets)?;
        self.consumer.commit(&tpl, CommitMode::Sync).map_err(|e| Error::from_kafka("commit offsets", e))
    }
}
