//! Schema compatibility, with the rules of Confluent's registry: BACKWARD (the new schema reads
//! data written with the old), FORWARD (old readers read data written with the new), FULL (both),
//! each against the latest version or, `_TRANSITIVE`, against all earlier ones.

use std::fmt;
use std::str::FromStr;

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_uppercase().replace('-', "_").as_str() {
            "NONE" => Level::None,
            "BACKWARD" => Level::Backward,
            "BACKWARD_TRANSITIVE" => Level::BackwardTransitive,
            "FORWARD" => Level::Forward,
            "FORWARD_TRANSITIVE" => Level::ForwardTransitive,
            "FULL" => Level::Full,
            "FULL_TRANSITIVE" => Level::FullTransitive,
            other => {
                return Err(format!("unknown compatibility level `{other}` (NONE, BACKWARD, FORWARD, FULL, and the *_TRANSITIVE ones)"))
            }
        })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
        })
    }
}

impl Level {
    fn transitive(self) -> bool {
        matches!(self, Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive)
    }
    fn backward(self) -> bool {
        matches!(self, Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive)
    }
    fn forward(self) -> bool {
        matches!(self, Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive)
    }
}

/// One broken rule: the new schema against earlier version `version` (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub version: usize,
    pub rule: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "against version {}: {}: {}", self.version, self.rule, self.detail)
    }
}

const BACKWARD_RULE: &str = "BACKWARD (the new schema must read data written with it)";
const FORWARD_RULE: &str = "FORWARD (readers on it must read data written with the new schema)";

/// Checks `new` against the earlier versions `previous` (oldest first) under `level`.
pub fn check(level: Level, new: &Schema, previous: &[Schema]) -> Vec<Violation> {
    let Some(last) = previous.len().checked_sub(1) else { return Vec::new() };
    let from = if level.transitive() { 0 } else { last };
    let mut out = Vec::new();
    for (i, old) in previous.iter().enumerate().skip(from) {
        if level.backward() {
            if let Err(e) = SchemaCompatibility::can_read(old, new) {
                out.push(Violation { version: i + 1, rule: BACKWARD_RULE, detail: explain(&e) });
            }
        }
        if level.forward() {
            if let Err(e) = SchemaCompatibility::can_read(new, old) {
                out.push(Violation { version: i + 1, rule: FORWARD_RULE, detail: explain(&e) });
            }
        }
    }
    out
}

/// The error with its causes, so a nested field's problem names every field on the way.
fn explain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &str) -> Schema {
        Schema::parse_str(&format!(r#"{{"type":"record","name":"E","fields":[{fields}]}}"#)).unwrap()
    }

    #[test]
    fn adding_a_field_without_default_breaks_backward_and_the_message_names_it() {
        let v1 = schema(r#"{"name":"a","type":"string"}"#);
        let v2 = schema(r#"{"name":"a","type":"string"},{"name":"b","type":"long"}"#);
        let v = check(Level::Backward, &v2, std::slice::from_ref(&v1));
        assert_eq!(v.len(), 1);
        assert!(v[0].to_string().contains("'b'") && v[0].to_string().contains("default"), "{}", v[0]);
        assert!(check(Level::Forward, &v2, &[v1]).is_empty(), "old readers ignore the new field");
    }

    #[test]
    fn transitive_levels_check_every_earlier_version() {
        let v1 = schema(r#"{"name":"a","type":"string"}"#);
        let v2 = schema(r#"{"name":"a","type":"string"},{"name":"b","type":"long","default":0}"#);
        let v3 = schema(r#"{"name":"b","type":"long","default":0},{"name":"c","type":"long"}"#);
        // v3 cannot read v1 or v2 data (c has no default); only the transitive check sees v1 too.
        assert_eq!(check(Level::Backward, &v3, &[v1.clone(), v2.clone()]).iter().map(|v| v.version).collect::<Vec<_>>(), vec![2]);
        assert_eq!(check(Level::BackwardTransitive, &v3, &[v1, v2]).iter().map(|v| v.version).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!("full_transitive".parse::<Level>(), Ok(Level::FullTransitive));
    }
}
