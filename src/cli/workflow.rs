//! `keyflow workflow instances|migrate`: the instances of a running workflow, read from its
//! changelog, and their migration to another version (see `workflow::migration`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

use crate::config::Config;
use crate::ops::migrate;
use crate::workflow::Versions;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Instances per version and state (from the `instances` changelog).
    Instances {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Move instances to another version of their workflow, exactly once, in order with their
    /// events. Refuses an incomplete mapping; `--dry-run` prints what would move.
    Migrate {
        #[arg(long, short)]
        config: PathBuf,
        /// The target version; default the newest.
        #[arg(long)]
        to: Option<u32>,
        /// Only instances on this version (default: every version but the target).
        #[arg(long)]
        from: Option<u32>,
        /// Only instances in this state (repeatable).
        #[arg(long = "state")]
        states: Vec<String>,
        /// Only these instances (repeatable).
        #[arg(long = "id")]
        ids: Vec<String>,
        /// `old=new`: where instances in `old` go (repeatable). A state not mapped keeps its
        /// name if the target version has it.
        #[arg(long = "map", value_parser = parse_mapping)]
        mapping: Vec<(String, String)>,
        /// Names the migration; running it again under the same name changes nothing.
        /// Default: `m<milliseconds now>`.
        #[arg(long)]
        name: Option<String>,
        /// Print the counts and the mapping, move nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn parse_mapping(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(a, b)| (a.trim().to_owned(), b.trim().to_owned())).ok_or_else(|| format!("`{s}` is not old=new"))
}

pub fn run(c: Command) -> anyhow::Result<ExitCode> {
    match c {
        Command::Instances { config } => {
            let (config, versions) = load(&config)?;
            let mut counts: BTreeMap<(u32, String, bool), usize> = BTreeMap::new();
            for (_, i) in migrate::instances(&config.clients(), &config.application_id, &versions)? {
                *counts.entry((i.version, i.state, i.finished)).or_default() += 1;
            }
            println!("{} (versions here: {:?})", versions.name(), versions.numbers());
            for ((v, s, finished), n) in counts {
                println!("  version {v}  {s:<24} {n:>8}{}", if finished { "  (finished)" } else { "" });
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { config, to, from, states, ids, mapping, name, dry_run } => {
            let (config, versions) = load(&config)?;
            let request = migrate::Request { to, from, states, ids, mapping: mapping.into_iter().collect(), name, dry_run };
            let outcome = match migrate::migrate(&config.clients(), &config.application_id, &versions, request) {
                Ok(o) => o,
                Err(e @ migrate::Error::Refused(_)) => {
                    println!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
                Err(e) => return Err(e.into()),
            };
            let n = outcome.plan.commands.len();
            if n == 0 {
                println!(
                    "nothing to migrate: no unfinished instance of `{}` matches (already on version {}?)",
                    versions.name(),
                    outcome.to
                );
                return Ok(ExitCode::SUCCESS);
            }
            println!("migration {}: {n} instance(s) of `{}` to version {}", outcome.name, versions.name(), outcome.to);
            for ((v, s), (t, count)) in &outcome.plan.moves {
                println!("  version {v} {s} -> {t}: {count}");
            }
            if outcome.sent {
                println!("sent {n} migration command(s); each instance moves when its partition reaches it");
            } else {
                println!("dry run: nothing was moved");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<(Config, Versions)> {
    let config = Config::load(path, std::env::vars())?;
    anyhow::ensure!(!config.bootstrap_servers.is_empty(), "bootstrap.servers is required");
    let file = config.topology.file.as_ref().context("[topology] file: the configuration runs no workflow")?;
    let versions = crate::workflow::versions::load(file, &config.topology.versions)?;
    Ok((config, versions))
}
