//! The `loadgen` binary: parse, run, print the table, write the files asked for.

use std::process::ExitCode;

use clap::Parser;
use loadgen::args::Args;
use loadgen::report::Report;
use loadgen::{hdr, plot, run};

fn main() -> ExitCode {
    match main_inner() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main_inner() -> anyhow::Result<()> {
    let args = Args::parse();
    let quiet = args.quiet;
    let server_pid = args.server_pid;
    let (json, hgrm, hlog, svg) = (
        args.json.clone(),
        args.hgrm.clone(),
        args.hlog.clone(),
        args.plot.clone(),
    );
    let plan = args.into_plan().map_err(anyhow::Error::msg)?;
    let result = run::run(plan, server_pid, !quiet && run::stdout_is_terminal())?;
    let report = Report::new(&result);
    print!("{}", report.table());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(&path, text + "\n")
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = hgrm {
        std::fs::write(&path, hdr::hgrm(&result.stats.latency, hdr::HGRM_UNIT_NS))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = hlog {
        hdr::write_hlog(
            &path,
            result.started,
            std::time::Duration::from_secs(1),
            &result.intervals,
        )
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = svg {
        let title = format!(
            "{} {} c={}",
            result.plan.protocol,
            result.plan.mode.name(),
            result.plan.connections
        );
        let mut curves = vec![("latency", &result.stats.latency)];
        if result.plan.rate.is_some() {
            curves = vec![
                ("corrected", &result.stats.latency),
                ("uncorrected", &result.stats.service),
            ];
        }
        plot::write_svg(&path, &title, &curves, &result.intervals)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}
