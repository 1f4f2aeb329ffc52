//! `keyflow topology validate|describe|create-topics`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::TopologyConfig;
use crate::workflow::diagram::{self, Format};

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
        /// `text` (both graphs), or one graph as `dot`, `mermaid` or `svg`.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Which graph `dot`, `mermaid` and `svg` draw: the workflow's states and transitions, or
        /// the topology it compiles to (a built-in has only the topology).
        #[arg(long, value_enum, default_value = "workflow")]
        graph: Graph,
    },
    /// Create the topics a configuration's topology reads and writes, where missing (`keyflow run`
    /// creates its internal topics itself; input topics must exist before it starts).
    CreateTopics {
        #[arg(long, short)]
        config: PathBuf,
        /// Partitions of each topic created.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Graph {
    Workflow,
    Topology,
}

/// A topology or a workflow graph in the asked format.
fn draw(format: Format, dot: impl FnOnce(bool) -> String, mermaid: impl FnOnce() -> String) -> anyhow::Result<String> {
    Ok(match format {
        Format::Dot => dot(false),
        Format::Mermaid => mermaid(),
        Format::Svg => diagram::svg(&dot(true)).map_err(anyhow::Error::msg)?,
        Format::Text => unreachable!("text is described, not drawn"),
    })
}

pub fn run(c: Command) -> anyhow::Result<ExitCode> {
    match c {
        Command::CreateTopics { config, partitions } => {
            use crate::kafka::Provisioner as _;
            let config = crate::config::Config::load(&config, std::env::vars())?;
            anyhow::ensure!(!config.bootstrap_servers.is_empty(), "bootstrap.servers is required");
            anyhow::ensure!(partitions > 0, "--partitions must be at least 1");
            let topology = config.build_topology().map_err(anyhow::Error::msg)?;
            let mut names: Vec<String> = topology.source_topics().into_iter().chain(topology.sink_topics()).collect();
            names.sort();
            names.dedup();
            let specs: Vec<crate::kafka::TopicSpec> =
                names.iter().map(|name| crate::kafka::TopicSpec { name: name.clone(), partitions, compacted: false }).collect();
            crate::kafka::AdminProvisioner::new(&config)?.ensure(&specs)?;
            println!("topics ready: {}", names.join(", "));
            Ok(ExitCode::SUCCESS)
        }
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
        Command::Describe { file: Some(file), format, graph, .. } => {
            let def = crate::workflow::load(&file)?;
            if format == Format::Text || graph == Graph::Workflow {
                if format == Format::Text {
                    print!("{}", crate::workflow::describe(&def));
                } else {
                    print!("{}", draw(format, |compact| diagram::workflow_dot(&def, None, compact), || diagram::workflow_mermaid(&def))?);
                    return Ok(ExitCode::SUCCESS);
                }
            }
            // Avro inputs are described against a throwaway in-process registry: describing
            // needs no real one.
            let registry =
                crate::serde::Registry::new(&crate::serde::RegistryConfig { url: "mock://describe".into(), ..Default::default() })?;
            let t = crate::workflow::compile(def, Some(&registry))?;
            match format {
                Format::Text => print!("{}", t.describe()),
                _ => print!("{}", draw(format, |_| diagram::topology_dot(&t), || diagram::topology_mermaid(&t))?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Describe { file: None, builtin, format, graph } => {
            let d = TopologyConfig::default();
            let t = crate::builtin::by_name(&builtin, &d.input, &d.output, d.sla_ms).map_err(anyhow::Error::msg)?;
            match (format, graph) {
                (Format::Text, _) => print!("{}", t.describe()),
                (_, Graph::Workflow) => anyhow::bail!("a built-in topology has no workflow graph: use --graph topology"),
                _ => print!("{}", draw(format, |_| diagram::topology_dot(&t), || diagram::topology_mermaid(&t))?),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
