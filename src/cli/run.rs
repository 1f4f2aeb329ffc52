//! `keyflow run --config <file>`: one instance of the application, until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

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
    // What the instance is, not every setting: URLs (webhooks, services) can carry secrets.
    tracing::info!(
        application_id = %config.application_id,
        bootstrap_servers = %config.bootstrap_servers,
        processing_guarantee = ?config.processing_guarantee,
        state_dir = %config.state_dir.display(),
        http_listen = ?config.http_listen,
        "starting"
    );
    let admin = kafka::AdminProvisioner::new(&config)?;
    if config.provision_topics {
        let partitions = kafka::source_partitions(&config, &topology)?;
        admin.ensure(&kafka::internal_topics(&config, &topology, partitions)).context("provisioning internal topics")?;
    }
    // Every topic keyflow writes: a record over its limit becomes a dead letter, never a stall.
    let written: Vec<String> =
        topology.sink_topics().into_iter().chain(kafka::internal_topics(&config, &topology, 1).into_iter().map(|t| t.name)).collect();
    let limits = admin.record_limits(&config, &written);
    tracing::info!(?limits, "record size limits");
    let listen = config.http_listen.clone();
    let shutdown_timeout = config.shutdown_timeout();
    let console = console(&config)?;
    let instance = Instance::start_with_limits(config, topology, limits)?;
    let _http = listen.map(|l| crate::observe::Server::start(&l, console, instance.status())).transpose().map_err(anyhow::Error::msg)?;
    let stop = instance.stopper();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Wait for a signal on a small runtime; the stream thread does the work.
    let status = instance.status();
    let signalled = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {
                    // The stream thread ended by itself: it failed (its error is returned below).
                    if instance.is_finished() { return anyhow::Ok(false) }
                }
            }
        }
        anyhow::Ok(true)
    })?;
    if signalled {
        stop();
        let deadline = std::time::Instant::now() + shutdown_timeout;
        while !instance.is_finished() {
            if std::time::Instant::now() >= deadline {
                // As a crash: whatever it had not committed is aborted or restored by the next
                // owner of its partitions. Waiting longer would only have the orchestrator's
                // SIGKILL do the same later.
                tracing::error!(status = ?status.snapshot(), "the stream thread did not stop within shutdown.timeout.ms ({shutdown_timeout:?}); exiting without a clean shutdown");
                // `_exit`, not `exit`: no C++ static destructors (RocksDB's) run under the stream
                // thread, which is still using them.
                let _ = std::io::Write::flush(&mut std::io::stderr());
                // SAFETY: `_exit` ends the process at once; nothing after it runs.
                unsafe { libc::_exit(3) }
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    instance.join().context("the stream thread failed")?;
    Ok(ExitCode::SUCCESS)
}

/// The console of an instance run from `config`: its workflow, its dead letters, its token.
///
/// # Errors
/// The workflow definition does not load.
pub fn console(config: &Config) -> anyhow::Result<Console> {
    let mut console = Console::new(&config.application_id, config.http_peers.clone())
        .dead_letters(DeadLetters { kafka: config.clients(), topic: config.dlq_topic(), registry: config.registry() })
        .token(config.http_auth_token.clone())
        .allowed_hosts(config.http_allowed_hosts.clone());
    if let Some(file) = &config.topology.file {
        // Every version this member runs, the newest first.
        let versions = std::sync::Arc::new(crate::workflow::versions::load(file, &config.topology.versions)?);
        for def in versions.all().rev() {
            console = console.workflow(def.clone());
        }
        console = console.migrations(crate::console::Migrations {
            kafka: config.clients(),
            application_id: config.application_id.clone(),
            versions,
        });
    }
    Ok(console)
}
