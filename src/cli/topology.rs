//! `keyflow topology describe`.

use std::process::ExitCode;

use clap::Subcommand;

use crate::config::TopologyConfig;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a topology's nodes, stores and changelogs.
    Describe {
        /// A built-in topology.
        #[arg(long, default_value = "status-tracker")]
        builtin: String,
    },
}

pub fn run(c: Command) -> anyhow::Result<ExitCode> {
    match c {
        Command::Describe { builtin } => {
            let d = TopologyConfig::default();
            let t = crate::builtin::by_name(&builtin, &d.input, &d.output, d.sla_ms).map_err(anyhow::Error::msg)?;
            print!("{}", t.describe());
            Ok(ExitCode::SUCCESS)
        }
    }
}
