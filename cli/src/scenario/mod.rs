//! `eremite scenario run|check` and `eremite experiment run`: several
//! VMs from one declarative file (`docs/scenarios.md`), with CPU
//! placement, memory quotas, ordering, checks and metrics; and sweeps of
//! such runs with a CSV, a summary and charts.
//!
//! `file.rs` turns the file into plans (pure, host-tested), `run.rs`
//! supervises one run's processes, `experiment.rs` repeats runs and
//! writes the results.

mod experiment;
mod file;
mod run;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Subcommand;

pub(crate) use run::SUPERVISED_ENV;

use file::{Plan, Scenario};
use run::Outcome;

/// `eremite scenario ...`.
#[derive(Subcommand)]
pub(crate) enum ScenarioCommand {
    /// Start every instance of FILE, prefix their output with their names,
    /// wait for all, print a summary; exit 1 if a check failed.
    Run {
        /// The scenario file (TOML; see docs/scenarios.md).
        file: PathBuf,
        /// Give a [vary] variable a value for this run (repeatable;
        /// default: its first value).
        #[arg(long, value_name = "NAME=VALUE", value_parser = parse_set)]
        set: Vec<(String, String)>,
        /// Do not show the instances' output, only the summary.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Check FILE for every combination of its [vary] values without
    /// starting anything: one line per error; exit 1 if there is one.
    Check {
        /// The scenario file.
        file: PathBuf,
    },
}

/// `eremite experiment ...`.
#[derive(Subcommand)]
pub(crate) enum ExperimentCommand {
    /// Run FILE once per combination of its [vary] values, `repeat` times
    /// each, and write DIR/runs.csv, DIR/summary.md and DIR/METRIC.svg.
    Run {
        /// The scenario file.
        file: PathBuf,
        /// Where the results go (made if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Give a [vary] variable only this value (repeatable).
        #[arg(long, value_name = "NAME=VALUE", value_parser = parse_set)]
        set: Vec<(String, String)>,
        /// Run each combination this many times instead of the file's
        /// `repeat`.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
        repeat: Option<u32>,
    },
}

/// `NAME=VALUE` for `--set`.
fn parse_set(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))
}

/// Read and parse `path`; the error is one line naming it.
fn load(path: &Path) -> Result<Scenario, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Scenario::parse(path, &text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Plan one combination and check it against this host; the error is one
/// line naming the file.
fn plan(path: &Path, scenario: &Scenario, sets: &[(String, String)]) -> Result<Plan, String> {
    let plan = scenario
        .plan(sets)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let allowed = allowed_cpus().map_err(|e| format!("cannot read this process's CPUs: {e}"))?;
    let outside = plan
        .cpus
        .iter()
        .chain(plan.copies.iter().flat_map(|c| &c.pin))
        .find(|c| !allowed.contains(c));
    if let Some(cpu) = outside {
        return Err(format!(
            "{}: host CPU {cpu} is not one this process may use ({})",
            path.display(),
            list(&allowed)
        ));
    }
    Ok(plan)
}

/// The host CPUs this process may run on.
fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    let set = rustix::thread::sched_getaffinity(None)?;
    Ok((0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&c| set.is_set(c))
        .collect())
}

/// Keep this process (and the VMs it starts) on `cpus`: the scenario's
/// affinity space. Nothing changes for an empty list.
fn confine_to(cpus: &[usize]) -> std::io::Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    let mut set = rustix::thread::CpuSet::new();
    for &cpu in cpus {
        set.set(cpu);
    }
    rustix::thread::sched_setaffinity(None, &set).map_err(Into::into)
}

/// `0,1,3` for a list of CPUs.
fn list(cpus: &[usize]) -> String {
    let parts: Vec<String> = cpus.iter().map(usize::to_string).collect();
    parts.join(",")
}

/// Set when Ctrl-C (or `SIGTERM`) reaches the runner.
fn interrupted() -> Result<Arc<AtomicBool>, String> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&flag))
            .map_err(|e| format!("cannot catch signal {signal}: {e}"))?;
    }
    Ok(flag)
}

/// A switch name for one run's `[network]`, unique on this host.
fn switch_name(run: usize) -> String {
    format!("scenario-{}-{run}", std::process::id())
}

pub(crate) fn scenario(command: ScenarioCommand) -> ExitCode {
    match command {
        ScenarioCommand::Check { file } => match check(&file) {
            Ok(runs) => {
                println!(
                    "{}: ok ({runs} combination{})",
                    file.display(),
                    if runs == 1 { "" } else { "s" }
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for error in errors {
                    eprintln!("eremite: {error}");
                }
                ExitCode::from(1)
            }
        },
        ScenarioCommand::Run { file, set, quiet } => {
            let result = load(&file).and_then(|scenario| {
                let plan = plan(&file, &scenario, &set)?;
                confine_to(&plan.cpus)
                    .map_err(|e| format!("cannot keep to the scenario's cpus: {e}"))?;
                let flag = interrupted()?;
                let outcomes = run::run(&plan, &switch_name(0), quiet, &flag);
                print_summary(&scenario, &plan, &outcomes);
                Ok(verdict(outcomes.iter().all(|o| o.failure.is_none()), &flag))
            });
            result.unwrap_or_else(|e| {
                eprintln!("eremite: {e}");
                ExitCode::from(125)
            })
        }
    }
}

/// 0 when every check passed, 130 after Ctrl-C, else 1.
fn verdict(has_passed: bool, interrupted: &AtomicBool) -> ExitCode {
    if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
        ExitCode::from(130)
    } else if has_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub(crate) fn experiment(command: ExperimentCommand) -> ExitCode {
    let ExperimentCommand::Run {
        file,
        out,
        set,
        repeat,
    } = command;
    experiment::run(&file, &out, &set, repeat).unwrap_or_else(|e| {
        eprintln!("eremite: {e}");
        ExitCode::from(125)
    })
}

/// Every error of every combination, each once.
fn check(path: &Path) -> Result<usize, Vec<String>> {
    let scenario = load(path).map_err(|e| vec![e])?;
    let combinations = scenario.combinations();
    let mut errors: Vec<String> = Vec::new();
    for values in &combinations {
        if let Err(e) = plan(path, &scenario, values)
            && !errors.contains(&e)
        {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(combinations.len())
    } else {
        Err(errors)
    }
}

/// The table printed after a run.
fn print_summary(scenario: &Scenario, plan: &Plan, outcomes: &[Outcome]) {
    let mut header = vec!["instance".to_owned(), "exit".into(), "wall".into()];
    header.extend(scenario.metrics.iter().cloned());
    header.extend([
        "host CPUs".into(),
        "peak VMM memory".into(),
        "result".into(),
    ]);
    let mut rows = vec![header];
    for o in outcomes {
        let mut row = vec![
            o.name.clone(),
            o.exit.map_or("-".into(), |c| c.to_string()),
            format!("{:.2} s", o.wall.as_secs_f64()),
        ];
        row.extend(
            o.metrics
                .iter()
                .map(|m| m.map_or("-".into(), |v| format!("{v}"))),
        );
        row.push(if o.pin.is_empty() {
            "any".into()
        } else {
            list(&o.pin)
        });
        row.push(format!("{} MiB", o.peak_bytes >> 20));
        row.push(o.failure.clone().unwrap_or_else(|| "ok".into()));
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    println!("\nscenario {}, {}:", scenario.name, plan.label());
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("  {}", cells.join("  ").trim_end());
    }
    let failed = outcomes.iter().filter(|o| o.failure.is_some()).count();
    if failed == 0 {
        println!("all {} instances passed", outcomes.len());
    } else {
        println!("{failed} of {} instances failed", outcomes.len());
    }
}
