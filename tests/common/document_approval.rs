//! The reference `document-approval` workflow in the test driver (application `docs`, one
//! partition), for the workflow tests that drive it event by event.
#![allow(dead_code)]

use std::path::Path;

use keyflow::testing::{DriverConfig, StoredRecord, TopologyTestDriver};
use keyflow::workflow;
use serde_json::Value;

pub fn driver() -> TopologyTestDriver {
    let def = workflow::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/document-approval.toml")).unwrap();
    TopologyTestDriver::new(
        workflow::compile(def, None).unwrap(),
        DriverConfig { application_id: "docs".into(), ..DriverConfig::default() },
    )
}

/// The JSON values of `records`.
pub fn values(records: Vec<StoredRecord>) -> Vec<Value> {
    records.into_iter().map(|r| serde_json::from_slice(r.value.as_deref().unwrap()).unwrap()).collect()
}
