//! One SVG chart per benchmark group and unit: for each row, the eremite
//! and the Linux median as horizontal bars on a log scale, with a whisker
//! to the bad tail (the 99th percentile; for rates, the slowest sample).

use std::path::Path;

use plotters::prelude::*;

use super::Row;
use crate::Result;

const EREMITE: RGBColor = RGBColor(0x2a, 0x6f, 0x97);
const LINUX: RGBColor = RGBColor(0xe0, 0x8e, 0x2b);

pub(crate) fn draw(path: &Path, group: &str, rows: &[&Row]) -> Result {
    let fail = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    let unit = rows.first().map_or("", |r| r.unit.as_str());
    let is_rate = rows.first().is_some_and(|r| r.is_rate());
    let values = rows.iter().flat_map(|r| {
        [
            r.eremite.median,
            r.linux.median,
            r.tail(&r.eremite),
            r.tail(&r.linux),
        ]
    });
    let (low, high) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (low, high) = ((low / 2.0).max(1e-3), high * 2.0);
    let height = 80 + 50 * rows.len() as u32;
    let root = SVGBackend::new(path, (760, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            if is_rate {
                format!(
                    "{group}: median, whisker to slowest sample ({unit}, log scale, higher is better)"
                )
            } else {
                format!("{group}: median, whisker to p99 ({unit}, log scale)")
            },
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(150)
        .build_cartesian_2d((low..high).log_scale(), 0f64..rows.len() as f64)
        .map_err(|e| fail(&e))?;
    let names: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(rows.len() * 2 + 1)
        .y_label_formatter(&|y| {
            let i = (*y - 0.5).round();
            if (*y - 0.5 - i).abs() < 0.01 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc(unit)
        .draw()
        .map_err(|e| fail(&e))?;
    for (side, color, offset) in [("eremite", EREMITE, 0.52), ("Linux", LINUX, 0.14)] {
        let pick = |r: &Row| {
            if side == "eremite" {
                r.eremite
            } else {
                r.linux
            }
        };
        let bars = rows.iter().enumerate().map(move |(i, r)| {
            let y = i as f64 + offset;
            Rectangle::new(
                [(low, y), (pick(r).median.max(low), y + 0.34)],
                color.filled(),
            )
        });
        chart
            .draw_series(bars)
            .map_err(|e| fail(&e))?
            .label(side)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        let whiskers = rows.iter().enumerate().map(move |(i, r)| {
            let y = i as f64 + offset + 0.17;
            PathElement::new(
                vec![(pick(r).median.max(low), y), (r.tail(&pick(r)).max(low), y)],
                BLACK,
            )
        });
        chart.draw_series(whiskers).map_err(|e| fail(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))
}
