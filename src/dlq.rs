//! Dead letters: a record keyflow could not process goes to `<application.id>-dlq` with its
//! original key, value and headers, plus headers that say what failed, where and when (in the
//! spirit of Kafka Streams' KIP-1034). It is produced through the same collector as any output,
//! so under exactly-once a dead letter commits atomically with the offset that skips it.
//!
//! Header names are part of the wire format: never rename or reuse one.

use crate::record::{Headers, InputRecord, OutputRecord};

pub const ERROR_CLASS: &str = "keyflow.dlq.error.class";
pub const ERROR_MESSAGE: &str = "keyflow.dlq.error.message";
pub const STAGE: &str = "keyflow.dlq.stage";
pub const SOURCE_TOPIC: &str = "keyflow.dlq.source.topic";
pub const SOURCE_PARTITION: &str = "keyflow.dlq.source.partition";
pub const SOURCE_OFFSET: &str = "keyflow.dlq.source.offset";
pub const ATTEMPTS: &str = "keyflow.dlq.attempts";
pub const TIMESTAMP: &str = "keyflow.dlq.timestamp";
pub const VERSION: &str = "keyflow.dlq.version";

/// Why a record became a dead letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The bytes could not be decoded by the source's serde.
    Deserialization,
    /// A processor rejected the record.
    Processing,
    /// A processor's timer failed.
    Timer,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Deserialization => "deserialization",
            ErrorClass::Processing => "processing",
            ErrorClass::Timer => "timer",
        }
    }
}

/// The dead letter for `input`: original bytes and headers, then the error headers.
pub fn dead_letter(
    dlq_topic: &str,
    input: &InputRecord,
    class: ErrorClass,
    message: &str,
    stage: &str,
    attempts: u32,
    now_ms: i64,
) -> OutputRecord {
    let mut headers = input.headers.clone();
    headers.insert(SOURCE_TOPIC, input.topic.as_str());
    headers.insert(SOURCE_PARTITION, input.partition.to_string());
    headers.insert(SOURCE_OFFSET, input.offset.to_string());
    add_error(&mut headers, class, message, stage, attempts, now_ms);
    OutputRecord {
        topic: dlq_topic.to_owned(),
        partition: None,
        key: input.key.clone(),
        value: input.value.clone(),
        timestamp: Some(input.timestamp),
        headers,
    }
}

fn add_error(headers: &mut Headers, class: ErrorClass, message: &str, stage: &str, attempts: u32, now_ms: i64) {
    headers.insert(ERROR_CLASS, class.as_str());
    headers.insert(ERROR_MESSAGE, message);
    headers.insert(STAGE, stage);
    headers.insert(ATTEMPTS, attempts.to_string());
    headers.insert(TIMESTAMP, now_ms.to_string());
    headers.insert(VERSION, env!("CARGO_PKG_VERSION"));
}

/// The dead letter for a failed timer, which has no source record: the key is the workflow
/// instance, the value empty.
pub fn dead_timer(dlq_topic: &str, key: &str, message: &str, stage: &str, now_ms: i64) -> OutputRecord {
    let mut headers = Headers::new();
    add_error(&mut headers, ErrorClass::Timer, message, stage, 1, now_ms);
    OutputRecord {
        topic: dlq_topic.to_owned(),
        partition: None,
        key: Some(key.as_bytes().to_vec()),
        value: None,
        timestamp: Some(now_ms),
        headers,
    }
}
