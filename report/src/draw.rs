//! Every plot of a comparison, in the order they are listed: a latency chart per scenario,
//! then throughput, server CPU and (when summary.json has comparisons) the ratios.

use std::path::{Path, PathBuf};

use anyhow::Context;
use loadgen::plot::percentile_chart_svg;
use serde_json::Value;

use crate::bars::{bar_chart, Bar};
use crate::ratios::ratio_chart;
use crate::summary::Summary;

/// Draws every plot next to `summary_path`; returns the files written.
pub fn draw(summary_path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let summary = Summary::read(summary_path)?;
    let scenarios = summary.scenarios()?;
    let rows = summary.rows()?;
    let mut written = Vec::new();
    for sc in scenarios {
        written.extend(latency_chart(&summary, sc, &rows)?);
    }
    let charts = [
        (
            "throughput.svg",
            "Throughput (median of rounds, bars: min..max)",
            "requests/s",
            "throughput_rps",
        ),
        (
            "server-cpu.svg",
            "Server CPU per request (median, bars: min..max)",
            "µs/request",
            "server_us_per_request",
        ),
    ];
    for (file, title, unit, metric) in charts {
        let path = summary.dir.join(file);
        let bars = bars_of(scenarios, &rows, metric);
        bar_chart(&path, title, unit, &rows, &bars).map_err(anyhow::Error::msg)?;
        written.push(path);
    }
    let path = summary.dir.join("ratios.svg");
    if ratio_chart(&path, &summary)? {
        written.push(path);
    }
    Ok(written)
}

/// The percentile curves of each row's median run in scenario `sc`, overlaid; `None` when
/// no row has one.
fn latency_chart(
    summary: &Summary,
    sc: &Value,
    rows: &[String],
) -> anyhow::Result<Option<PathBuf>> {
    let name = sc["name"].as_str().unwrap_or("?");
    let mut curves = Vec::new();
    for row in rows {
        let Some(hgrm) = sc["results"][row.as_str()]["median_run_hgrm"].as_str() else {
            continue;
        };
        let text = std::fs::read_to_string(summary.dir.join(hgrm))
            .with_context(|| format!("reading {hgrm}"))?;
        let (points, _) = loadgen::hdr::parse_hgrm(&text).map_err(anyhow::Error::msg)?;
        curves.push((row.clone(), points));
    }
    if curves.is_empty() {
        return Ok(None);
    }
    let path = summary.dir.join(format!("latency-{name}.svg"));
    percentile_chart_svg(&path, &format!("Latency by percentile: {name}"), &curves)
        .map_err(anyhow::Error::msg)?;
    Ok(Some(path))
}

/// One bar per scenario and row that has results: the median of `metric` over the rounds,
/// with their min and max.
fn bars_of(scenarios: &[Value], rows: &[String], metric: &str) -> Vec<Bar> {
    let mut bars = Vec::new();
    for sc in scenarios {
        let name = sc["name"].as_str().unwrap_or("?");
        for row in rows {
            let r = &sc["results"][row.as_str()];
            if r.is_null() {
                continue;
            }
            let stat = |which: &str| r[which][metric].as_f64().unwrap_or(0.0);
            bars.push(Bar {
                group: name.to_string(),
                series: row.clone(),
                value: stat("median"),
                min: stat("min"),
                max: stat("max"),
            });
        }
    }
    bars
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A summary of two scenarios: `rr` with every figure and a curve for each engine,
    /// `crr` with a reference row and no curves.
    fn write_summary(dir: &Path) -> PathBuf {
        let mut h = loadgen::stats::histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let hgrm = loadgen::hdr::hgrm(&h, loadgen::hdr::HGRM_UNIT_NS);
        std::fs::write(dir.join("uring.hgrm"), &hgrm).unwrap();
        std::fs::write(dir.join("epoll.hgrm"), &hgrm).unwrap();
        let figures = |rps: f64, hgrm: Option<&str>| {
            serde_json::json!({
                "median": {"throughput_rps": rps, "server_us_per_request": 5.0},
                "min": {"throughput_rps": rps - 10e3, "server_us_per_request": 4.0},
                "max": {"throughput_rps": rps + 10e3, "server_us_per_request": 6.0},
                "median_run_hgrm": hgrm,
            })
        };
        let summary = serde_json::json!({
            "engines": ["uring", "epoll"],
            "subject": "uring",
            "scenarios": [
                {
                    "name": "rr",
                    "rows": ["uring", "epoll"],
                    "results": {
                        "uring": figures(100e3, Some("uring.hgrm")),
                        "epoll": figures(80e3, Some("epoll.hgrm")),
                    },
                    "comparisons": [{
                        "metric": "throughput_rps", "against": "epoll", "ratio": 1.25,
                        "ci95": [1.1, 1.4], "verdict": "faster",
                    }],
                },
                {
                    "name": "crr",
                    "rows": ["uring", "nginx"],
                    "results": {"uring": figures(20e3, None), "nginx": figures(25e3, None)},
                },
            ],
        });
        let path = dir.join("summary.json");
        std::fs::write(&path, summary.to_string()).unwrap();
        path
    }

    #[test]
    fn draws_every_chart_a_summary_has_figures_for() {
        let dir = tempfile::tempdir().unwrap();
        let files = draw(&write_summary(dir.path())).unwrap();
        let names: Vec<&str> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "latency-rr.svg",
                "throughput.svg",
                "server-cpu.svg",
                "ratios.svg"
            ]
        );
        for f in &files {
            let svg = std::fs::read_to_string(f).unwrap();
            assert!(svg.starts_with("<svg"), "{}", f.display());
        }
        let throughput = std::fs::read_to_string(&files[1]).unwrap();
        assert!(throughput.contains("nginx"), "the reference row has a bar");
    }

    #[test]
    fn bars_are_the_median_with_the_rounds_min_and_max() {
        let dir = tempfile::tempdir().unwrap();
        let summary = Summary::read(&write_summary(dir.path())).unwrap();
        let rows = summary.rows().unwrap();
        let bars = bars_of(summary.scenarios().unwrap(), &rows, "throughput_rps");
        let got: Vec<(&str, &str, f64, f64, f64)> = bars
            .iter()
            .map(|b| (b.group.as_str(), b.series.as_str(), b.value, b.min, b.max))
            .collect();
        assert_eq!(
            got,
            [
                ("rr", "uring", 100e3, 90e3, 110e3),
                ("rr", "epoll", 80e3, 70e3, 90e3),
                ("crr", "uring", 20e3, 10e3, 30e3),
                ("crr", "nginx", 25e3, 15e3, 35e3),
            ]
        );
    }

    #[test]
    fn a_curve_that_cannot_be_read_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_summary(dir.path());
        std::fs::remove_file(dir.path().join("epoll.hgrm")).unwrap();
        let e = draw(&path).unwrap_err();
        assert!(format!("{e:#}").contains("reading epoll.hgrm"), "{e:#}");
    }
}
