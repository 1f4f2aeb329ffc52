//! `keyflow tasks list|complete`: act on embedded human tasks (`[connectors.tasks] backend =
//! "embedded"`), which live on a Kafka topic instead of Camunda.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Map, Value};

use crate::config::Config;
use crate::connectors::{config::TaskBackend, embedded};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Open tasks (all tasks with --all), oldest first.
    List {
        /// The connectors' configuration (the one `keyflow run` uses for them).
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        all: bool,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Complete an open task: the workflow receives `task.completed` with these variables.
    Complete {
        id: String,
        #[arg(long, short)]
        config: PathBuf,
        /// A variable, `name=value` (repeatable); values are text, as a form submits them.
        #[arg(long = "var", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// Who completes it. Default: $USER.
        #[arg(long, env = "USER", default_value = "cli")]
        user: String,
    },
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("`{s}` is not name=value"))?;
    if k.is_empty() {
        return Err(format!("`{s}` has no name"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// How to reach the cluster and the task topic, as the configuration names them.
fn topic(config: &Path) -> anyhow::Result<(crate::kafka::Clients, String)> {
    let c = Config::load(config, std::env::vars())?;
    let conn = c.connectors.as_ref().context("the configuration has no [connectors] section")?;
    let tasks = conn.tasks.as_ref().context("the configuration has no [connectors.tasks] section")?;
    anyhow::ensure!(
        tasks.backend == TaskBackend::Embedded,
        "[connectors.tasks] backend is {:?}: act on those tasks in Camunda's Tasklist",
        tasks.backend
    );
    anyhow::ensure!(!c.bootstrap_servers.is_empty(), "bootstrap.servers is required");
    let def = crate::workflow::load(&conn.workflow).map_err(anyhow::Error::msg)?;
    Ok((c.clients(), crate::connectors::embedded_task_topic(tasks, &def.name)))
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::List { config, all, json } => {
            let (kafka, topic) = topic(&config)?;
            let tasks: Vec<Value> = embedded::tasks(&kafka, &topic)?.into_iter().filter(|t| all || t["state"] == "CREATED").collect();
            let text = |v: &Value| v.as_str().map_or_else(|| if v.is_null() { "-".into() } else { v.to_string() }, str::to_owned);
            if json {
                for t in &tasks {
                    println!("{t}");
                }
            } else if tasks.is_empty() {
                println!("no {}tasks on {topic}", if all { "" } else { "open " });
            } else {
                println!("{:<28} {:<10} {:<24} {:<16} NAME", "TASK", "STATE", "INSTANCE", "GROUPS");
                for t in &tasks {
                    let groups =
                        t["candidateGroups"].as_array().map(|g| g.iter().map(text).collect::<Vec<_>>().join(",")).unwrap_or_default();
                    println!(
                        "{:<28} {:<10} {:<24} {:<16} {}",
                        text(&t["taskId"]),
                        text(&t["state"]),
                        text(&t["instanceId"]),
                        groups,
                        text(&t["name"])
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Complete { id, config, vars, user } => {
            let (kafka, topic) = topic(&config)?;
            let variables: Map<String, Value> = vars.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            let now = crate::runtime::now_ms();
            let event = embedded::complete(&kafka, &topic, &id, &user, variables, now)?;
            println!("completed {id}: sent {event}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
