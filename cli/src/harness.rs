//! `cargo test` in VMs: when the image is a libtest harness, `eremite run`
//! runs each test in a VM of its own and reports as libtest does.
//!
//! Why: std for hermit cannot unwind (its `panic_unwind` aborts), so in
//! one VM the first failing test would end the run, with no summary and
//! its message lost in libtest's capture. Here one VM lists the tests
//! (`--list --format json`), then each runs alone (`NAME --exact
//! --nocapture`); a panic ends only its own VM, whose output is kept for
//! the failure report. A `#[should_panic]` test (found from the attribute
//! above the test's line in its source file, which libtest's listing
//! names) passes when its VM aborts with a panic whose message holds
//! `expected`. Tests run in parallel, one VM per host CPU (or
//! `--test-threads`).
//!
//! Anything this does not understand (`--list`, `--bench`, another
//! `--format`, an unknown flag) runs the harness in one VM as before.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, ExitCode, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Set in the environment of the `eremite run` processes this starts:
/// they run the harness as they are told.
const INNER_ENV: &str = "EREMITE_TEST_HARNESS_INNER";

/// Whether this `eremite run` should take over the harness.
pub(crate) fn applies(image: &Path) -> bool {
    std::env::var_os(INNER_ENV).is_none() && eremite_vmm::is_test_harness(image)
}

/// libtest's options as `cargo test -- ...` passes them.
#[derive(Default)]
struct Options {
    filters: Vec<String>,
    skip: Vec<String>,
    is_exact: bool,
    ignored_only: bool,
    include_ignored: bool,
    no_capture: bool,
    is_quiet: bool,
    threads: Option<usize>,
}

impl Options {
    /// `None` for what this does not handle (run as before).
    fn parse(args: &[String]) -> Option<Self> {
        let mut options = Self::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--exact" => options.is_exact = true,
                "--ignored" => options.ignored_only = true,
                "--include-ignored" => options.include_ignored = true,
                "--nocapture" | "--no-capture" | "--show-output" => options.no_capture = true,
                "-q" | "--quiet" => options.is_quiet = true,
                "--skip" => options.skip.push(args.next()?.clone()),
                "--test-threads" => options.threads = Some(args.next()?.parse().ok()?),
                "--color" => {
                    args.next()?;
                }
                "--format" => {
                    if !matches!(args.next()?.as_str(), "pretty" | "terse") {
                        return None;
                    }
                }
                flag if flag.starts_with("--test-threads=") => {
                    options.threads = Some(flag["--test-threads=".len()..].parse().ok()?);
                }
                flag if flag.starts_with("--color=") => {}
                flag if flag.starts_with('-') => return None,
                filter => options.filters.push(filter.to_owned()),
            }
        }
        Some(options)
    }

    /// The arguments that select the same tests in a listing.
    fn selection(&self) -> Vec<String> {
        let mut args = self.filters.clone();
        if self.is_exact {
            args.push("--exact".into());
        }
        for skip in &self.skip {
            args.extend(["--skip".into(), skip.clone()]);
        }
        args
    }
}

/// A test the harness listed.
struct Listed {
    name: String,
    is_ignored: bool,
    ignore_message: String,
    source_path: String,
    start_line: usize,
}

/// How a test ended.
enum Verdict {
    Passed,
    Failed(String),
    Ignored(String),
}

/// Runs `eremite run OPTIONS IMAGE ARGS` as this process was run.
struct Runner<'a> {
    exe: std::path::PathBuf,
    options: &'a [String],
    image: &'a Path,
}

impl Runner<'_> {
    fn run(&self, args: &[String]) -> std::io::Result<Output> {
        Command::new(&self.exe)
            .arg("run")
            .args(self.options)
            .arg(self.image)
            .arg("--")
            .args(args)
            .env(INNER_ENV, "1")
            .output()
    }

    /// The tests `selection` picks, in libtest's order.
    fn list(&self, selection: &[String]) -> Result<Vec<Listed>, String> {
        let mut args: Vec<String> = ["--list", "--format", "json", "-Zunstable-options"]
            .map(String::from)
            .to_vec();
        args.extend_from_slice(selection);
        let output = self
            .run(&args)
            .map_err(|e| format!("cannot run eremite: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "listing the tests failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let mut tests = Vec::new();
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if event["type"] != "test" || event["event"] != "discovered" {
                continue;
            }
            let text = |key: &str| event[key].as_str().unwrap_or_default().to_owned();
            tests.push(Listed {
                name: text("name"),
                is_ignored: event["ignore"].as_bool().unwrap_or(false),
                ignore_message: text("ignore_message"),
                source_path: text("source_path"),
                start_line: event["start_line"].as_u64().unwrap_or(0) as usize,
            });
        }
        Ok(tests)
    }

    /// Run one test in a VM of its own.
    fn verdict(&self, test: &Listed) -> (Verdict, Vec<u8>) {
        let mut args = vec![
            test.name.clone(),
            "--exact".into(),
            "--nocapture".into(),
            "--test-threads".into(),
            "1".into(),
        ];
        if test.is_ignored {
            args.push("--include-ignored".into());
        }
        let output = match self.run(&args) {
            Ok(output) => output,
            Err(e) => {
                return (
                    Verdict::Failed(format!("cannot run eremite: {e}")),
                    Vec::new(),
                );
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut shown = own_output(&stdout, &test.name).into_bytes();
        shown.extend_from_slice(&output.stderr);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let verdict = match output.status.code() {
            Some(0) if stdout.contains("test result: ok. 1 passed") => Verdict::Passed,
            Some(134) if stderr.contains("panicked at") => match should_panic(test) {
                Some(expected) if expected.as_deref().is_none_or(|e| stderr.contains(e)) => {
                    Verdict::Passed
                }
                Some(Some(expected)) => Verdict::Failed(format!(
                    "panic did not contain expected string\n      expected substring: {expected:?}"
                )),
                _ => Verdict::Failed(String::new()),
            },
            Some(code) => Verdict::Failed(format!("the VM ended with exit code {code}")),
            None => Verdict::Failed("the VM was killed by a signal".into()),
        };
        (verdict, shown)
    }
}

/// What the test itself printed: the VM's stdout without libtest's own
/// words about the one test it ran (`running 1 test`, `test NAME ... `,
/// its `ok` and the summary).
fn own_output(stdout: &str, name: &str) -> String {
    let mut text = stdout;
    if let Some(at) = text.find(&format!("test {name} ")) {
        let rest = &text[at..];
        text = rest.find("... ").map_or(rest, |i| &rest[i + 4..]);
    }
    if let Some(end) = text.find("\ntest result: ") {
        text = &text[..end];
    }
    let text = text.trim_start_matches('\n').trim_end();
    let text = text.strip_suffix("ok").unwrap_or(text).trim_end();
    if text.is_empty() {
        String::new()
    } else {
        format!("{text}\n")
    }
}

/// Whether the test at `test`'s place in its source is `#[should_panic]`,
/// and its `expected` text: read from the attributes above the line
/// libtest's listing names (`None`: not a should-panic test, or its
/// source cannot be read).
fn should_panic(test: &Listed) -> Option<Option<String>> {
    let source = std::fs::read_to_string(&test.source_path).ok()?;
    let lines: Vec<&str> = source.lines().collect();
    // `start_line` is the test function's name: its attributes are the
    // lines above, back to the end of the item before (at most 20).
    let end = test.start_line.checked_sub(1)?;
    let begin = (0..end)
        .rev()
        .take(20)
        .find(|&at| {
            let line = lines.get(at).map_or("", |l| l.trim_end());
            line.ends_with('}') || line.ends_with(';') || line.ends_with('{')
        })
        .map_or(end.saturating_sub(20), |at| at + 1);
    // The name's own line too: `#[test] #[should_panic] fn f() {`.
    let attributes = lines.get(begin..=end)?.join("\n");
    let start = attributes.find("#[should_panic")?;
    let attribute = &attributes[start..];
    let expected = attribute
        .find("expected")
        .and_then(|e| attribute[e..].find('"').map(|q| e + q + 1))
        .and_then(|open| {
            attribute[open..]
                .find('"')
                .map(|close| attribute[open..open + close].to_owned())
        });
    Some(expected)
}

/// Run the harness `image` as `cargo test` expects: `options` are
/// eremite's own, `args` the harness's.
pub(crate) fn run(image: &Path, options: &[String], args: &[String]) -> Option<ExitCode> {
    let parsed = Options::parse(args)?;
    let runner = Runner {
        exe: std::env::current_exe().ok()?,
        options,
        image,
    };
    let started = Instant::now();
    let listed = match runner.list(&parsed.selection()) {
        Ok(listed) => listed,
        Err(message) => {
            eprintln!("eremite: {message}");
            return Some(ExitCode::from(101));
        }
    };
    let total = if parsed.selection().is_empty() {
        listed.len()
    } else {
        runner.list(&[]).map_or(listed.len(), |all| all.len())
    };
    let chosen: Vec<&Listed> = listed
        .iter()
        .filter(|t| !parsed.ignored_only || t.is_ignored)
        .collect();
    let filtered_out = total - chosen.len();
    println!(
        "\nrunning {} test{}",
        chosen.len(),
        if chosen.len() == 1 { "" } else { "s" }
    );
    let threads = parsed
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Verdict, Vec<u8>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.min(chosen.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(test) = chosen.get(i) else { break };
                    let (verdict, output) =
                        if test.is_ignored && !parsed.ignored_only && !parsed.include_ignored {
                            (Verdict::Ignored(test.ignore_message.clone()), Vec::new())
                        } else {
                            runner.verdict(test)
                        };
                    report_line(&test.name, &verdict, &output, &parsed);
                    results
                        .lock()
                        .expect("no thread panics holding it")
                        .push((i, verdict, output));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("no thread panicked");
    results.sort_by_key(|(i, _, _)| *i);
    let failed: Vec<(&str, &str, &[u8])> = results
        .iter()
        .filter_map(|(i, verdict, output)| match verdict {
            Verdict::Failed(why) => {
                Some((chosen[*i].name.as_str(), why.as_str(), output.as_slice()))
            }
            _ => None,
        })
        .collect();
    let passed = results
        .iter()
        .filter(|(_, v, _)| matches!(v, Verdict::Passed))
        .count();
    let ignored = results
        .iter()
        .filter(|(_, v, _)| matches!(v, Verdict::Ignored(_)))
        .count();
    if !failed.is_empty() {
        println!("\nfailures:\n");
        for (name, why, output) in &failed {
            println!("---- {name} stdout ----");
            print!("{}", String::from_utf8_lossy(output));
            if !why.is_empty() {
                println!("{why}");
            }
            println!();
        }
        println!("\nfailures:");
        for (name, _, _) in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; {ignored} ignored; 0 measured; {filtered_out} filtered out; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    let _ = std::io::stdout().flush();
    Some(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(101)
    })
}

/// `test NAME ... ok` as the test ends (with its output under
/// `--nocapture`).
fn report_line(name: &str, verdict: &Verdict, output: &[u8], options: &Options) {
    let mut out = std::io::stdout().lock();
    if options.no_capture && !output.is_empty() {
        let _ = out.write_all(output);
    }
    let result = match verdict {
        Verdict::Passed => "ok".to_owned(),
        Verdict::Failed(_) => "FAILED".to_owned(),
        Verdict::Ignored(message) if message.is_empty() => "ignored".to_owned(),
        Verdict::Ignored(message) => format!("ignored, {message}"),
    };
    if options.is_quiet {
        let mark = match verdict {
            Verdict::Passed => ".",
            Verdict::Failed(_) => "F",
            Verdict::Ignored(_) => "i",
        };
        let _ = write!(out, "{mark}");
    } else {
        let _ = writeln!(out, "test {name} ... {result}");
    }
}
