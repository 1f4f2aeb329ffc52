//! `keyflow workflow instances|migrate`: the instances of a running workflow, read from its
//! changelog, and their migration to another version (see `workflow::migration`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};

use crate::config::Config;
use crate::workflow::migration::{self, Selection};
use crate::workflow::{Instance, Versions};

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

const READ_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(c: Command) -> anyhow::Result<ExitCode> {
    match c {
        Command::Instances { config } => {
            let (config, versions) = load(&config)?;
            let mut counts: BTreeMap<(u32, String, bool), usize> = BTreeMap::new();
            for (_, i) in instances(&config, &versions)? {
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
            let to = to.unwrap_or(versions.newest().version);
            let mapping: BTreeMap<String, String> = mapping.into_iter().collect();
            let name = name.unwrap_or_else(|| format!("m{}", crate::runtime::now_ms()));
            let all = instances(&config, &versions)?;
            let plan = match migration::plan(&versions, &all, &Selection { from_version: from, states, ids }, to, &mapping, &name) {
                Ok(p) => p,
                Err(refusal) => {
                    println!("refused: {refusal}; nothing was moved");
                    return Ok(ExitCode::FAILURE);
                }
            };
            if plan.commands.is_empty() {
                println!("nothing to migrate: no unfinished instance of `{}` matches (already on version {to}?)", versions.name());
                return Ok(ExitCode::SUCCESS);
            }
            println!("migration {name}: {} instance(s) of `{}` to version {to}", plan.commands.len(), versions.name());
            for ((v, s), (t, n)) in &plan.moves {
                println!("  version {v} {s} -> {t}: {n}");
            }
            if dry_run {
                println!("dry run: nothing was moved");
                return Ok(ExitCode::SUCCESS);
            }
            send(&config, &versions, &plan.commands)?;
            println!("sent {} migration command(s); each instance moves when its partition reaches it", plan.commands.len());
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

/// Every instance in the `instances` changelog as of now, with its partition (that of its
/// events too: a task owns partition p of every input and of every changelog).
fn instances(config: &Config, versions: &Versions) -> anyhow::Result<Vec<(i32, Instance)>> {
    let topic = crate::state::changelog_topic(&config.application_id, crate::workflow::STORE);
    let mut latest: BTreeMap<Vec<u8>, (i32, Option<Vec<u8>>)> = BTreeMap::new();
    for m in crate::kafka::read::read_to_end(config.clients(), &topic, READ_TIMEOUT).with_context(|| format!("reading {topic}"))? {
        if let Some(k) = m.key {
            latest.insert(k, (m.partition, m.value));
        }
    }
    let mut out = Vec::new();
    let mut unreadable = 0;
    for (_, (partition, value)) in latest {
        match value.as_deref().map(serde_json::from_slice::<Instance>) {
            Some(Ok(i)) if i.workflow == versions.name() => out.push((partition, i)),
            Some(Err(_)) => unreadable += 1,
            _ => {}
        }
    }
    if unreadable > 0 {
        eprintln!("warning: {unreadable} stored value(s) of {topic} are not instances this keyflow can read; left out");
    }
    Ok(out)
}

/// The commands, in one transaction: all are sent or none.
fn send(config: &Config, versions: &Versions, commands: &[(i32, String, migration::Migration)]) -> anyhow::Result<()> {
    let topic = &versions.newest().inputs[0].get_ref().topic;
    let producer: BaseProducer =
        config.clients().transactional_producer(&format!("{}-migrate", config.application_id)).create().context("producer")?;
    producer.init_transactions(READ_TIMEOUT).context("init transactions")?;
    producer.begin_transaction().context("begin transaction")?;
    for (partition, key, m) in commands {
        let value = serde_json::to_vec(m)?;
        let headers = OwnedHeaders::new().insert(Header { key: crate::record::CONTROL_HEADER, value: Some(migration::CONTROL) });
        let record = BaseRecord::<str, [u8]>::to(topic).partition(*partition).key(key.as_str()).payload(&value).headers(headers);
        crate::kafka::send_waiting(&producer, record).with_context(|| format!("sending to {topic}"))?;
    }
    producer.commit_transaction(READ_TIMEOUT).context("commit")?;
    Ok(())
}
