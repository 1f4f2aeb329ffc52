//! Serdes: how a source turns bytes into a [`Record`](crate::Record)'s values and a sink turns
//! them back. Avro with the Confluent wire format lives beside these (see the Avro issue).

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("record has no {0}")]
    Missing(&'static str),
    #[error("{what} is not valid UTF-8: {source}")]
    Utf8 { what: &'static str, source: std::str::Utf8Error },
    #[error("{what} is not valid JSON: {source}")]
    Json { what: &'static str, source: serde_json::Error },
    #[error("{what} must be a string for the string serde, got {value}")]
    NotAString { what: &'static str, value: String },
}

/// The serdes keyflow knows. A `null` key or value is written as an absent one (a tombstone).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Serde {
    /// UTF-8 text <-> a JSON string.
    #[default]
    String,
    /// JSON text <-> a JSON value.
    Json,
}

impl Serde {
    pub fn name(self) -> &'static str {
        match self {
            Serde::String => "string",
            Serde::Json => "json",
        }
    }

    /// Decodes `bytes`; an absent payload is `null`.
    ///
    /// # Errors
    /// [`Error`] when the bytes are not what this serde reads.
    pub fn deserialize(self, what: &'static str, bytes: Option<&[u8]>) -> Result<Value, Error> {
        let Some(bytes) = bytes else { return Ok(Value::Null) };
        match self {
            Serde::String => std::str::from_utf8(bytes)
                .map(|s| Value::String(s.to_owned()))
                .map_err(|source| Error::Utf8 { what, source }),
            Serde::Json => serde_json::from_slice(bytes).map_err(|source| Error::Json { what, source }),
        }
    }

    /// Encodes `value`; `null` becomes an absent payload.
    ///
    /// # Errors
    /// [`Error::NotAString`] when the string serde is handed anything but a string.
    pub fn serialize(self, what: &'static str, value: &Value) -> Result<Option<Vec<u8>>, Error> {
        if value.is_null() {
            return Ok(None);
        }
        match self {
            Serde::String => match value {
                Value::String(s) => Ok(Some(s.as_bytes().to_vec())),
                other => Err(Error::NotAString { what, value: other.to_string() }),
            },
            Serde::Json => Ok(Some(serde_json::to_vec(value).expect("a JSON value always serializes"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_and_json_round_trip_and_null_is_absent() {
        let v = Serde::Json.deserialize("value", Some(br#"{"a":1}"#)).unwrap();
        assert_eq!(Serde::Json.serialize("value", &v).unwrap().unwrap(), br#"{"a":1}"#);
        assert_eq!(Serde::String.deserialize("key", Some(b"doc-1")).unwrap(), Value::from("doc-1"));
        assert_eq!(Serde::String.serialize("key", &Value::Null).unwrap(), None);
        assert!(matches!(Serde::Json.deserialize("value", Some(b"{nope")), Err(Error::Json { .. })));
        assert!(matches!(Serde::String.serialize("key", &Value::from(3)), Err(Error::NotAString { .. })));
    }
}
