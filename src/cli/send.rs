//! `keyflow send --config <file> --topic <topic> [--key <key>] [<value>]`: produces records with
//! the configuration's client settings (`[client]`, `[producer]`), so it reaches a secured cluster
//! as `keyflow run` does. For trying a workflow by hand and for scripts: a deployment's events come
//! from its services. Without a value, each line of standard input is one record, `key<TAB>value`
//! or a value alone (keyed by `--key`).

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};

use crate::config::Config;
use crate::kafka::Role;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The application's configuration (bootstrap servers and client settings).
    #[arg(long, short)]
    config: PathBuf,
    /// The topic to write to.
    #[arg(long)]
    topic: String,
    /// The record's key (the workflow instance).
    #[arg(long)]
    key: Option<String>,
    /// The record's value; without it, standard input's lines.
    value: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config, std::env::vars())?;
    anyhow::ensure!(!config.bootstrap_servers.is_empty(), "bootstrap.servers is required");
    let records: Vec<(Option<String>, String)> = match args.value {
        Some(v) => vec![(args.key.clone(), v)],
        None => std::io::stdin()
            .lock()
            .lines()
            .map_while(Result::ok)
            .filter(|l| !l.trim().is_empty())
            .map(|l| match l.split_once('\t') {
                Some((k, v)) => (Some(k.to_owned()), v.to_owned()),
                None => (args.key.clone(), l),
            })
            .collect(),
    };
    // Java's partitioner, as keyflow's own producer: a key lands where Java producers put it.
    let producer: BaseProducer =
        config.clients().config(Role::Producer).set("enable.idempotence", "true").set("partitioner", "murmur2_random").create()?;
    for (key, value) in &records {
        let mut record = BaseRecord::<str, str>::to(&args.topic).payload(value.as_str());
        if let Some(k) = key {
            record = record.key(k.as_str());
        }
        crate::kafka::send_waiting(&producer, record)?;
    }
    producer.flush(Duration::from_secs(30))?;
    println!("sent {} record(s) to {}", records.len(), args.topic);
    Ok(ExitCode::SUCCESS)
}
