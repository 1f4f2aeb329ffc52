//! `keyflow topology validate|describe`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::TopologyConfig;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a workflow definition; errors name the line and the problem.
    Validate {
        /// A definition, e.g. topologies/document-approval.toml.
        file: PathBuf,
    },
    /// Print a workflow's states and transitions and the topology it compiles to (or a built-in's).
    Describe {
        /// A definition file; without it, the built-in topology.
        file: Option<PathBuf>,
        /// A built-in topology.
        #[arg(long, default_value = "status-tracker")]
        builtin: String,
    },
}

pub fn run(c: Command) -> anyhow::Result<ExitCode> {
    match c {
        Command::Validate { file } => match crate::workflow::load(&file) {
            Ok(def) => {
                println!(
                    "{}: ok ({} states, {} transitions, reads {} topics)",
                    file.display(),
                    def.states.len(),
                    def.transitions.len(),
                    def.inputs.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                println!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Describe { file: Some(file), .. } => {
            let def = crate::workflow::load(&file)?;
            print!("{}", crate::workflow::describe(&def));
            // Avro inputs are described against a throwaway in-process registry: describing
            // needs no real one.
            let registry =
                crate::serde::Registry::new(&crate::serde::RegistryConfig { url: "mock://describe".into(), ..Default::default() })?;
            print!("{}", crate::workflow::compile(def, Some(&registry))?.describe());
            Ok(ExitCode::SUCCESS)
        }
        Command::Describe { file: None, builtin } => {
            let d = TopologyConfig::default();
            let t = crate::builtin::by_name(&builtin, &d.input, &d.output, d.sla_ms).map_err(anyhow::Error::msg)?;
            print!("{}", t.describe());
            Ok(ExitCode::SUCCESS)
        }
    }
}
