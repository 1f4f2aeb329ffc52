//! An in-memory Kafka with correct transactional semantics, for the test driver: what no broker
//! that runs on these machines gets right (aborted records invisible to read_committed, offsets
//! committed atomically with the transaction, a crashed producer's transaction aborted).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use rand::Rng;

use crate::record::{Headers, OutputRecord};
use crate::runtime::{Delivered, Error, Log, SourceOffset};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: i64,
    pub headers: Headers,
    txn: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxnStatus {
    Open,
    Committed,
    Aborted,
}

/// One partition's log. Offsets are dense when written; compaction leaves holes.
#[derive(Clone, Debug, Default)]
struct Partition {
    records: Vec<StoredRecord>,
    /// The log end offset: the offset the next record gets.
    end: i64,
}

/// The broker: topics, transactions and the group's committed offsets.
#[derive(Debug, Default)]
pub struct MemoryBroker {
    topics: BTreeMap<String, Vec<Partition>>,
    txns: Vec<TxnStatus>,
    txn_offsets: HashMap<usize, Vec<SourceOffset>>,
    committed: BTreeMap<(String, i32), i64>,
    default_partitions: i32,
    /// The consumer group's generation: a rebalance that moved this instance's partitions
    /// elsewhere bumps it, and a transactional offset commit of an older one is refused (KIP-447).
    generation: u64,
}

impl MemoryBroker {
    pub fn new(default_partitions: i32) -> Self {
        Self { default_partitions, ..Default::default() }
    }

    pub fn create_topic(&mut self, topic: &str, partitions: i32) {
        self.topics.entry(topic.to_owned()).or_insert_with(|| vec![Partition::default(); partitions as usize]);
    }

    pub fn partitions(&mut self, topic: &str) -> i32 {
        let n = self.default_partitions;
        self.topics.entry(topic.to_owned()).or_insert_with(|| vec![Partition::default(); n as usize]).len() as i32
    }

    /// Appends a record, as a producer outside any transaction would.
    pub fn append(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        timestamp: i64,
        headers: Headers,
    ) -> (i32, i64) {
        self.append_in(None, topic, partition, key, value, timestamp, headers)
    }

    #[allow(clippy::too_many_arguments)]
    fn append_in(
        &mut self,
        txn: Option<usize>,
        topic: &str,
        partition: Option<i32>,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        timestamp: i64,
        headers: Headers,
    ) -> (i32, i64) {
        let n = self.partitions(topic);
        let partition = partition.unwrap_or_else(|| partition_for(key.as_deref(), n));
        let log = &mut self.topics.get_mut(topic).expect("created above")[partition as usize];
        let offset = log.end;
        log.end += 1;
        log.records.push(StoredRecord { offset, key, value, timestamp, headers, txn });
        (partition, offset)
    }

    /// What a `read_committed` consumer sees from `from` on: committed and non-transactional
    /// records, up to the first record of a transaction still open (the last stable offset).
    pub fn read_committed(&self, topic: &str, partition: i32, from: i64) -> Vec<StoredRecord> {
        let Some(log) = self.topics.get(topic).and_then(|t| t.get(partition as usize)) else { return Vec::new() };
        let mut out = Vec::new();
        let first = log.records.partition_point(|r| r.offset < from);
        for r in &log.records[first..] {
            match r.txn.map(|t| self.txns[t]) {
                Some(TxnStatus::Open) => break,
                Some(TxnStatus::Aborted) => continue,
                _ => out.push(r.clone()),
            }
        }
        out
    }

    /// Every committed record of a topic, partition by partition.
    pub fn committed_records(&self, topic: &str) -> Vec<(i32, StoredRecord)> {
        let n = self.topics.get(topic).map_or(0, Vec::len) as i32;
        (0..n).flat_map(|p| self.read_committed(topic, p, 0).into_iter().map(move |r| (p, r))).collect()
    }

    /// Like `read_committed`, but stopping at nothing: what a broken broker would show.
    pub fn end_offset(&self, topic: &str, partition: i32) -> i64 {
        self.topics.get(topic).and_then(|t| t.get(partition as usize)).map_or(0, |l| l.end)
    }

    pub fn committed_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.committed.get(&(topic.to_owned(), partition)).copied()
    }

    /// Runs the log cleaner over `topic` as Kafka's does on a compacted topic, everywhere below
    /// the last stable offset: of each key only the newest record stays, aborted records and
    /// tombstones go. Offsets do not change; the log end neither.
    ///
    /// `lagging`: the records after the last position marker are left alone, as a
    /// `min.compaction.lag.ms` longer than a crash and the next commit leaves them (what
    /// at-least-once needs; see the README's known limits).
    pub fn compact(&mut self, topic: &str, lagging: bool) {
        let Some(partitions) = self.topics.get(topic) else { return };
        let mut cleaned = Vec::new();
        for log in partitions {
            let mut stable =
                log.records.iter().position(|r| r.txn.is_some_and(|t| self.txns[t] == TxnStatus::Open)).unwrap_or(log.records.len());
            if lagging {
                stable = stable
                    .min(log.records.iter().rposition(|r| r.headers.last(crate::state::MARKER_HEADER).is_some()).map_or(0, |i| i + 1));
            }
            let mut newest: HashMap<Option<Vec<u8>>, i64> = HashMap::new();
            for r in &log.records[..stable] {
                if r.txn.is_none_or(|t| self.txns[t] == TxnStatus::Committed) {
                    newest.insert(r.key.clone(), r.offset);
                }
            }
            let keep = |r: &StoredRecord| match r.txn.map(|t| self.txns[t]) {
                Some(TxnStatus::Aborted) => false,
                _ => newest.get(&r.key) == Some(&r.offset),
            };
            let mut records: Vec<StoredRecord> = log.records[..stable].iter().filter(|r| keep(r)).cloned().collect();
            records.extend_from_slice(&log.records[stable..]);
            cleaned.push(Partition { records, end: log.end });
        }
        self.topics.insert(topic.to_owned(), cleaned);
    }

    /// Another member took this instance's partitions: its group generation is now stale.
    pub fn bump_generation(&mut self) {
        self.generation += 1;
    }

    pub fn topics(&self) -> Vec<String> {
        self.topics.keys().cloned().collect()
    }

    fn begin(&mut self) -> usize {
        self.txns.push(TxnStatus::Open);
        self.txns.len() - 1
    }

    fn end(&mut self, txn: usize, commit: bool) {
        self.txns[txn] = if commit { TxnStatus::Committed } else { TxnStatus::Aborted };
        let offsets = self.txn_offsets.remove(&txn).unwrap_or_default();
        if commit {
            self.commit_offsets(&offsets);
        }
    }

    fn commit_offsets(&mut self, offsets: &[SourceOffset]) {
        for o in offsets {
            self.committed.insert((o.topic.clone(), o.partition), o.next_offset);
        }
    }
}

/// The driver's partitioner: deterministic, murmur-free (only this log ever reads it).
fn partition_for(key: Option<&[u8]>, partitions: i32) -> i32 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % partitions as u64) as i32
}

/// One instance's producer on the memory broker. Sent records are in flight until `flush`.
pub(crate) struct MemoryLog {
    broker: Rc<RefCell<MemoryBroker>>,
    /// The group generation this instance joined in (its consumer's group metadata).
    generation: u64,
    txn: Option<usize>,
    in_flight: Vec<OutputRecord>,
    delivered: Delivered,
}

impl MemoryLog {
    pub fn new(broker: Rc<RefCell<MemoryBroker>>) -> Self {
        let generation = broker.borrow().generation;
        Self { broker, generation, txn: None, in_flight: Vec::new(), delivered: Delivered::new() }
    }

    /// The process died: a random prefix of each partition's in-flight records still reached the
    /// broker (the idempotent producer keeps per-partition order), and the open transaction is
    /// aborted, as the broker does when the next producer with this transactional.id starts.
    pub fn crash(mut self, rng: &mut impl Rng) {
        let mut by_partition: BTreeMap<(String, Option<i32>), Vec<OutputRecord>> = BTreeMap::new();
        for r in self.in_flight.drain(..) {
            by_partition.entry((r.topic.clone(), r.partition)).or_default().push(r);
        }
        for (_, records) in by_partition {
            let keep = rng.random_range(0..=records.len());
            for r in records.into_iter().take(keep) {
                self.deliver(r);
            }
        }
        if let Some(t) = self.txn.take() {
            self.broker.borrow_mut().end(t, false);
        }
    }

    fn deliver(&mut self, r: OutputRecord) {
        let (p, off) =
            self.broker.borrow_mut().append_in(self.txn, &r.topic, r.partition, r.key, r.value, r.timestamp.unwrap_or(0), r.headers);
        let e = self.delivered.entry((r.topic, p)).or_insert(off);
        *e = (*e).max(off);
    }
}

impl Log for MemoryLog {
    fn begin_transaction(&mut self) -> Result<(), Error> {
        assert!(self.txn.is_none(), "begin_transaction with a transaction open");
        self.txn = Some(self.broker.borrow_mut().begin());
        Ok(())
    }

    fn send(&mut self, record: &OutputRecord) -> Result<(), Error> {
        self.in_flight.push(record.clone());
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        for r in std::mem::take(&mut self.in_flight) {
            self.deliver(r);
        }
        Ok(())
    }

    fn take_delivered(&mut self) -> Delivered {
        std::mem::take(&mut self.delivered)
    }

    fn send_offsets_to_transaction(&mut self, offsets: &[SourceOffset]) -> Result<(), Error> {
        let t = self.txn.ok_or_else(|| Error::Fatal("send_offsets_to_transaction without a transaction".into()))?;
        if self.generation != self.broker.borrow().generation {
            return Err(Error::TaskMigrated("TxnOffsetCommit: illegal generation".into()));
        }
        self.broker.borrow_mut().txn_offsets.entry(t).or_default().extend_from_slice(offsets);
        Ok(())
    }

    fn commit_transaction(&mut self) -> Result<(), Error> {
        self.flush()?;
        let t = self.txn.take().ok_or_else(|| Error::Fatal("commit_transaction without a transaction".into()))?;
        self.broker.borrow_mut().end(t, true);
        Ok(())
    }

    fn abort_transaction(&mut self) -> Result<(), Error> {
        // Records not yet delivered are purged, as librdkafka's abort does.
        self.in_flight.clear();
        if let Some(t) = self.txn.take() {
            self.broker.borrow_mut().end(t, false);
        }
        Ok(())
    }

    fn commit_offsets(&mut self, offsets: &[SourceOffset]) -> Result<(), Error> {
        self.broker.borrow_mut().commit_offsets(offsets);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(topic: &str, v: &str) -> OutputRecord {
        OutputRecord {
            topic: topic.into(),
            partition: Some(0),
            key: None,
            value: Some(v.as_bytes().to_vec()),
            timestamp: None,
            headers: Headers::new(),
        }
    }

    #[test]
    fn aborted_transaction_is_invisible_to_read_committed_and_open_one_blocks_at_lso() {
        let broker = Rc::new(RefCell::new(MemoryBroker::new(1)));
        let mut log = MemoryLog::new(broker.clone());
        log.begin_transaction().unwrap();
        log.send(&rec("t", "aborted")).unwrap();
        log.flush().unwrap();
        log.abort_transaction().unwrap();
        log.begin_transaction().unwrap();
        log.send(&rec("t", "committed")).unwrap();
        log.send_offsets_to_transaction(&[SourceOffset { topic: "in".into(), partition: 0, next_offset: 5 }]).unwrap();
        log.commit_transaction().unwrap();
        log.begin_transaction().unwrap();
        log.send(&rec("t", "open")).unwrap();
        log.flush().unwrap();
        broker.borrow_mut().append("t", Some(0), None, Some(b"after".to_vec()), 0, Headers::new());
        let b = broker.borrow();
        let seen: Vec<_> = b.read_committed("t", 0, 0).into_iter().map(|r| r.value.unwrap()).collect();
        assert_eq!(seen, vec![b"committed".to_vec()]);
        assert_eq!(b.committed_offset("in", 0), Some(5));
    }
}
