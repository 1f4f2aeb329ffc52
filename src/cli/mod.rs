//! Command-line interface: one file per command.

mod demo;
mod dev_broker;
mod dlq;
mod replay;
mod run;
mod schemas;
mod send;
mod tasks;
mod topology;
mod workflow;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "keyflow", version, about = "Stateful, exactly-once workflow state machines over Kafka topics")]
pub struct Cli {
    /// Log more (-v: info, -vv: debug, -vvv: trace; the default is warnings for `demo`, info otherwise). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an instance of the application against a Kafka cluster.
    Run(run::Args),
    /// Run the example end to end on an in-process broker and print what happened.
    Demo(demo::Args),
    /// Run an in-process Kafka-protocol broker (librdkafka's mock cluster) and print its address.
    DevBroker(dev_broker::Args),
    /// Inspect topologies.
    #[command(subcommand)]
    Topology(topology::Command),
    /// Check schema evolution in schemas/ and register schemas with a registry.
    #[command(subcommand)]
    Schemas(schemas::Command),
    /// Move the application's offsets back to re-process, optionally rebuilding its state.
    Replay(replay::Args),
    /// Inspect dead letters, redrive them to their source, purge them.
    #[command(subcommand)]
    Dlq(dlq::Command),
    /// Produce records (a value, or standard input's lines) with the configuration's client settings.
    Send(send::Args),
    /// List and complete embedded human tasks (no Camunda).
    #[command(subcommand)]
    Tasks(tasks::Command),
    /// A running workflow's instances per version and state, and their migration to a version.
    #[command(subcommand)]
    Workflow(workflow::Command),
}

/// Runs a parsed command line.
///
/// # Errors
/// Any failure, with context, for the binary to print.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(a) => run::run(a),
        Command::Demo(a) => demo::run(a),
        Command::DevBroker(a) => dev_broker::run(a),
        Command::Topology(c) => topology::run(c),
        Command::Schemas(c) => schemas::run(c),
        Command::Tasks(c) => tasks::run(c),
        Command::Send(a) => send::run(a),
        Command::Dlq(c) => dlq::run(c),
        Command::Replay(a) => replay::run(a),
        Command::Workflow(c) => workflow::run(c),
    }
}

impl Cli {
    /// The demo prints its own story; it logs only warnings unless asked.
    pub fn log_level(&self) -> u8 {
        match self.command {
            Command::Demo(_) if self.verbose == 0 => 0,
            _ if self.verbose > 0 => self.verbose,
            _ => self.verbose + 1,
        }
    }
}

/// Logs to stderr; `RUST_LOG` wins over `-v`. Levels: 0 warnings, 1 info, 2 debug, 3+ trace.
pub fn init_tracing(level: u8) {
    let default = match level {
        0 => "warn",
        1 => "keyflow=info,warn",
        2 => "keyflow=debug,info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: logs redirected to files and collectors stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}
