//! Serdes: how a source turns bytes into a [`Record`](crate::Record)'s values and a sink turns
//! them back. Inside a topology keys and values are JSON values, whatever the wire format.

pub mod avro;
pub mod catalogue;
pub mod compat;
pub mod registry;

use serde_json::Value;

pub use avro::{AvroSerde, SubjectStrategy};
pub use registry::{Registry, RegistryConfig};

/// Serde errors. All are problems of the record (it goes to the dead-letter topic) except
/// [`Error::Unavailable`], which is the registry's: the record is retried, never dead-lettered.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} is not valid UTF-8: {source}")]
    Utf8 { what: &'static str, source: std::str::Utf8Error },
    #[error("{what} is not valid JSON: {source}")]
    Json { what: &'static str, source: serde_json::Error },
    #[error("{what} must be a string for the string serde, got {value}")]
    NotAString { what: &'static str, value: String },
    #[error("not Confluent-framed Avro: {0}")]
    NotAvro(String),
    #[error("schema id {0} is not in the registry")]
    UnknownSchemaId(u32),
    #[error("Avro: {0}")]
    Avro(String),
    #[error("schema for subject `{subject}` is incompatible: {}", reasons.join("; "))]
    Incompatible { subject: String, reasons: Vec<String> },
    #[error("schema registry: {0}")]
    Registry(String),
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
}

impl Error {
    /// Whether the record itself is at fault (dead-letter it) rather than the registry (retry).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

/// The serdes of a source or a sink. A `null` key or value is an absent one (a tombstone).
#[derive(Clone, Debug, Default)]
pub enum Serde {
    /// UTF-8 text <-> a JSON string.
    #[default]
    String,
    /// JSON text <-> a JSON value.
    Json,
    /// Confluent-framed Avro with a schema registry.
    Avro(AvroSerde),
}

impl Serde {
    pub fn name(&self) -> String {
        match self {
            Serde::String => "string".into(),
            Serde::Json => "json".into(),
            Serde::Avro(a) => a.name(),
        }
    }

    /// Decodes `bytes`; an absent payload is `null`.
    ///
    /// # Errors
    /// [`Error`] when the bytes are not what this serde reads.
    pub fn deserialize(&self, what: &'static str, bytes: Option<&[u8]>) -> Result<Value, Error> {
        let Some(bytes) = bytes else { return Ok(Value::Null) };
        match self {
            Serde::String => std::str::from_utf8(bytes).map(|s| Value::String(s.to_owned())).map_err(|source| Error::Utf8 { what, source }),
            Serde::Json => serde_json::from_slice(bytes).map_err(|source| Error::Json { what, source }),
            Serde::Avro(a) => a.deserialize(bytes),
        }
    }

    /// Encodes `value` for `topic`; `null` becomes an absent payload.
    ///
    /// # Errors
    /// [`Error::NotAString`] when the string serde is handed anything but a string; Avro errors.
    pub fn serialize(&self, topic: &str, what: &'static str, value: &Value) -> Result<Option<Vec<u8>>, Error> {
        if value.is_null() {
            return Ok(None);
        }
        match self {
            Serde::String => match value {
                Value::String(s) => Ok(Some(s.as_bytes().to_vec())),
                other => Err(Error::NotAString { what, value: other.to_string() }),
            },
            Serde::Json => Ok(Some(serde_json::to_vec(value).expect("a JSON value always serializes"))),
            Serde::Avro(a) => a.serialize(topic, what == "key", value).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_and_json_round_trip_and_null_is_absent() {
        let v = Serde::Json.deserialize("value", Some(br#"{"a":1}"#)).unwrap();
        assert_eq!(Serde::Json.serialize("t", "value", &v).unwrap().unwrap(), br#"{"a":1}"#);
        assert_eq!(Serde::String.deserialize("key", Some(b"doc-1")).unwrap(), Value::from("doc-1"));
        assert_eq!(Serde::String.serialize("t", "key", &Value::Null).unwrap(), None);
        assert!(matches!(Serde::Json.deserialize("value", Some(b"{nope")), Err(Error::Json { .. })));
        assert!(matches!(Serde::String.serialize("t", "key", &Value::from(3)), Err(Error::NotAString { .. })));
    }
}
