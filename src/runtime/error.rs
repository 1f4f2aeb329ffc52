//! Runtime errors, classified by what the runtime does about them (Kafka Streams' classes).
//!
//! | class            | cause                                              | recovery                                         |
//! |------------------|----------------------------------------------------|--------------------------------------------------|
//! | `TaskMigrated`   | producer fenced, stale group generation            | roll back, rewind; new producer under EOS; the rebalance revokes what moved |
//! | `Abortable`      | transaction or delivery failed, client healthy     | abort, roll tasks back to their last commit, rewind |
//! | `TaskCorrupted`  | a task's local state is unusable                   | wipe the task's stores, restore from changelog   |
//! | `CommitUnknown`  | a commit still timed out after its retries         | roll back; reopen the tasks and restore from their checkpoints (the changelog shows the outcome) |
//! | `Retriable`      | timeout, coordinator moving                        | retry the same step after a backoff              |
//! | `InputRetriable` | one input hit a transient failure (registry down)  | seek back to it, pause its partition, resume after a backoff |
//! | `Fatal`          | anything else (bad config, fatal client error)     | stop the instance                                |

use rdkafka::error::{KafkaError, RDKafkaErrorCode as Code};

use crate::state;

impl Error {
    /// A state failure of one task.
    pub fn corrupted(partition: i32, source: &state::Error) -> Error {
        Error::TaskCorrupted { partitions: vec![partition], reason: source.to_string() }
    }
}

/// A step of the commit protocol (see `runtime::commit`), named so failures and injected crashes
/// can say where they happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// Records were being processed and their outputs produced, before any commit step.
    Processing,
    FlushOutputs,
    SendChangelog,
    FlushChangelog,
    SendMarkers,
    FlushMarkers,
    SendOffsets,
    CommitTransaction,
    WriteCheckpoint,
    CommitOffsets,
}

impl Step {
    /// Every step, in the order either guarantee may run them.
    pub const ALL: [Step; 10] = [
        Step::Processing,
        Step::FlushOutputs,
        Step::SendChangelog,
        Step::FlushChangelog,
        Step::SendMarkers,
        Step::FlushMarkers,
        Step::SendOffsets,
        Step::CommitTransaction,
        Step::WriteCheckpoint,
        Step::CommitOffsets,
    ];
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("task migrated ({0}): another instance owns these tasks now")]
    TaskMigrated(String),
    #[error("transaction must be aborted: {0}")]
    Abortable(String),
    /// The local state of these tasks is unusable or incomplete; `reason` says why.
    #[error("tasks {partitions:?} are corrupted: {reason}")]
    TaskCorrupted { partitions: Vec<i32>, reason: String },
    /// A `commit_transaction` of these tasks may or may not have reached the coordinator. Their
    /// local state is the last commit's, exactly: they reopen and restore from their checkpoints,
    /// which brings in this commit if the broker committed it (never processing its inputs
    /// again, the applied-offset guard skips them), nothing if it aborted it.
    #[error("the outcome of a commit of tasks {partitions:?} is unknown: {reason}")]
    CommitUnknown { partitions: Vec<i32>, reason: String },
    #[error("retriable: {0}")]
    Retriable(String),
    /// This input cannot be processed now for a transient reason (the schema registry is down);
    /// nothing of it was kept. It is read again after a backoff, and never dead-lettered for this.
    #[error("input {topic}-{partition}@{offset} must be retried: {reason}")]
    InputRetriable { topic: String, partition: i32, offset: i64, reason: String, after: Option<std::time::Duration> },
    #[error("fatal: {0}")]
    Fatal(String),
    /// Raised only by the test driver's fault injector: the process "dies" before `Step`.
    #[error("crash injected before {0:?}")]
    Crash(Step),
}

impl Error {
    /// Classifies an rdkafka error raised during `op`, from librdkafka's own flags and codes,
    /// never from message text.
    pub fn from_kafka(op: &str, e: KafkaError) -> Error {
        let msg = format!("{op}: {e}");
        if let KafkaError::Transaction(t) = &e {
            if is_fencing(t.code()) {
                return Error::TaskMigrated(msg);
            }
            if t.txn_requires_abort() {
                return Error::Abortable(msg);
            }
            if t.is_retriable() {
                return Error::Retriable(msg);
            }
            if t.is_fatal() {
                return Error::Fatal(msg);
            }
        }
        match e.rdkafka_error_code() {
            Some(c) if is_fencing(c) => Error::TaskMigrated(msg),
            Some(c) if is_retriable(c) => Error::Retriable(msg),
            // A produce that failed after the producer's own retries: the outputs since the last
            // commit can no longer be trusted, so roll back and process them again.
            _ if matches!(e, KafkaError::MessageProduction(_) | KafkaError::Flush(_)) => Error::Abortable(msg),
            _ => Error::Fatal(msg),
        }
    }
}

fn is_fencing(c: Code) -> bool {
    matches!(
        c,
        Code::ProducerFenced
            | Code::InvalidProducerEpoch
            | Code::Fenced
            | Code::TransactionCoordinatorFenced
            | Code::FencedInstanceId
            | Code::UnknownMemberId
            | Code::IllegalGeneration
            | Code::RebalanceInProgress
            | Code::UnknownProducerId
    )
}

fn is_retriable(c: Code) -> bool {
    matches!(
        c,
        Code::OperationTimedOut
            | Code::RequestTimedOut
            | Code::MessageTimedOut
            | Code::CoordinatorLoadInProgress
            | Code::NotCoordinator
            | Code::CoordinatorNotAvailable
            | Code::NotLeaderForPartition
            | Code::LeaderNotAvailable
            | Code::BrokerNotAvailable
            | Code::AllBrokersDown
            | Code::BrokerTransportFailure
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_errors_are_classified_by_code() {
        let fenced = Error::from_kafka("commit", KafkaError::ConsumerCommit(Code::IllegalGeneration));
        assert!(matches!(fenced, Error::TaskMigrated(_)));
        let timeout = Error::from_kafka("commit", KafkaError::ConsumerCommit(Code::RequestTimedOut));
        assert!(matches!(timeout, Error::Retriable(_)));
        let delivery = Error::from_kafka("flush", KafkaError::MessageProduction(Code::MessageSizeTooLarge));
        assert!(matches!(delivery, Error::Abortable(_)));
        let other = Error::from_kafka("subscribe", KafkaError::Subscription("bad".into()));
        assert!(matches!(other, Error::Fatal(_)));
    }
}
