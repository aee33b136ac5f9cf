//! docs/benchmarks.svg: delivered msg/s per system, grouped by workload, on a log scale (the
//! systems differ by orders of magnitude). Bars are medians, whiskers the range of the repeats.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{Results, cells, median};
use crate::runner::System;

fn colour(system: System) -> RGBColor {
    match system {
        System::Rivulet => RGBColor(31, 119, 180),
        System::RivuletPersisted => RGBColor(140, 190, 230),
        System::RivuletVolatile => RGBColor(23, 190, 207),
        System::RivuletLog => RGBColor(148, 103, 189),
        System::MosquittoQos0 => RGBColor(255, 127, 14),
        System::MosquittoQos1 => RGBColor(255, 190, 120),
        System::MosquittoPersistent => RGBColor(214, 39, 40),
        System::Nats => RGBColor(44, 160, 44),
        System::JetStream => RGBColor(148, 103, 189),
        System::Relay => RGBColor(127, 127, 127),
    }
}

/// Writes the chart to `path`.
pub fn write(results: &Results, path: &Path) -> Result<(), String> {
    let failed = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    let groups: Vec<_> = results.workloads.iter().map(|workload| (workload, cells(results, workload))).collect();
    let systems: Vec<System> = System::ALL
        .into_iter()
        .filter(|s| groups.iter().any(|(_, cells)| cells.iter().any(|c| c.system == *s)))
        .collect();
    let values: Vec<f64> = groups
        .iter()
        .flat_map(|(_, cells)| cells.iter().flat_map(|cell| cell.msgs_per_sec()))
        .filter(|v| *v > 0.0)
        .collect();
    if values.is_empty() {
        return Err(format!("cannot draw {}: no successful run", path.display()));
    }
    let low = 10f64.powf(values.iter().copied().fold(f64::INFINITY, f64::min).log10().floor());
    let high = 10f64.powf(values.iter().copied().fold(0.0, f64::max).log10().ceil());

    let root = SVGBackend::new(path, (1100, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Delivered msg/s (median of the repeats; whiskers: range), log scale", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..groups.len() as f64, (low..high).log_scale())
        .map_err(|e| failed(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("messages per second")
        .y_label_formatter(&|v| crate::report::si(*v))
        .draw()
        .map_err(|e| failed(&e))?;

    let width = 0.84 / systems.len() as f64;
    for (slot, &system) in systems.iter().enumerate() {
        let style = colour(system).filled();
        let mut bars = Vec::new();
        let mut whiskers = Vec::new();
        for (group, (_, cells)) in groups.iter().enumerate() {
            let Some(cell) = cells.iter().find(|c| c.system == system) else { continue };
            let runs = cell.msgs_per_sec();
            let Some(value) = median(&runs) else { continue };
            let left = group as f64 + 0.08 + slot as f64 * width;
            bars.push(Rectangle::new([(left, low), (left + width * 0.92, value)], style));
            let (min, max) = runs.iter().fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
            let middle = left + width * 0.46;
            whiskers.push(PathElement::new(vec![(middle, min), (middle, max)], BLACK.stroke_width(1)));
        }
        chart
            .draw_series(bars)
            .map_err(|e| failed(&e))?
            .label(system.label())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], style));
        chart.draw_series(whiskers).map_err(|e| failed(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| failed(&e))?;
    // Workload names under their groups, placed in pixels (the mesh's labels would not sit at the
    // groups' centres).
    for (group, (workload, _)) in groups.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(group as f64 + 0.5, low));
        let style = TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        root.draw(&Text::new(workload.name.clone(), (x, y + 8), style)).map_err(|e| failed(&e))?;
    }
    root.present().map_err(|e| failed(&e))
}
