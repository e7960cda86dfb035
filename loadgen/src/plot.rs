//! SVG plots of a run: the latency percentile curve on a log "1/(1-p)" axis (as HdrHistogram's
//! plotter draws it) and latency over time, one point per second of the measured window.
//! `ringd-report` draws a comparison's curves, read from `.hgrm` files, on the same axes.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

/// Line colours: distinct and readable on white.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(0, 0, 0),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
];

/// The colour of series `i`.
pub fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// Highest "nines" shown on the percentile axis (99.999%).
const MAX_NINES: f64 = 5.0;

/// Draws the percentile curve(s) and the per-second latency of a run into an SVG file.
/// `curves` are (label, histogram) pairs drawn on the same percentile axes.
pub fn write_svg(
    path: &Path,
    title: &str,
    curves: &[(&str, &Histogram<u64>)],
    intervals: &[Histogram<u64>],
) -> Result<(), String> {
    let root = SVGBackend::new(path, (1000, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(460);
    let curves: Vec<(String, Vec<(f64, f64)>)> = curves
        .iter()
        .map(|(label, h)| (label.to_string(), percentile_points(h)))
        .collect();
    percentile_chart(&top, &format!("Latency by percentile: {title}"), &curves)
        .map_err(|e| e.to_string())?;
    over_time_chart(&bottom, intervals).map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// The points of a percentile curve, in microseconds. The x coordinate of quantile q is
/// log10(1/(1-q)): 90% is 1, 99% is 2, 99.9% is 3.
pub fn percentile_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    (0..=(MAX_NINES * 20.0) as u32)
        .map(|i| {
            let x = i as f64 / 20.0;
            let q = 1.0 - 10f64.powf(-x);
            (x, h.highest_equivalent(h.value_at_quantile(q)) as f64 / 1e3)
        })
        .collect()
}

/// Percentile curves (points from [`percentile_points`] or a `.hgrm`), overlaid.
fn percentile_chart(
    area: &Area<'_>,
    caption: &str,
    curves: &[(String, Vec<(f64, f64)>)],
) -> Result<(), Box<dyn std::error::Error>> {
    let ymax = curves
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..MAX_NINES, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .x_labels(6)
        .x_label_formatter(&|x| format!("{}%", trim(100.0 * (1.0 - 10f64.powf(-x)))))
        .draw()?;
    for (i, (label, pts)) in curves.iter().enumerate() {
        let color = color(i);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    Ok(())
}

fn over_time_chart(
    area: &Area<'_>,
    intervals: &[Histogram<u64>],
) -> Result<(), Box<dyn std::error::Error>> {
    let series = |q: f64| -> Vec<(f64, f64)> {
        intervals
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.is_empty())
            .map(|(i, h)| {
                (
                    i as f64 + 1.0,
                    h.highest_equivalent(h.value_at_quantile(q)) as f64 / 1e3,
                )
            })
            .collect()
    };
    let p50 = series(0.5);
    let p99 = series(0.99);
    let max = series(1.0);
    let ymax = max.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let xmax = (intervals.len() as f64).max(1.0) + 0.5;
    let mut chart = ChartBuilder::on(area)
        .caption("Latency over time (per second)", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.5f64..xmax, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("second of the measured window")
        .y_desc("latency (µs)")
        .draw()?;
    for (i, (label, pts)) in [("p50", p50), ("p99", p99), ("max", max)]
        .into_iter()
        .enumerate()
    {
        let color = color(i);
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    Ok(())
}

/// Draws the series legend in a white box at `pos`.
pub fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    pos: SeriesLabelPosition,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .position(pos)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
}

/// 99.900 → "99.9", 90.000 → "90".
fn trim(p: f64) -> String {
    let s = format!("{p:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Percentile curves read from `.hgrm` files (values in µs), overlaid on one chart.
pub fn percentile_chart_svg(
    path: &Path,
    title: &str,
    curves: &[(String, Vec<crate::hdr::HgrmRow>)],
) -> Result<(), String> {
    let curves: Vec<(String, Vec<(f64, f64)>)> = curves
        .iter()
        .map(|(label, rows)| {
            let pts = rows
                .iter()
                .filter(|r| r.quantile < 1.0)
                .map(|r| ((1.0 / (1.0 - r.quantile)).log10().min(MAX_NINES), r.value))
                .collect();
            (label.clone(), pts)
        })
        .collect();
    let root = SVGBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    percentile_chart(&root, title, &curves).map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis() {
        let mut h = crate::stats::histogram();
        for v in 1..=1000 {
            h.record(v * 1000).unwrap();
        }
        let pts = percentile_points(&h);
        let at = |x: f64| pts.iter().find(|p| (p.0 - x).abs() < 1e-9).unwrap().1;
        assert!((at(1.0) - 900.0).abs() < 2.0, "p90 {}", at(1.0));
        assert!((at(2.0) - 990.0).abs() < 2.0, "p99 {}", at(2.0));
        assert_eq!(trim(99.9), "99.9");
        assert_eq!(trim(90.0), "90");
    }
}
