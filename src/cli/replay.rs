//! `keyflow replay`: move the application's offsets back to re-process its inputs, optionally
//! rebuilding its state from them (see `crate::ops::replay`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::Config;
use crate::ops::replay::{self, Target};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["to_earliest", "to_offset", "to_datetime", "by_duration"])))]
pub struct Args {
    /// The application's configuration.
    #[arg(long, short)]
    config: PathBuf,
    /// Back to the beginning of every input partition.
    #[arg(long)]
    to_earliest: bool,
    /// To this offset in every input partition.
    #[arg(long)]
    to_offset: Option<i64>,
    /// To the first record at or after this time (RFC 3339).
    #[arg(long)]
    to_datetime: Option<String>,
    /// To this long ago (`30m`, `6h`, `2d`).
    #[arg(long)]
    by_duration: Option<String>,
    /// Void the state (reset markers in every changelog, this machine's local state deleted), so it
    /// is rebuilt from the replayed inputs.
    #[arg(long)]
    wipe_state: bool,
    /// Show what would change and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Go on when the broker cannot say whether instances are alive (you stopped them all).
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config, std::env::vars())?;
    anyhow::ensure!(!config.bootstrap_servers.is_empty(), "bootstrap.servers is required");
    let topology = config.build_topology().map_err(anyhow::Error::msg)?;
    let now = crate::runtime::now_ms();
    let target = if args.to_earliest {
        Target::Earliest
    } else if let Some(o) = args.to_offset {
        Target::Offset(o)
    } else if let Some(t) = &args.to_datetime {
        Target::Time(t.parse::<jiff::Timestamp>().map_err(|e| anyhow::anyhow!("--to-datetime `{t}`: {e}"))?.as_millisecond())
    } else {
        let d = args.by_duration.as_deref().expect("clap requires one target");
        let d: Duration =
            crate::workflow::definition::parse_duration(d).ok_or_else(|| anyhow::anyhow!("--by-duration `{d}`: use e.g. 30m, 6h, 2d"))?;
        Target::Time(now - d.as_millis() as i64)
    };
    let plan = replay::plan(&config, &topology, target, args.wipe_state)?;
    println!("replay of `{}`{}:", config.application_id, if args.dry_run { " (dry run: nothing changes)" } else { "" });
    print!("{plan}");
    if args.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    replay::check_no_members(&config, args.force)?;
    replay::execute(&config, &topology, &plan)?;
    println!("done: start the instances to re-process");
    Ok(ExitCode::SUCCESS)
}
