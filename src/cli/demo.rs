//! `keyflow demo`: the document-approval architecture end to end on an in-process broker, with
//! nothing installed (see `crate::demo`). Exits non-zero when the outcome does not match the
//! inputs.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use crate::demo::{self, Options, Output};
use crate::runtime::Guarantee;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Documents to upload.
    #[arg(long, default_value_t = 500)]
    documents: usize,
    /// Partitions of every topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// `exactly_once_v2` or `at_least_once` (the mock broker does not isolate aborted
    /// transactions; see README, what was verified where).
    #[arg(long, default_value = "exactly_once_v2")]
    guarantee: String,
    /// The review escalation, in ms (48 h in the definition).
    #[arg(long, default_value_t = 8000)]
    escalate_after_ms: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// After the summary, keep the workflow running with documents arriving and serve the web
    /// console here (default 127.0.0.1:8080) until Ctrl-C.
    #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:8080", value_name = "ADDRESS")]
    serve: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let guarantee: Guarantee =
        serde_json::from_value(json!(args.guarantee)).context("--guarantee must be at_least_once or exactly_once_v2")?;
    let options = Options {
        documents: args.documents,
        partitions: args.partitions,
        guarantee,
        escalate_after: Duration::from_millis(args.escalate_after_ms),
        output: if args.json { Output::Json } else { Output::Text },
        serve: args.serve,
    };
    Ok(if demo::run(&options)?.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
