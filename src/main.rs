//! The `ringd` binary: parse arguments, set up logging, run the server until SIGINT/SIGTERM,
//! and turn the outcome into an exit code.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use ringd::cli::Args;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(&args.log_level);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A closed stderr must not bring the server down (the default reports the failed
        // write on stderr, which panics when stderr itself is gone).
        .log_internal_errors(false)
        .init();
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = args.into_config().map_err(anyhow::Error::msg)?;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    let server = ringd::start(config)?;
    let trigger = server.drain_trigger();
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            // Drain first: nothing, not even a failing log write, may stand in its way.
            trigger.fire();
            tracing::info!("signal {sig} received: draining");
        }
    });
    server.wait()?;
    Ok(())
}
