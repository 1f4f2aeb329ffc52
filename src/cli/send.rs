//! `keyflow send --config <file> --topic <topic> [--key <key>] [<value>]`: produces records with
//! the configuration's client settings (`[client]`, `[producer]`), so it reaches a secured cluster
//! as `keyflow run` does. For trying a workflow by hand and for scripts: a deployment's events come
//! from its services. Without a value, each line of standard input is one record, `key<TAB>value`
//! or a value alone (keyed by `--key`).

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::ClientContext;

use crate::config::Config;

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
        None => {
            let mut records = Vec::new();
            for (n, line) in std::io::stdin().lock().lines().enumerate() {
                let line = line.map_err(|e| anyhow::anyhow!("line {} of standard input: {e}; nothing was sent", n + 1))?;
                if line.trim().is_empty() {
                    continue;
                }
                // The first tab ends the key (a JSON value has no raw tab inside its strings).
                records.push(match line.split_once('\t') {
                    Some((k, v)) => (Some(k.to_owned()), v.to_owned()),
                    None => (args.key.clone(), line),
                });
            }
            records
        }
    };
    let producer: BaseProducer<Deliveries> = config.clients().producer().create_with_context(Deliveries::default())?;
    for (key, value) in &records {
        let mut record = BaseRecord::<str, str>::to(&args.topic).payload(value.as_str());
        if let Some(k) = key {
            record = record.key(k.as_str());
        }
        crate::kafka::send_waiting(&producer, record).map_err(|e| anyhow::anyhow!("cannot send to {}: {e}", args.topic))?;
    }
    producer.flush(Duration::from_secs(30))?;
    let failed = producer.context().failed.lock().expect("deliveries").clone();
    if let Some((n, first)) = failed {
        anyhow::bail!("{n} of {} record(s) were not delivered to {}: {first}", records.len(), args.topic);
    }
    println!("sent {} record(s) to {}", records.len(), args.topic);
    Ok(ExitCode::SUCCESS)
}

/// Counts the records the broker did not take, with the first reason.
#[derive(Default)]
struct Deliveries {
    failed: Mutex<Option<(usize, String)>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            let mut f = self.failed.lock().expect("deliveries");
            match f.as_mut() {
                Some((n, _)) => *n += 1,
                None => *f = Some((1, e.to_string())),
            }
        }
    }
}
