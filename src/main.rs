//! The `keyflow` binary: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = keyflow::cli::Cli::parse();
    keyflow::cli::init_tracing(cli.log_level());
    match keyflow::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
