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
/// Set when the dead letter's value was cut to fit the topic: the original value's size in bytes
/// and its SHA-256 (hex). The original stays at the source topic, partition and offset.
pub const VALUE_SIZE: &str = "keyflow.dlq.value.size";
pub const VALUE_SHA256: &str = "keyflow.dlq.value.sha256";
/// The same for a key that was cut.
pub const KEY_SIZE: &str = "keyflow.dlq.key.size";
pub const KEY_SHA256: &str = "keyflow.dlq.key.sha256";
/// How many of the original record's headers were left off to fit the topic.
pub const HEADERS_DROPPED: &str = "keyflow.dlq.headers.dropped";

/// Error messages longer than this are cut: a message that quotes its input must not make the
/// dead letter too large to write.
const MAX_MESSAGE_BYTES: usize = 4096;

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
    // The input's own `keyflow.dlq.*` headers (a letter written back to a topic by hand) would
    // be taken for this letter's: they are left off.
    let mut headers = Headers::new();
    for (name, value) in input.headers.iter().filter(|(name, _)| !name.starts_with("keyflow.dlq.")) {
        headers.insert(name, value);
    }
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
    headers.insert(ERROR_MESSAGE, cut_str(message, MAX_MESSAGE_BYTES));
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

/// Makes a dead letter fit in `limit` bytes (its topic's [`crate::runtime::RecordLimits`]): a dead
/// letter that cannot be written would fail the transaction of every task again and again, so
/// a poison record too large for the dead-letter topic must still become one that fits.
///
/// In this order, only as far as needed: the value is cut (its original size and SHA-256 in
/// [`VALUE_SIZE`] and [`VALUE_SHA256`]), the original record's own headers are left off (their
/// count in [`HEADERS_DROPPED`]), the key is cut ([`KEY_SIZE`], [`KEY_SHA256`]), and at last
/// keyflow's own headers are cut to the ones that lead to the original. Source topic, partition
/// and offset always stay, so `keyflow dlq show` still leads to the original, and the digest
/// tells whether a record found there is it.
pub fn fit(record: OutputRecord, limit: usize) -> OutputRecord {
    let size = |r: &OutputRecord| crate::runtime::wire_size(r.key.as_deref(), r.value.as_deref(), &r.headers);
    if size(&record) <= limit {
        return record;
    }
    let mut r = record;
    let value = r.value.take();
    let value_len = value.as_ref().map_or(0, Vec::len);
    // What a cut value carries along: its original size and digest, and the bytes they take.
    let value_headers = value.as_deref().map(|v| {
        let mut h = Headers::new();
        h.insert(VALUE_SIZE, v.len().to_string());
        h.insert(VALUE_SHA256, sha256_hex(v));
        h
    });
    let empty = crate::runtime::wire_size(None, None, &Headers::new());
    let digest_bytes = value_headers.as_ref().map_or(0, |h| crate::runtime::wire_size(None, None, h) - empty);
    // Room left for the value once it is cut.
    let room = |r: &OutputRecord| limit.checked_sub(size(r) + digest_bytes);
    let fits = |r: &OutputRecord| size(r) + value_len <= limit || room(r).is_some_and(|room| room > 0 || value_len == 0);
    if !fits(&r) {
        let before = r.headers.iter().count();
        r.headers = only(&r.headers, |name| name.starts_with("keyflow.dlq."), usize::MAX);
        let dropped = before - r.headers.iter().count();
        if dropped > 0 {
            r.headers.insert(HEADERS_DROPPED, dropped.to_string());
        }
    }
    if !fits(&r) {
        if let Some(k) = r.key.take() {
            r.headers.insert(KEY_SIZE, k.len().to_string());
            r.headers.insert(KEY_SHA256, sha256_hex(&k));
            // Some room stays for a part of the value.
            let key_room = limit.saturating_sub(size(&r) + digest_bytes + value_len.min(1024));
            r.key = Some(k[..key_room.min(k.len())].to_vec());
        }
    }
    if !fits(&r) {
        // A topic limit below keyflow's own headers (a message of 4 KiB): keep what leads to the
        // original, each header short.
        const ESSENTIAL: [&str; 9] =
            [ERROR_CLASS, ERROR_MESSAGE, STAGE, SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET, KEY_SIZE, KEY_SHA256, HEADERS_DROPPED];
        r.headers = only(&r.headers, |name| ESSENTIAL.contains(&name), 300);
    }
    if !fits(&r) {
        // Still over (a limit of a few hundred bytes): what leads to the original, nothing else.
        r.headers = only(&r.headers, |name| ![ERROR_MESSAGE, STAGE].contains(&name), 300);
        r.key = None;
    }
    match (value, value_headers) {
        (Some(v), Some(headers)) if size(&r) + v.len() > limit => {
            for (name, text) in headers.iter() {
                r.headers.insert(name, text);
            }
            let room = limit.saturating_sub(size(&r));
            r.value = Some(v[..room.min(v.len())].to_vec());
        }
        (v, _) => r.value = v,
    }
    r
}

/// The headers whose names `keep`, each value cut to `max` bytes (at a character boundary when
/// it is text: source topic names are at most 249 bytes and stay whole).
fn only(headers: &Headers, keep: impl Fn(&str) -> bool, max: usize) -> Headers {
    let mut kept = Headers::new();
    for (name, v) in headers.iter().filter(|(name, _)| keep(name)) {
        match std::str::from_utf8(v) {
            Ok(text) => kept.insert(name, cut_str(text, max)),
            Err(_) => kept.insert(name, &v[..v.len().min(max)]),
        }
    }
    kept
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(key: usize, value: usize, headers: usize) -> InputRecord {
        let mut h = Headers::new();
        for i in 0..headers {
            h.insert(format!("app.header.{i}"), vec![b'h'; 100]);
        }
        InputRecord {
            topic: "in".into(),
            partition: 3,
            offset: 42,
            timestamp: 7,
            key: Some(vec![b'k'; key]),
            value: Some(vec![b'v'; value]),
            headers: h,
        }
    }

    fn size(r: &OutputRecord) -> usize {
        crate::runtime::wire_size(r.key.as_deref(), r.value.as_deref(), &r.headers)
    }

    #[test]
    fn a_letter_that_fits_is_left_alone() {
        let letter = dead_letter("dlq", &input(10, 100, 2), ErrorClass::Deserialization, "bad", "source:in", 1, 9);
        assert_eq!(fit(letter.clone(), 10_000), letter);
    }

    #[test]
    fn an_oversized_letter_is_cut_to_fit_and_says_what_the_original_was() {
        let original = input(10, 1_010_000, 3);
        let letter = dead_letter("dlq", &original, ErrorClass::Deserialization, "bad", "source:in", 1, 9);
        let cut = fit(letter, 1_000_000);
        assert!(size(&cut) <= 1_000_000, "{}", size(&cut));
        assert!(size(&cut) > 999_000, "only as much is cut as needed: {}", size(&cut));
        let h = &cut.headers;
        assert_eq!(h.last_str(VALUE_SIZE), Some("1010000"));
        assert_eq!(h.last_str(VALUE_SHA256), Some(sha256_hex(original.value.as_ref().unwrap()).as_str()));
        assert_eq!(
            (h.last_str(SOURCE_TOPIC), h.last_str(SOURCE_PARTITION), h.last_str(SOURCE_OFFSET)),
            (Some("in"), Some("3"), Some("42"))
        );
        assert!(h.last("app.header.0").is_some(), "the original headers stay while the value can give room");
        assert_eq!(cut.key, original.key);
    }

    #[test]
    fn a_letter_fits_even_when_the_input_carries_huge_headers_named_like_keyflows() {
        let mut original = input(10, 10, 0);
        original.headers.insert("keyflow.dlq.x", vec![b'h'; 900_000]);
        let letter = dead_letter("dlq", &original, ErrorClass::Processing, "bad", "wf", 1, 9);
        assert!(letter.headers.last("keyflow.dlq.x").is_none(), "the input's look-alike header is left off");
        let cut = fit(letter, 2_000);
        assert!(size(&cut) <= 2_000, "{}", size(&cut));
        assert_eq!(cut.value, original.value, "a value that fits once headers are gone stays whole");
        assert!(cut.headers.last(VALUE_SIZE).is_none(), "and is not marked cut");
    }

    #[test]
    fn a_limit_below_keyflows_own_headers_still_gets_a_letter_that_leads_to_the_original() {
        let letter = dead_letter("dlq", &input(5_000, 50_000, 3), ErrorClass::Processing, &"m".repeat(5_000), "wf", 1, 9);
        let cut = fit(letter, 1_500);
        assert!(size(&cut) <= 1_500, "{}", size(&cut));
        assert_eq!(cut.headers.last_str(SOURCE_OFFSET), Some("42"));
        assert_eq!(cut.headers.last_str(VALUE_SIZE), Some("50000"));
    }

    #[test]
    fn headers_then_the_key_go_when_cutting_the_value_is_not_enough() {
        let original = input(5_000, 1_000, 100);
        let letter = dead_letter("dlq", &original, ErrorClass::Processing, &"x".repeat(100_000), "wf", 1, 9);
        let cut = fit(letter, 10_000);
        assert!(size(&cut) <= 10_000, "{}", size(&cut));
        let h = &cut.headers;
        assert_eq!(h.last_str(HEADERS_DROPPED), Some("100"));
        assert!(h.last(KEY_SIZE).is_none(), "the key fits once the headers are gone");
        assert_eq!(h.last_str(ERROR_MESSAGE).map(str::len), Some(MAX_MESSAGE_BYTES), "a long message is cut");

        let letter = dead_letter("dlq", &input(20_000, 1_000, 100), ErrorClass::Processing, "bad", "wf", 1, 9);
        let cut = fit(letter, 10_000);
        assert!(size(&cut) <= 10_000, "{}", size(&cut));
        assert_eq!(cut.headers.last_str(KEY_SIZE), Some("20000"));
        assert!(cut.value.as_ref().is_some_and(|v| !v.is_empty()), "a part of the value stays");
        assert_eq!(cut.headers.last_str(SOURCE_OFFSET), Some("42"));
    }
}
