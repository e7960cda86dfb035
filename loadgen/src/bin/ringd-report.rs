//! `ringd-report`: draws the SVG plots of an engine comparison from the `summary.json` that
//! `scripts/compare` writes: throughput per engine per scenario (bars with min..max), the
//! engines' latency percentile curves overlaid per scenario, and server CPU per request.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use loadgen::plot::{bar_chart, percentile_chart_svg, Bar};
use serde_json::Value;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [summary] = args.as_slice() else {
        eprintln!("usage: ringd-report RESULTS_DIR/summary.json");
        return ExitCode::from(2);
    };
    match draw(Path::new(summary)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringd-report: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn draw(summary_path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = summary_path.parent().unwrap_or(Path::new("."));
    let summary: Value = serde_json::from_slice(
        &std::fs::read(summary_path)
            .with_context(|| format!("reading {}", summary_path.display()))?,
    )
    .context("summary.json is not valid JSON")?;
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let scenarios = summary["scenarios"]
        .as_array()
        .context("summary.json has no scenarios")?;
    // Every row of any scenario (the engines, then references such as nginx), in order.
    let mut engines = names(&summary["engines"]);
    if engines.is_empty() {
        anyhow::bail!("summary.json has no engines");
    }
    for sc in scenarios {
        for row in names(&sc["rows"]) {
            if !engines.contains(&row) {
                engines.push(row);
            }
        }
    }
    let mut written = Vec::new();
    let mut throughput = Vec::new();
    let mut cpu = Vec::new();
    for sc in scenarios {
        let name = sc["name"].as_str().unwrap_or("?").to_string();
        let mut curves = Vec::new();
        for engine in &engines {
            let r = &sc["results"][engine.as_str()];
            if r.is_null() {
                continue;
            }
            let stat = |field: &str, which: &str| r[which][field].as_f64().unwrap_or(0.0);
            throughput.push(Bar {
                group: name.clone(),
                series: engine.clone(),
                value: stat("throughput_rps", "median"),
                min: stat("throughput_rps", "min"),
                max: stat("throughput_rps", "max"),
            });
            cpu.push(Bar {
                group: name.clone(),
                series: engine.clone(),
                value: stat("server_us_per_request", "median"),
                min: stat("server_us_per_request", "min"),
                max: stat("server_us_per_request", "max"),
            });
            if let Some(hgrm) = r["median_run_hgrm"].as_str() {
                let text = std::fs::read_to_string(dir.join(hgrm))
                    .with_context(|| format!("reading {hgrm}"))?;
                let (rows, _) = loadgen::hdr::parse_hgrm(&text).map_err(anyhow::Error::msg)?;
                curves.push((engine.clone(), rows));
            }
        }
        if !curves.is_empty() {
            let path = dir.join(format!("latency-{name}.svg"));
            percentile_chart_svg(&path, &format!("Latency by percentile: {name}"), &curves)
                .map_err(anyhow::Error::msg)?;
            written.push(path);
        }
    }
    let path = dir.join("throughput.svg");
    bar_chart(
        &path,
        "Throughput (median of rounds, bars: min..max)",
        "requests/s",
        &engines,
        &throughput,
    )
    .map_err(anyhow::Error::msg)?;
    written.push(path);
    let path = dir.join("server-cpu.svg");
    bar_chart(
        &path,
        "Server CPU per request (median, bars: min..max)",
        "µs/request",
        &engines,
        &cpu,
    )
    .map_err(anyhow::Error::msg)?;
    written.push(path);
    Ok(written)
}
