//! `ratios.svg`: the subject engine against every other row of every scenario, as a forest
//! plot per metric (ratio and 95% interval on a log axis, coloured by scripts/compare's
//! verdict).

use std::path::Path;

use plotters::prelude::*;

use crate::summary::Summary;

/// Ratios outside this range are drawn at its edge (with 2 rounds an interval can span 10⁴).
/// Powers of two, so that the axis labels fall on them.
const RATIO_RANGE: (f64, f64) = (0.25, 4.0);

/// One comparison of summary.json: `subject / against` on a metric, with its 95% interval.
#[derive(Debug)]
struct Ratio {
    /// `SCENARIO vs OTHER`.
    label: String,
    /// NaN when summary.json has none; such a line is left empty.
    ratio: f64,
    /// Bounds of the 95% interval; none with too few rounds.
    ci: Option<(f64, f64)>,
    /// scripts/compare's word for it ("faster", "more CPU", "tie", …).
    verdict: String,
}

/// A forest plot per metric (throughput, CPU per request): one line per scenario and other
/// row, the ratio as a dot, its 95% interval as whiskers, 1.0 marked; green where the verdict
/// favours the subject, red where it does not, grey for a tie within noise. Returns false
/// when summary.json has no comparisons (an older schema, or a single engine).
pub fn ratio_chart(path: &Path, summary: &Summary) -> anyhow::Result<bool> {
    let panels = [
        ("throughput_rps", "requests/s", true),
        ("server_us_per_request", "CPU per request", false),
    ];
    let sets: Vec<Vec<Ratio>> = panels
        .iter()
        .map(|(metric, _, _)| ratios_of(summary, metric))
        .collect();
    let n = sets.iter().map(Vec::len).max().unwrap_or(0);
    if n == 0 {
        return Ok(false);
    }
    let height = (n as u32 * 24 + 130).max(300);
    let root = SVGBackend::new(path, (1400, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let areas = root.split_evenly((1, panels.len()));
    for ((area, (_, what, higher_better)), rows) in areas.iter().zip(panels).zip(&sets) {
        forest(area, summary.subject(), what, higher_better, rows)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(true)
}

/// Every comparison on `metric`, scenario by scenario, in the order summary.json lists them.
fn ratios_of(summary: &Summary, metric: &str) -> Vec<Ratio> {
    let mut rows = Vec::new();
    for sc in summary.json["scenarios"].as_array().into_iter().flatten() {
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
    rows
}

/// Whether a verdict of scripts/compare favours the subject; None for a tie (or no interval).
fn favours_subject(verdict: &str) -> Option<bool> {
    match verdict {
        "faster" | "less CPU" | "lower p99" | "less memory" => Some(true),
        "slower" | "more CPU" | "higher p99" | "more memory" => Some(false),
        _ => None,
    }
}

/// One panel of the forest plot: a line per comparison, top to bottom in list order.
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
