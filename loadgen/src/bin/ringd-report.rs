//! `ringd-report`: draws the SVG plots of an engine comparison from the `summary.json` that
//! `scripts/compare` writes: throughput per engine per scenario (bars with min..max), the
//! engines' latency percentile curves overlaid per scenario, server CPU per request, and the
//! subject engine's ratios against every other row with their 95% intervals (`ratios.svg`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use loadgen::plot::{bar_chart, percentile_chart_svg, Bar};
use plotters::prelude::*;
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
    let path = dir.join("ratios.svg");
    if ratio_chart(&path, &summary)? {
        written.push(path);
    }
    Ok(written)
}

/// Ratios outside this range are drawn at its edge (with 2 rounds an interval can span 10⁴).
/// Powers of two, so that the axis labels fall on them.
const RATIO_RANGE: (f64, f64) = (0.25, 4.0);

/// One comparison of summary.json: `subject / against` on a metric, with its 95% interval.
struct Ratio {
    label: String,
    ratio: f64,
    ci: Option<(f64, f64)>,
    verdict: String,
}

/// A forest plot per metric (throughput, CPU per request): one line per scenario and other
/// row, the ratio as a dot, its 95% interval as whiskers, 1.0 marked; green where the verdict
/// favours the subject, red where it does not, grey for a tie within noise. Returns false
/// when summary.json has no comparisons (an older schema, or a single engine).
fn ratio_chart(path: &Path, summary: &Value) -> anyhow::Result<bool> {
    let subject = summary["subject"].as_str().unwrap_or("uring");
    let panels = [
        ("throughput_rps", "requests/s", true),
        ("server_us_per_request", "CPU per request", false),
    ];
    let mut sets: Vec<Vec<Ratio>> = Vec::new();
    for (metric, _, _) in panels {
        let mut rows = Vec::new();
        for sc in summary["scenarios"].as_array().into_iter().flatten() {
            for c in sc["comparisons"].as_array().into_iter().flatten() {
                if c["metric"].as_str() != Some(metric) {
                    continue;
                }
                let ci = c["ci95"]
                    .as_array()
                    .and_then(|a| Some((a.first()?.as_f64()?, a.get(1)?.as_f64()?)));
                rows.push(Ratio {
                    label: format!(
                        "{} vs {}",
                        sc["name"].as_str().unwrap_or("?"),
                        c["against"].as_str().unwrap_or("?")
                    ),
                    ratio: c["ratio"].as_f64().unwrap_or(f64::NAN),
                    ci,
                    verdict: c["verdict"].as_str().unwrap_or("").to_string(),
                });
            }
        }
        sets.push(rows);
    }
    let n = sets.iter().map(Vec::len).max().unwrap_or(0);
    if n == 0 {
        return Ok(false);
    }
    let height = (n as u32 * 24 + 130).max(300);
    let root = SVGBackend::new(path, (1400, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let areas = root.split_evenly((1, panels.len()));
    for ((area, (_, what, higher_better)), rows) in areas.iter().zip(panels).zip(&sets) {
        forest(area, subject, what, higher_better, rows).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(true)
}

/// Whether a verdict of scripts/compare favours the subject; None for a tie (or no interval).
fn favours_subject(verdict: &str) -> Option<bool> {
    match verdict {
        "faster" | "less CPU" | "lower p99" | "less memory" => Some(true),
        "slower" | "more CPU" | "higher p99" | "more memory" => Some(false),
        _ => None,
    }
}

fn forest(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    subject: &str,
    what: &str,
    higher_better: bool,
    rows: &[Ratio],
) -> Result<(), Box<dyn std::error::Error>> {
    // x is log2(ratio), so that 0.5 and 2 sit as far from 1 as they should.
    let (lo, hi) = (RATIO_RANGE.0.log2(), RATIO_RANGE.1.log2());
    let x = |v: f64| v.log2().clamp(lo, hi);
    let n = rows.len().max(1);
    let labels: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{what}: {subject} / other, 95% interval"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(250)
        .build_cartesian_2d(lo..hi, 0f64..n as f64)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE)
        .y_labels(n * 2 + 1)
        .y_label_formatter(&|y| {
            // Rows sit at i + 0.5, top to bottom.
            let i = y.floor() as usize;
            if (y - i as f64 - 0.5).abs() < 0.01 && i < n {
                labels.get(n - 1 - i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_labels((hi - lo) as usize + 1)
        .x_label_formatter(&|v| format!("{:.2}", v.exp2()))
        .x_desc(if higher_better {
            "ratio, log scale, clipped (> 1: subject faster)"
        } else {
            "ratio, log scale, clipped (< 1: subject needs less)"
        })
        .draw()?;
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(0.0, 0.0), (0.0, n as f64)],
        BLACK.stroke_width(1),
    )))?;
    for (i, r) in rows.iter().enumerate() {
        if !r.ratio.is_finite() {
            continue;
        }
        let y = (n - 1 - i) as f64 + 0.5;
        let colour = match favours_subject(&r.verdict) {
            Some(true) => RGBColor(44, 160, 44),
            Some(false) => RGBColor(214, 39, 40),
            None => RGBColor(120, 120, 120),
        };
        if let Some((a, b)) = r.ci {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x(a), y), (x(b), y)],
                colour.stroke_width(2),
            )))?;
        }
        chart.draw_series(std::iter::once(Circle::new(
            (x(r.ratio), y),
            4,
            colour.filled(),
        )))?;
    }
    Ok(())
}
