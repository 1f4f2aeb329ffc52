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
        /// The definition running now: refuse a change its instances in flight would notice
        /// unless `file` is a new version of it.
        #[arg(long)]
        against: Option<PathBuf>,
    },
    /// What changed between two definitions of a workflow, and what instances in flight notice.
    Diff { old: PathBuf, new: PathBuf },
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
        Command::Validate { file, against } => {
            let def = match crate::workflow::load(&file) {
                Ok(def) => def,
                Err(e) => {
                    println!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            println!(
                "{}: ok (version {}, {} states, {} transitions, reads {} topics)",
                file.display(),
                def.version,
                def.states.len(),
                def.transitions.len(),
                def.inputs.len()
            );
            let Some(against) = against else { return Ok(ExitCode::SUCCESS) };
            let old = crate::workflow::load(&against)?;
            match compatibility(&old, &def) {
                Ok(verdict) => {
                    println!("{verdict}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(refusal) => {
                    print!("{refusal}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Diff { old, new } => {
            let (old, new) = (crate::workflow::load(&old)?, crate::workflow::load(&new)?);
            anyhow::ensure!(old.name == new.name, "these are two workflows (`{}` and `{}`), not two versions of one", old.name, new.name);
            println!("{} version {} -> version {}", new.name, old.version, new.version);
            print!("{}", crate::workflow::diff::diff(&old, &new));
            Ok(ExitCode::SUCCESS)
        }
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

/// Whether `new` may replace `old`: as the same version only if instances in flight would not
/// notice; else as a later version (the instances stay on `old`'s, which must keep running).
fn compatibility(old: &crate::workflow::Definition, new: &crate::workflow::Definition) -> Result<String, String> {
    use crate::workflow::diff::{diff, Impact};
    if old.name != new.name {
        return Err(format!("refused: `{}` is another workflow than `{}`\n", new.name, old.name));
    }
    let d = diff(old, new);
    match (new.version.cmp(&old.version), d.impact()) {
        (std::cmp::Ordering::Less, _) => {
            Err(format!("refused: version {} is older than the running version {}\n", new.version, old.version))
        }
        (std::cmp::Ordering::Equal, Impact::None) => {
            Ok(format!("compatible with version {}: instances in flight notice nothing", old.version))
        }
        (std::cmp::Ordering::Equal, _) => Err(format!(
            "refused: instances in flight of version {} would notice this change:\n{d}\
             deploy it as version {} (set `version = {}`), keep the old file in [topology] versions, \
             and migrate the instances you want moved\n",
            old.version,
            old.version + 1,
            old.version + 1
        )),
        (std::cmp::Ordering::Greater, _) => Ok(format!(
            "a new version ({} after {}): instances of version {} keep running by it, so keep its file in [topology] versions\n{d}",
            new.version, old.version, old.version
        )),
    }
}
