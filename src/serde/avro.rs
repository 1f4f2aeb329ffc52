//! Avro in the Confluent wire format: magic byte 0, the writer schema's registry id (4 bytes,
//! big-endian), then the Avro binary datum.
//!
//! Reading fetches the writer schema by id (cached) and resolves the datum into the reader schema
//! the topology declares, so a processor built against v2 reads v1 data and the other way round,
//! as far as the schemas' compatibility allows. Writing registers the declared schema under the
//! subject its naming strategy gives (or finds it) and prefixes its id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::{Names, ResolvedSchema};
use apache_avro::types::Value as AvroValue;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use serde::Deserialize;
use serde_json::Value;

use super::registry::Registry;
use super::Error;

const MAGIC: u8 = 0;

/// How a subject is named (Confluent's `key/value.subject.name.strategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubjectStrategy {
    /// `<topic>-key` / `<topic>-value`.
    #[default]
    TopicName,
    /// The record's full name.
    RecordName,
    /// `<topic>-<record full name>`.
    TopicRecordName,
}

impl std::str::FromStr for SubjectStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "topic" | "topic-name" | "TopicNameStrategy" => Ok(Self::TopicName),
            "record" | "record-name" | "RecordNameStrategy" => Ok(Self::RecordName),
            "topic-record" | "topic-record-name" | "TopicRecordNameStrategy" => Ok(Self::TopicRecordName),
            other => Err(format!("unknown subject name strategy `{other}` (topic, record, topic-record)")),
        }
    }
}

impl SubjectStrategy {
    /// The subject of `schema` written to `topic` as a key or value.
    pub fn subject(self, topic: &str, is_key: bool, schema: &Schema) -> String {
        let full = full_name(schema);
        match self {
            Self::TopicName => format!("{topic}-{}", if is_key { "key" } else { "value" }),
            Self::RecordName => full,
            Self::TopicRecordName => format!("{topic}-{full}"),
        }
    }
}

/// A schema's full name (`namespace.Name`), or its type for a primitive.
pub fn full_name(schema: &Schema) -> String {
    match schema {
        Schema::Record(r) => r.name.fullname(None),
        Schema::Enum(e) => e.name.fullname(None),
        Schema::Fixed(f) => f.name.fullname(None),
        other => format!("{:?}", apache_avro::schema::SchemaKind::from(other)).to_lowercase(),
    }
}

/// An Avro serde for the keys or the values of a source or sink.
#[derive(Clone)]
pub struct AvroSerde {
    registry: Arc<Registry>,
    schema: Option<Arc<Schema>>,
    /// The declared schema's named types, resolved once rather than for every record written.
    names: Arc<Names>,
    strategy: SubjectStrategy,
    /// Subject -> registry id of the declared schema. Writing looks here first: the registry's
    /// own cache is keyed by the schema's canonical form, which costs more to compute for every
    /// record than encoding the record does.
    ids: Arc<Mutex<HashMap<String, u32>>>,
}

impl std::fmt::Debug for AvroSerde {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroSerde").field("schema", &self.name()).field("strategy", &self.strategy).finish_non_exhaustive()
    }
}

impl AvroSerde {
    /// `schema`: the reader schema for sources and the writer schema for sinks. A source without
    /// one reads every record with its own writer schema.
    pub fn new(registry: Arc<Registry>, schema: Option<Schema>, strategy: SubjectStrategy) -> Self {
        // Parsing already resolved every name the schema uses, so this cannot fail for a parsed
        // schema.
        let names: Names = schema.as_ref().map_or_else(Names::new, |s| {
            ResolvedSchema::new(s)
                .expect("a parsed schema resolves its names")
                .get_names()
                .iter()
                .map(|(n, s)| (n.clone(), (*s).clone()))
                .collect()
        });
        Self { registry, schema: schema.map(Arc::new), names: Arc::new(names), strategy, ids: Arc::default() }
    }

    /// The declared schema's full name, for `describe()`.
    pub fn name(&self) -> String {
        self.schema.as_deref().map_or_else(|| "avro(writer schema)".into(), |s| format!("avro({})", full_name(s)))
    }

    /// Decodes Confluent-framed Avro into a JSON value.
    ///
    /// # Errors
    /// [`Error::NotAvro`], [`Error::UnknownSchemaId`], [`Error::Avro`] (the datum does not match
    /// its writer schema or cannot resolve into the reader schema) for bad records;
    /// [`Error::Unavailable`] when the registry cannot be reached (retry, never dead-letter).
    pub fn deserialize(&self, bytes: &[u8]) -> Result<Value, Error> {
        if bytes.len() < 5 || bytes[0] != MAGIC {
            return Err(Error::NotAvro(format!(
                "{} bytes, first byte {:?}; expected magic byte 0 and a 4-byte schema id",
                bytes.len(),
                bytes.first()
            )));
        }
        let id = u32::from_be_bytes(bytes[1..5].try_into().expect("4 bytes"));
        let writer = self.registry.schema(id)?;
        let avro_err = |e: apache_avro::Error| Error::Avro(format!("schema id {id}: {e}"));
        let reader = GenericDatumReader::builder(&writer).maybe_reader_schema(self.schema.as_deref()).build().map_err(avro_err)?;
        let mut datum = &bytes[5..];
        let value = reader.read_value(&mut datum).map_err(avro_err)?;
        if !datum.is_empty() {
            return Err(Error::Avro(format!("schema id {id}: {} bytes left after the datum", datum.len())));
        }
        Value::try_from(value).map_err(avro_err)
    }

    /// Encodes a JSON value with the declared schema, registering it if needed.
    ///
    /// # Errors
    /// [`Error::Avro`] when the value does not fit the schema; registry errors.
    pub fn serialize(&self, topic: &str, is_key: bool, value: &Value) -> Result<Vec<u8>, Error> {
        let schema = self.schema.as_deref().ok_or_else(|| Error::Avro("a sink needs a declared schema to write Avro".into()))?;
        // Resolution turns the JSON shape into the schema's (records, unions, logical types) or
        // fails: a resolved value fits, so the writer need not validate it again.
        let avro = AvroValue::try_from(value.clone())
            .and_then(|v| v.resolve_with_names(schema, &self.names))
            .map_err(|e| Error::Avro(format!("value does not fit {}: {e}", full_name(schema))))?;
        let subject = self.strategy.subject(topic, is_key, schema);
        let known = self.ids.lock().expect("id cache").get(&subject).copied();
        let id = match known {
            Some(id) => id,
            None => {
                let id = self.registry.register(&subject, schema)?;
                self.ids.lock().expect("id cache").insert(subject, id);
                id
            }
        };
        let mut out = Vec::with_capacity(64);
        out.push(MAGIC);
        out.extend_from_slice(&id.to_be_bytes());
        GenericDatumWriter::builder(schema)
            .validate(false)
            .build()
            .and_then(|w| w.write_value_ref(&mut out, &avro))
            .map_err(|e| Error::Avro(e.to_string()))?;
        Ok(out)
    }
}
