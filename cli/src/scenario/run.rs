//! One run of a scenario: every copy of a [`Plan`] as its own `eremite
//! run` process, supervised until all have ended.
//!
//! Each copy runs in a process group of its own (so a terminal's Ctrl-C
//! reaches the runner only) and dies with the runner (`PDEATHSIG`, set by
//! `eremite run` itself when [`SUPERVISED_ENV`] is set). Its output lines
//! go to the runner's stdout and stderr with `[name] ` in front, and are
//! scanned for `expect_output`, `ready_when` and the metrics as they come,
//! so nothing is kept whole. A copy with `after` starts once those copies
//! have printed their `ready_when` line. The timeout and Ctrl-C stop every
//! copy still running: `SIGTERM` twice (eremite then stops the VM from the
//! host side), and `SIGKILL` after a grace period.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::file::{Copy, Plan};

/// Set in a copy's environment: `eremite run` then asks to be killed with
/// its parent, so a runner that dies leaves no VM behind.
pub(crate) const SUPERVISED_ENV: &str = "EREMITE_SUPERVISED";

/// How long stopped copies get to end before `SIGKILL`.
const GRACE: Duration = Duration::from_secs(3);
/// How often the runner looks at its copies.
const TICK: Duration = Duration::from_millis(20);

/// How one copy's run ended.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) name: String,
    /// Its exit code (`None`: it never started, or a signal ended it).
    pub(crate) exit: Option<i32>,
    pub(crate) wall: Duration,
    /// Each metric's last value in its output, in `[metric]` order.
    pub(crate) metrics: Vec<Option<f64>>,
    /// The host CPUs its vCPUs were pinned to.
    pub(crate) pin: Vec<usize>,
    /// The highest resident memory its VMM process reached (`ru_maxrss`).
    pub(crate) peak_bytes: u64,
    /// Why it failed; `None` when every check passed.
    pub(crate) failure: Option<String>,
}

/// What a copy's reader threads tell the runner.
enum Event {
    Ready(usize),
    Line(usize, Scan),
}

/// What a line showed.
enum Scan {
    Expected(usize),
    Metric(usize, f64),
}

/// A copy's progress.
enum State {
    Waiting,
    Running { child: Child, started: Instant },
    Done,
}

/// Why the runner stops the copies still running.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    Timeout,
    Interrupted,
}

/// Run every copy of `plan` to its end (or to the timeout, or until
/// `interrupted` is set), printing their output unless `is_quiet`.
pub(crate) fn run(
    plan: &Plan,
    switch: &str,
    is_quiet: bool,
    interrupted: &AtomicBool,
) -> Vec<Outcome> {
    let copies = &plan.copies;
    let (events, inbox) = mpsc::channel();
    let mut states: Vec<State> = copies.iter().map(|_| State::Waiting).collect();
    let mut outcomes: Vec<Outcome> = copies
        .iter()
        .map(|c| Outcome {
            name: c.name.clone(),
            exit: None,
            wall: Duration::ZERO,
            metrics: vec![None; plan.metrics.len()],
            pin: c.pin.clone(),
            peak_bytes: 0,
            failure: None,
        })
        .collect();
    let mut is_ready = vec![false; copies.len()];
    let mut seen: Vec<Vec<bool>> = copies
        .iter()
        .map(|c| vec![false; c.expect_output.len()])
        .collect();
    let started = Instant::now();
    let mut stop: Option<(Stop, Instant)> = None;
    loop {
        while let Ok(event) = inbox.try_recv() {
            match event {
                Event::Ready(i) => is_ready[i] = true,
                Event::Line(i, Scan::Expected(k)) => seen[i][k] = true,
                Event::Line(i, Scan::Metric(m, value)) => outcomes[i].metrics[m] = Some(value),
            }
        }
        if stop.is_none() {
            if interrupted.load(Ordering::Relaxed) {
                stop = Some((Stop::Interrupted, Instant::now()));
            } else if plan.timeout.is_some_and(|t| started.elapsed() > t) {
                stop = Some((Stop::Timeout, Instant::now()));
            }
            if stop.is_some() {
                signal_all(&states, rustix::process::Signal::TERM);
                std::thread::sleep(TICK);
                signal_all(&states, rustix::process::Signal::TERM);
            }
        } else if let Some((_, at)) = stop
            && at.elapsed() > GRACE
        {
            signal_all(&states, rustix::process::Signal::KILL);
        }
        // Start what may start; give up on what never can.
        for i in 0..copies.len() {
            if !matches!(states[i], State::Waiting) {
                continue;
            }
            let pending: Vec<usize> = copies[i]
                .after
                .iter()
                .filter_map(|name| copies.iter().position(|c| &c.name == name))
                .filter(|&j| !is_ready[j])
                .collect();
            let gone = pending.iter().find(|&&j| matches!(states[j], State::Done));
            if let Some(&j) = gone {
                outcomes[i].failure = Some(format!(
                    "never started: {} ended before it was ready",
                    copies[j].name
                ));
                states[i] = State::Done;
            } else if stop.is_some() {
                outcomes[i].failure = Some("never started: the run was stopped".into());
                states[i] = State::Done;
            } else if pending.is_empty() {
                match start(&copies[i], i, plan, switch, is_quiet, &events) {
                    Ok(child) => {
                        states[i] = State::Running {
                            child,
                            started: Instant::now(),
                        };
                    }
                    Err(e) => {
                        outcomes[i].failure = Some(format!("cannot start eremite: {e}"));
                        states[i] = State::Done;
                    }
                }
            }
        }
        // Watch what runs.
        for i in 0..copies.len() {
            let State::Running { child, started } = &mut states[i] else {
                continue;
            };
            match eremite_vmm::try_wait_with_usage(child) {
                Ok(None) => {}
                Ok(Some(ended)) => {
                    outcomes[i].exit = ended.status.code();
                    outcomes[i].peak_bytes = ended.peak_bytes;
                    outcomes[i].wall = started.elapsed();
                    states[i] = State::Done;
                }
                Err(e) => {
                    outcomes[i].failure = Some(format!("cannot wait for it: {e}"));
                    states[i] = State::Done;
                }
            }
        }
        if states.iter().all(|s| matches!(s, State::Done)) {
            break;
        }
        std::thread::sleep(TICK);
    }
    drop(events);
    // The reader threads end with their pipes; take their last words.
    for event in inbox.iter() {
        match event {
            Event::Ready(i) => is_ready[i] = true,
            Event::Line(i, Scan::Expected(k)) => seen[i][k] = true,
            Event::Line(i, Scan::Metric(m, value)) => outcomes[i].metrics[m] = Some(value),
        }
    }
    for (i, outcome) in outcomes.iter_mut().enumerate() {
        if outcome.failure.is_some() {
            continue;
        }
        let copy = &copies[i];
        // A copy stopped by the runner failed, unless it had ended as
        // expected by then.
        let is_stopped = outcome.exit.is_none_or(|code| code != copy.expect_exit);
        outcome.failure = match stop {
            Some((Stop::Timeout, _)) if is_stopped => Some(format!(
                "stopped: the run's timeout ({}s) passed",
                plan.timeout.unwrap_or_default().as_secs_f64()
            )),
            Some((Stop::Interrupted, _)) if is_stopped => Some("stopped: interrupted".into()),
            _ => None,
        };
        if outcome.failure.is_none() {
            outcome.failure = match outcome.exit {
                None => Some("ended by a signal".into()),
                Some(code) if code != copy.expect_exit => {
                    Some(format!("exit {code}, expected {}", copy.expect_exit))
                }
                Some(_) => copy
                    .expect_output
                    .iter()
                    .zip(&seen[i])
                    .find(|(_, seen)| !**seen)
                    .map(|(text, _)| format!("no line with {text:?} in its output")),
            };
        }
    }
    outcomes
}

/// Send `signal` to every copy that runs.
fn signal_all(states: &[State], signal: rustix::process::Signal) {
    for state in states {
        if let State::Running { child, .. } = state
            && let Some(pid) = i32::try_from(child.id())
                .ok()
                .and_then(rustix::process::Pid::from_raw)
        {
            // A copy that has just ended is no error.
            let _ = rustix::process::kill_process(pid, signal);
        }
    }
}

/// The `eremite run` command line for `copy`.
fn command(copy: &Copy, plan: &Plan, switch: &str) -> Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| "eremite".into());
    let mut command = Command::new(exe);
    command
        .current_dir(&plan.dir)
        .arg("run")
        .args(["--cpus", &copy.vcpus.to_string()])
        .args(["--memory", &format!("{}M", copy.memory_bytes >> 20)]);
    if !copy.pin.is_empty() {
        let list: Vec<String> = copy.pin.iter().map(usize::to_string).collect();
        command.args(["--pin-vcpus", &list.join(",")]);
    }
    for mount in &copy.mounts {
        command.args(["--mount", mount]);
    }
    if let Some(initrd) = &copy.initrd {
        command.arg("--initrd").arg(initrd);
    }
    if let Some(cmdline) = &copy.cmdline {
        command.args(["--cmdline", cmdline]);
    }
    command.args(&copy.net_flags);
    for (key, value) in &copy.env {
        command.args(["--env", &format!("{key}={value}")]);
    }
    if let Some((ip, prefix)) = copy.ip {
        command.args([
            "--net",
            &format!("switch:{switch}"),
            "--ip",
            &format!("{ip}/{prefix}"),
        ]);
        for other in &plan.copies {
            if let Some((address, _)) = other.ip.filter(|_| other.name != copy.name) {
                command.args(["--add-host", &format!("{}:{address}", other.name)]);
            }
        }
    }
    command.arg(&copy.image).args(&copy.args);
    command
}

/// Start copy `index`, with threads that read its output.
fn start(
    copy: &Copy,
    index: usize,
    plan: &Plan,
    switch: &str,
    is_quiet: bool,
    events: &mpsc::Sender<Event>,
) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let mut child = command(copy, plan, switch)
        .env(SUPERVISED_ENV, std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let watch = Watch {
        index,
        prefix: format!("[{}] ", copy.name),
        expected: copy.expect_output.clone(),
        ready_when: copy.ready_when.clone(),
        metrics: plan.metrics.iter().map(|(_, r)| r.clone()).collect(),
        is_quiet,
    };
    if let Some(out) = child.stdout.take() {
        let (watch, events) = (watch.clone(), events.clone());
        std::thread::spawn(move || watch.read(out, false, &events));
    }
    if let Some(err) = child.stderr.take() {
        let events = events.clone();
        std::thread::spawn(move || watch.read(err, true, &events));
    }
    Ok(child)
}

/// What a reader thread looks for in a copy's output.
#[derive(Clone)]
struct Watch {
    index: usize,
    prefix: String,
    expected: Vec<String>,
    ready_when: Option<String>,
    metrics: Vec<regex::Regex>,
    is_quiet: bool,
}

impl Watch {
    fn read(&self, from: impl std::io::Read, is_stderr: bool, events: &mpsc::Sender<Event>) {
        let mut reader = BufReader::new(from);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            if !self.is_quiet {
                let shown = format!("{}{text}\n", self.prefix);
                // A closed terminal is no reason to stop reading.
                let _ = if is_stderr {
                    std::io::stderr().lock().write_all(shown.as_bytes())
                } else {
                    std::io::stdout().lock().write_all(shown.as_bytes())
                };
            }
            let i = self.index;
            for (k, expected) in self.expected.iter().enumerate() {
                if text.contains(expected.as_str()) {
                    let _ = events.send(Event::Line(i, Scan::Expected(k)));
                }
            }
            if self.ready_when.as_deref().is_some_and(|r| text.contains(r)) {
                let _ = events.send(Event::Ready(i));
            }
            for (m, regex) in self.metrics.iter().enumerate() {
                let value = regex
                    .captures_iter(text)
                    .last()
                    .and_then(|c| c.get(1))
                    .and_then(|v| v.as_str().parse::<f64>().ok());
                if let Some(value) = value {
                    let _ = events.send(Event::Line(i, Scan::Metric(m, value)));
                }
            }
            line.clear();
        }
    }
}
