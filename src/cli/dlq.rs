//! `keyflow dlq list|show|redrive|purge`: inspect the application's dead letters and act on them.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::Value;

use crate::config::Config;
use crate::ops::dlq::{self, Filter};

#[derive(Debug, clap::Args)]
pub struct Selection {
    /// The application's configuration (bootstrap servers, DLQ topic, schema registry).
    #[arg(long, short)]
    config: PathBuf,
    /// Error class: deserialization, processing or timer.
    #[arg(long)]
    class: Option<String>,
    /// Source topic the record failed on.
    #[arg(long)]
    topic: Option<String>,
    /// Record key (the workflow instance).
    #[arg(long)]
    key: Option<String>,
    /// Dead-lettered at or after (RFC 3339, or ms since the epoch).
    #[arg(long, value_parser = dlq::parse_time)]
    since: Option<i64>,
    /// Dead-lettered before (RFC 3339, or ms since the epoch).
    #[arg(long, value_parser = dlq::parse_time)]
    until: Option<i64>,
    /// A dead letter by `<partition>:<offset>` (repeatable).
    #[arg(long = "id")]
    ids: Vec<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Dead letters not yet redriven or purged (all with --all).
    List {
        #[command(flatten)]
        select: Selection,
        #[arg(long)]
        all: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// One dead letter in full: error headers, key, value (Avro decoded through the registry).
    Show {
        /// `<partition>:<offset>`.
        id: String,
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Re-publish the selected dead letters to their source topic (or --to), once.
    Redrive {
        #[command(flatten)]
        select: Selection,
        #[arg(long)]
        to: Option<String>,
    },
    /// Mark the selected dead letters as dealt with (Kafka deletes them by retention).
    Purge {
        #[command(flatten)]
        select: Selection,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

fn load(config: &Path) -> anyhow::Result<Config> {
    let c = Config::load(config, std::env::vars())?;
    anyhow::ensure!(!c.bootstrap_servers.is_empty(), "bootstrap.servers is required");
    Ok(c)
}

impl Selection {
    fn filter(&self, include_handled: bool) -> Filter {
        Filter {
            class: self.class.clone(),
            source_topic: self.topic.clone(),
            key: self.key.clone(),
            since: self.since,
            until: self.until,
            ids: self.ids.clone(),
            include_handled,
        }
    }
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::List { select, all, json } => {
            let c = load(&select.config)?;
            let found = dlq::list(c.clients(), &c.dlq_topic(), &select.filter(all))?;
            if json {
                found.iter().for_each(|d| println!("{}", d.to_json()));
            } else if found.is_empty() {
                println!("no dead letters on {} match", c.dlq_topic());
            } else {
                println!("{:<10} {:<24} {:<16} {:<28} {:<20} {:<10} MESSAGE", "ID", "AT", "CLASS", "SOURCE", "KEY", "HANDLED");
                for d in &found {
                    let v = d.to_json();
                    let source =
                        format!("{}/{}@{}", text(&v["source"]["topic"]), text(&v["source"]["partition"]), text(&v["source"]["offset"]));
                    let at = jiff::Timestamp::from_millisecond(d.at()).map(|t| format!("{t:.0}")).unwrap_or_default();
                    println!(
                        "{:<10} {:<24} {:<16} {:<28} {:<20} {:<10} {}",
                        d.id(),
                        at,
                        text(&v["class"]),
                        source,
                        d.key_text(),
                        text(&v["handled"]["action"]),
                        text(&v["message"])
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { id, config } => {
            let c = load(&config)?;
            let filter = Filter { ids: vec![id.clone()], include_handled: true, ..Filter::default() };
            let d = dlq::list(c.clients(), &c.dlq_topic(), &filter)?
                .into_iter()
                .next()
                .with_context(|| format!("no dead letter {id} on {}", c.dlq_topic()))?;
            println!("{}", serde_json::to_string_pretty(&dlq::detail(c.registry(), &d)?)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Redrive { select, to } => {
            let c = load(&select.config)?;
            let r = dlq::redrive(c.clients(), &c.dlq_topic(), &select.filter(false), to.as_deref(), crate::runtime::now_ms())?;
            println!(
                "redrove {} dead letter(s){}",
                r.done.len(),
                if r.skipped.is_empty() { String::new() } else { format!("; {} already handled, left alone", r.skipped.len()) }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Purge { select, yes } => {
            let c = load(&select.config)?;
            let filter = select.filter(false);
            let n = dlq::list(c.clients(), &c.dlq_topic(), &filter)?.len();
            if n == 0 {
                println!("nothing to purge");
                return Ok(ExitCode::SUCCESS);
            }
            if !yes {
                anyhow::ensure!(std::io::stdin().is_terminal(), "purging {n} dead letter(s) needs confirmation: pass --yes");
                print!("purge {n} dead letter(s) from {}? type yes: ", c.dlq_topic());
                std::io::stdout().flush()?;
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if answer.trim() != "yes" {
                    println!("nothing purged");
                    return Ok(ExitCode::FAILURE);
                }
            }
            let r = dlq::purge(c.clients(), &c.dlq_topic(), &filter, crate::runtime::now_ms())?;
            println!("purged {} dead letter(s)", r.done.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| if v.is_null() { "-".into() } else { v.to_string() }, str::to_owned)
}
