//! The grouped bar charts of a comparison (throughput, server CPU per request): one group
//! per scenario, one coloured bar per row (engine or reference) with a min..max whisker.

use std::path::Path;

use loadgen::plot::{color, legend};
use plotters::prelude::*;

/// One bar of a grouped bar chart.
#[derive(Debug, Clone)]
pub struct Bar {
    /// The scenario: bars of one group stand side by side.
    pub group: String,
    /// The row (engine or reference): one colour across groups.
    pub series: String,
    /// Bar height: the median of the rounds.
    pub value: f64,
    /// Lower end of the whisker: the lowest round.
    pub min: f64,
    /// Upper end of the whisker: the highest round.
    pub max: f64,
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A grouped bar chart with min..max whiskers, one colour per series (in `series` order),
/// groups in the order their first bar comes.
pub fn bar_chart(
    path: &Path,
    title: &str,
    y_desc: &str,
    series: &[String],
    bars: &[Bar],
) -> Result<(), String> {
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let mut groups: Vec<String> = Vec::new();
        for b in bars {
            if !groups.contains(&b.group) {
                groups.push(b.group.clone());
            }
        }
        let width = 220 * groups.len().max(1) as u32 + 200;
        let root = SVGBackend::new(path, (width.max(700), 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let ymax = bars.iter().map(|b| b.max.max(b.value)).fold(1e-9, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..groups.len() as f64, 0f64..ymax)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(groups.len() * 2 + 1)
            .x_label_formatter(&|x| {
                // Groups span [i, i + 1): the label sits in the middle.
                let i = x.floor() as usize;
                if (x - i as f64 - 0.5).abs() < 0.01 {
                    groups.get(i).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc(y_desc)
            .y_label_formatter(&|v| {
                if v.abs() >= 1000.0 {
                    format!("{:.0}k", v / 1000.0)
                } else {
                    format!("{v:.1}")
                }
            })
            .draw()?;
        for (si, s) in series.iter().enumerate() {
            draw_series(&mut chart, &groups, bars, (si, series.len()), s)?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| e.to_string())
}

/// The bars and whiskers of series `s`, number `si` of `n`: its slot in every group.
fn draw_series(
    chart: &mut Chart<'_, '_>,
    groups: &[String],
    bars: &[Bar],
    (si, n): (usize, usize),
    s: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let c = color(si);
    let n = n.max(1) as f64;
    let mine: Vec<(f64, &Bar)> = bars
        .iter()
        .filter(|b| b.series == s)
        .filter_map(|b| {
            let gi = groups.iter().position(|g| g == &b.group)?;
            Some((gi as f64, b))
        })
        .collect();
    let x0 = |gi: f64| gi + 0.1 + 0.8 * si as f64 / n;
    let w = 0.8 / n;
    chart
        .draw_series(mine.iter().map(|(gi, b)| {
            Rectangle::new([(x0(*gi), 0.0), (x0(*gi) + w * 0.9, b.value)], c.filled())
        }))?
        .label(s)
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], c.filled()));
    chart.draw_series(mine.iter().map(|(gi, b)| {
        let xm = x0(*gi) + w * 0.45;
        PathElement::new(vec![(xm, b.min), (xm, b.max)], BLACK.stroke_width(2))
    }))?;
    Ok(())
}
