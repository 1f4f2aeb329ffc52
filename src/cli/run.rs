//! `keyflow run --config <file>`: one instance of the application, until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use std::sync::Arc;

use crate::config::Config;
use crate::console::{Console, DeadLetters};
use crate::kafka::{self, Provisioner as _};
use crate::runtime::Instance;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML configuration; `KEYFLOW_*` environment variables override it.
    #[arg(long, short)]
    config: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config, std::env::vars())?;
    anyhow::ensure!(!config.bootstrap_servers.is_empty(), "bootstrap.servers is required by `keyflow run`");
    let topology = config.build_topology().map_err(anyhow::Error::msg)?;
    tracing::info!(config = ?config, "starting");
    if config.provision_topics {
        let partitions = kafka::source_partitions(&config, &topology)?;
        kafka::AdminProvisioner::new(&config)?
            .ensure(&kafka::internal_topics(&config, &topology, partitions))
            .context("provisioning internal topics")?;
    }
    let listen = config.http_listen.clone();
    let console = console(&config)?;
    let instance = Instance::start(config, topology)?;
    let _http = listen.map(|l| crate::observe::Server::start(&l, console, instance.status())).transpose().map_err(anyhow::Error::msg)?;
    let stop = instance.stopper();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Wait for a signal on a small runtime; the stream thread does the work.
    let status = instance.status();
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {
                    if !status.snapshot().running && instance.is_finished() { break }
                }
            }
        }
        anyhow::Ok(())
    })?;
    stop();
    instance.join()?;
    Ok(ExitCode::SUCCESS)
}

/// The console of an instance run from `config`: its workflow, its dead letters, its token.
///
/// # Errors
/// The workflow definition does not load.
pub fn console(config: &Config) -> anyhow::Result<Console> {
    let mut console = Console::new(&config.application_id, config.http_peers.clone())
        .dead_letters(DeadLetters { bootstrap: config.bootstrap_servers.clone(), topic: config.dlq_topic(), registry: config.registry() })
        .token(config.http_auth_token.clone());
    if let Some(file) = &config.topology.file {
        console = console.workflow(Arc::new(crate::workflow::load(file)?));
    }
    Ok(console)
}
