//! The SVG plot: throughput per second (top) and p99 latency per second (bottom), one line per
//! measured phase (baseline, snapgate transactions, snapgate mixed), against seconds into the
//! phase.

use crate::report::{PhaseReport, SecondReport};
use plotters::prelude::*;
use std::path::Path;

const COLORS: [RGBColor; 5] = [
    RGBColor(120, 120, 120),
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Which figure of a second a panel shows.
type Value = fn(&SecondReport) -> f64;

pub fn write_svg(path: &Path, title: &str, phases: &[&PhaseReport]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let root = SVGBackend::new(path, (1000, 760)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(360);
    let seconds = phases
        .iter()
        .map(|p| p.timeline.len())
        .max()
        .unwrap_or(1)
        .max(2) as f64;
    let max_rps = phases
        .iter()
        .flat_map(|p| p.timeline.iter().map(|s| s.rps))
        .fold(1.0, f64::max);
    let max_p99 = phases
        .iter()
        .flat_map(|p| p.timeline.iter().map(|s| s.p99_ms))
        .fold(0.1, f64::max);

    let rps: Value = |s| s.rps;
    let p99: Value = |s| s.p99_ms;
    let panels = [
        (&top, "Throughput per second", "req/s", max_rps * 1.3, rps),
        (
            &bottom,
            "p99 latency per second",
            "p99 (ms)",
            max_p99 * 1.1,
            p99,
        ),
    ];
    for (area, caption, y_label, y_max, value) in panels {
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..seconds, 0f64..y_max)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .max_light_lines(0)
            .x_desc("seconds into the phase")
            .y_desc(y_label)
            .draw()
            .map_err(|e| err(&e))?;
        for (i, p) in phases.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let points = p.timeline.iter().map(|s| (s.second as f64 + 0.5, value(s)));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(format!("{} ({})", p.phase, p.server))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
