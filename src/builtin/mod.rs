//! Topologies that ship with keyflow, runnable by name from the config (`topology.builtin`).

pub mod status_tracker;

use crate::topology::Topology;

/// A built-in topology by name, with its topics.
///
/// # Errors
/// The names keyflow knows, when `name` is not one of them.
pub fn by_name(name: &str, input: &str, output: &str, sla_ms: i64) -> Result<Topology, String> {
    match name {
        "status-tracker" => Ok(status_tracker::topology(input, output, sla_ms)),
        other => Err(format!("unknown built-in topology `{other}` (known: status-tracker)")),
    }
}
