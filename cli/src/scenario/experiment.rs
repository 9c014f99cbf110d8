//! `eremite experiment run`: every combination of a scenario's `[vary]`
//! values, `repeat` times each, then `runs.csv` (a row per run per
//! instance), `summary.md` (per combination, each metric summed over the
//! instances of a run: median, lowest and highest over the repeats) and a
//! chart per metric (`METRIC.svg`: the medians, with whiskers from the
//! lowest to the highest).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use plotters::prelude::*;

use super::run::Outcome;
use super::{confine_to, interrupted, load, plan, switch_name};

/// One run's results.
struct Run {
    combination: usize,
    repeat: u32,
    outcomes: Vec<Outcome>,
}

/// Run the experiment in `path`, writing into `out`; the exit code
/// ([`super::verdict`]).
pub(super) fn run(
    path: &Path,
    out: &Path,
    sets: &[(String, String)],
    repeat: Option<u32>,
) -> Result<std::process::ExitCode, String> {
    let mut scenario = load(path)?;
    scenario
        .restrict(sets)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    scenario.repeat = repeat.unwrap_or(scenario.repeat);
    let combinations = scenario.combinations();
    // Every plan first: nothing starts if one combination is wrong.
    let plans = combinations
        .iter()
        .map(|values| plan(path, &scenario, values))
        .collect::<Result<Vec<_>, _>>()?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let flag = interrupted()?;
    let total = plans.len() * scenario.repeat as usize;
    let mut runs = Vec::new();
    'all: for repeat in 0..scenario.repeat {
        for (combination, plan) in plans.iter().enumerate() {
            progress(runs.len(), total, &plan.label());
            confine_to(&plan.cpus)
                .map_err(|e| format!("cannot keep to the scenario's cpus: {e}"))?;
            let outcomes = super::run::run(plan, &switch_name(runs.len()), true, &flag);
            for o in outcomes.iter().filter(|o| o.failure.is_some()) {
                eprintln!(
                    "\r{}: {}: {}",
                    plan.label(),
                    o.name,
                    o.failure.as_deref().unwrap_or_default()
                );
            }
            runs.push(Run {
                combination,
                repeat,
                outcomes,
            });
            if flag.load(std::sync::atomic::Ordering::Relaxed) {
                break 'all;
            }
        }
    }
    progress(runs.len(), total, "done");
    eprintln!();
    let vars: Vec<&str> = scenario.vary.iter().map(|(k, _)| k.as_str()).collect();
    write(
        out,
        "runs.csv",
        &csv(&vars, &scenario.metrics, &plans, &runs),
    )?;
    let summary = summary(&scenario.name, &vars, &scenario.metrics, &plans, &runs);
    write(out, "summary.md", &summary)?;
    for (m, metric) in scenario.metrics.iter().enumerate() {
        let file = out.join(format!("{metric}.svg"));
        chart(&file, metric, &plans, &runs, m).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    print!("{summary}");
    println!("results in {}", out.display());
    let has_passed = runs
        .iter()
        .all(|r| r.outcomes.iter().all(|o| o.failure.is_none()));
    Ok(super::verdict(has_passed, &flag))
}

fn write(dir: &Path, name: &str, text: &str) -> Result<(), String> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `[#####-----] 3/8 instances=2 placement=shared` on stderr.
fn progress(done: usize, total: usize, what: &str) {
    const WIDTH: usize = 30;
    let filled = done * WIDTH / total.max(1);
    let bar = format!("{}{}", "#".repeat(filled), "-".repeat(WIDTH - filled));
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r[{bar}] {done}/{total} {what:<40}");
    let _ = err.flush();
}

/// A CSV field, quoted when it must be (RFC 4180).
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

fn csv(vars: &[&str], metrics: &[String], plans: &[super::Plan], runs: &[Run]) -> String {
    let mut header: Vec<String> = vars.iter().map(|v| field(v)).collect();
    header.extend(["repeat", "instance", "exit", "wall_s"].map(String::from));
    header.extend(metrics.iter().map(|m| field(m)));
    header.extend(["peak_vmm_mib", "ok", "failure"].map(String::from));
    let mut text = header.join(",") + "\n";
    for run in runs {
        for o in &run.outcomes {
            let mut row: Vec<String> = plans[run.combination]
                .values
                .iter()
                .map(|(_, v)| field(v))
                .collect();
            row.push((run.repeat + 1).to_string());
            row.push(field(&o.name));
            row.push(o.exit.map_or(String::new(), |c| c.to_string()));
            row.push(format!("{:.3}", o.wall.as_secs_f64()));
            row.extend(
                o.metrics
                    .iter()
                    .map(|m| m.map_or(String::new(), |v| v.to_string())),
            );
            row.push((o.peak_bytes >> 20).to_string());
            row.push(o.failure.is_none().to_string());
            row.push(field(o.failure.as_deref().unwrap_or_default()));
            text += &(row.join(",") + "\n");
        }
    }
    text
}

/// Each run's total of metric `m` over its instances (`None` when no
/// instance printed it).
fn totals(runs: &[Run], combination: usize, m: usize) -> Vec<f64> {
    runs.iter()
        .filter(|r| r.combination == combination)
        .filter_map(|r| {
            let values: Vec<f64> = r.outcomes.iter().filter_map(|o| o.metrics[m]).collect();
            (!values.is_empty()).then(|| values.iter().sum())
        })
        .collect()
}

/// Median, lowest and highest.
type Spread = (f64, f64, f64);

/// The [`Spread`] of `values` (not empty).
fn spread(values: &[f64]) -> Spread {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    (median, sorted[0], sorted[n - 1])
}

fn summary(
    name: &str,
    vars: &[&str],
    metrics: &[String],
    plans: &[super::Plan],
    runs: &[Run],
) -> String {
    let mut text = format!("# Experiment {name}\n\n");
    let _ = writeln!(
        text,
        "Each metric is summed over a run's instances; median (lowest–highest) over the repeats.\n"
    );
    let mut header: Vec<String> = vars.iter().map(|v| (*v).to_owned()).collect();
    header.push("runs (failed)".into());
    header.extend(metrics.iter().cloned());
    let _ = writeln!(text, "| {} |", header.join(" | "));
    let _ = writeln!(text, "|{}", "---|".repeat(header.len()));
    for (c, plan) in plans.iter().enumerate() {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.combination == c).collect();
        let failed = mine
            .iter()
            .filter(|r| r.outcomes.iter().any(|o| o.failure.is_some()))
            .count();
        let mut row: Vec<String> = plan.values.iter().map(|(_, v)| v.clone()).collect();
        row.push(format!("{} ({failed})", mine.len()));
        for m in 0..metrics.len() {
            let values = totals(runs, c, m);
            row.push(if values.is_empty() {
                "-".into()
            } else {
                let (median, low, high) = spread(&values);
                format!("{median:.6} ({low:.6}–{high:.6})").replace(".000000", "")
            });
        }
        let _ = writeln!(text, "| {} |", row.join(" | "));
    }
    text
}

/// `2.5M`, `300k`, `12`: an axis label.
fn short_number(x: f64) -> String {
    let (scaled, suffix) = match x.abs() {
        a if a >= 1e9 => (x / 1e9, "G"),
        a if a >= 1e6 => (x / 1e6, "M"),
        a if a >= 1e3 => (x / 1e3, "k"),
        _ => (x, ""),
    };
    let text = format!("{scaled:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{suffix}")
}

/// The medians of metric `m` by combination, with whiskers.
fn chart(
    file: &Path,
    metric: &str,
    plans: &[super::Plan],
    runs: &[Run],
    m: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let bars: Vec<(String, Option<Spread>)> = plans
        .iter()
        .enumerate()
        .map(|(c, plan)| {
            let values = totals(runs, c, m);
            (plan.label(), (!values.is_empty()).then(|| spread(&values)))
        })
        .collect();
    let top = bars
        .iter()
        .filter_map(|(_, s)| s.map(|(_, _, high)| high))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.15;
    let height = 120 + 40 * bars.len() as u32;
    let root = SVGBackend::new(file, (800, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{metric}: median of the runs' totals, whisker lowest to highest"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(260)
        .build_cartesian_2d(0f64..top, 0f64..bars.len() as f64)?;
    // The first combination on top.
    let names: Vec<String> = bars.iter().rev().map(|(label, _)| label.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(bars.len() * 2 + 1)
        .y_label_formatter(&|y| {
            let i = (*y - 0.5).round();
            if (*y - 0.5 - i).abs() < 0.01 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_label_formatter(&|x| short_number(*x))
        .x_desc(metric)
        .draw()?;
    let color = RGBColor(0x2a, 0x6f, 0xb0);
    for (i, (_, spread)) in bars.iter().enumerate() {
        let Some((median, low, high)) = *spread else {
            continue;
        };
        let y = (bars.len() - 1 - i) as f64;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0.0, y + 0.2), (median, y + 0.8)],
            color.filled(),
        )))?;
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(low, y + 0.5), (high, y + 0.5)],
            BLACK.stroke_width(2),
        )))?;
        for end in [low, high] {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(end, y + 0.35), (end, y + 0.65)],
                BLACK.stroke_width(2),
            )))?;
        }
    }
    root.present()?;
    Ok(())
}
